#include "src/lab/dendrogram.h"

#include <fmt/format.h>

#include <cmath>
#include <functional>
#include <limits>
#include <map>

#include "util/error.h"

namespace tunekit::lab {

namespace {
// The parameter discrepancy of the authors' code between two atoms held with σ² in place of σ:
// ‖c_i − c_j‖² + sqrt(‖a_i − a_j‖² + (σ²_i − σ²_j)²), the gate slopes left out.
double authors_discrepancy(const torch::Tensor& ti, const torch::Tensor& tj, const std::vector<int64_t>& blocks) {
  auto diff = ti - tj;
  const int64_t b = blocks[0], a = blocks[1], c = blocks[2];
  double inner = diff.slice(0, b, b + a).pow(2).sum().item<double>();
  if (blocks.size() > 3) inner += diff.slice(0, b + a + c).pow(2).sum().item<double>();
  return diff.slice(0, b + a, b + a + c).pow(2).sum().item<double>() + std::sqrt(inner);
}
}  // namespace

Dendrogram build_dendrogram(const torch::Tensor& weight_in, const torch::Tensor& theta_in,
                            const DendrogramOptions& options) {
  const bool authors = options.rule == DendrogramRule::Authors;
  const auto& blocks = options.blocks;
  int64_t width = 0;
  for (auto b : blocks) width += b;
  if (authors && (blocks.size() < 3 || blocks.size() > 4 || width != theta_in.size(1) || (blocks.size() == 4 && blocks[3] != 1)))
    throw Error(fmt::format("dendrogram: the authors' rule needs θ's parts (β, a, c[, σ]) summing to its width {}",
                            theta_in.size(1)));
  // With the authors' rule the σ column is carried as σ² (merges average σ²) and given back as σ.
  const bool squared = authors && blocks.size() == 4;
  auto shown = [&](torch::Tensor t) {
    if (squared) t.select(-1, t.size(-1) - 1).sqrt_();
    return t;
  };
  Dendrogram d;
  d.leaves = weight_in.size(0);
  auto w = weight_in.to(torch::kDouble);
  w = w / w.sum();
  std::vector<double> pi(w.data_ptr<double>(), w.data_ptr<double>() + w.numel());
  std::vector<torch::Tensor> theta;
  std::vector<int64_t> node;
  for (int64_t i = 0; i < d.leaves; ++i) {
    auto ti = theta_in[i].to(torch::kDouble).clone();
    if (squared) ti[width - 1] = ti[width - 1] * ti[width - 1];
    theta.push_back(ti);
    node.push_back(i);
  }
  int64_t next = d.leaves;
  d.levels.resize(d.leaves);
  auto record = [&] {
    d.levels[pi.size() - 1] = {torch::tensor(pi, torch::kDouble), shown(torch::stack(theta))};
  };
  record();
  while (pi.size() > 1) {
    double best = std::numeric_limits<double>::infinity();
    size_t bi = 0, bj = 1;
    for (size_t i = 0; i < pi.size(); ++i)
      for (size_t j = i + 1; j < pi.size(); ++j) {
        const double gap = authors ? authors_discrepancy(theta[i], theta[j], blocks)
                                   : (theta[i] - theta[j]).pow(2).sum().item<double>();
        double h = pi[i] * pi[j] / (pi[i] + pi[j]) * gap;
        if (h < best) best = h, bi = i, bj = j;
      }
    d.merges.push_back({node[bi], node[bj], best});
    double p = pi[bi] + pi[bj];
    theta[bi] = (pi[bi] * theta[bi] + pi[bj] * theta[bj]) / p;
    pi[bi] = p;
    node[bi] = next++;
    pi.erase(pi.begin() + bj);
    theta.erase(theta.begin() + bj);
    node.erase(node.begin() + bj);
    record();
  }
  return d;
}

int64_t Dendrogram::selected() const {
  // The largest jump between consecutive merge heights on a log scale: merging within a true
  // atom's cluster costs orders of magnitude less than merging two true atoms. (On a linear scale
  // the last merges, between heavy well-separated atoms, always jump most; measured in the README.)
  if (merges.size() < 2) return leaves;
  double best = -std::numeric_limits<double>::infinity();
  int64_t k = leaves;
  for (size_t t = 1; t < merges.size(); ++t) {
    double gap = std::log(std::max(merges[t].height, 1e-300)) - std::log(std::max(merges[t - 1].height, 1e-300));
    if (gap > best) best = gap, k = leaves - static_cast<int64_t>(t);  // atoms before merge t
  }
  return k;
}

int64_t Dendrogram::selected_linear_gap() const {
  if (merges.empty()) return leaves;
  double prev = 0, best = -std::numeric_limits<double>::infinity();
  int64_t k = leaves;
  for (size_t t = 0; t < merges.size(); ++t) {
    double gap = merges[t].height - prev;
    if (gap > best) best = gap, k = leaves - static_cast<int64_t>(t);
    prev = merges[t].height;
  }
  return k;
}

std::string dendrogram_segments(const Dendrogram& d) {
  // Leaf order: depth-first from the root so no branches cross; internal x = mean of children.
  std::map<int64_t, std::pair<int64_t, int64_t>> children;
  std::map<int64_t, double> height;
  for (size_t t = 0; t < d.merges.size(); ++t) {
    children[d.leaves + t] = {d.merges[t].left, d.merges[t].right};
    height[d.leaves + t] = d.merges[t].height;
  }
  // Heights drawn as the running maximum so every parent sits above its children.
  double run = 0;
  for (size_t t = 0; t < d.merges.size(); ++t) run = std::max(run, d.merges[t].height), height[d.leaves + t] = run;
  std::map<int64_t, double> x;
  double slot = 0;
  std::function<void(int64_t)> place = [&](int64_t id) {
    auto it = children.find(id);
    if (it == children.end()) {
      x[id] = slot++;
      return;
    }
    place(it->second.first);
    place(it->second.second);
    x[id] = 0.5 * (x[it->second.first] + x[it->second.second]);
  };
  const int64_t root = d.leaves + static_cast<int64_t>(d.merges.size()) - 1;
  place(d.merges.empty() ? 0 : root);
  std::string out = "# x0 y0 dx dy (one segment per line)\n";
  for (const auto& [id, kids] : children) {
    double h = height[id];
    for (int64_t c : {kids.first, kids.second}) {
      double hc = children.count(c) ? height[c] : 0.0;
      out += fmt::format("{} {} 0 {}\n", x[c], hc, h - hc);
    }
    out += fmt::format("{} {} {} 0\n", x[kids.first], h, x[kids.second] - x[kids.first]);
  }
  return out;
}

}  // namespace tunekit::lab
