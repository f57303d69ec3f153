#include "src/lab/lab_recipe.h"

#include <fmt/format.h>

#include <cmath>
#include <string>
#include <utility>

#include "src/recipe/yaml_reader.h"

namespace tunekit::lab {
namespace {

using yaml::Section;

constexpr int64_t kMaxLabExperts = 64;        // truth, fit and select's max_experts
constexpr int64_t kMaxSamples = 100000000;    // lab.n
// The truth's matrices must have the shapes experts, dim and classes give them.
void check_truth_shapes(Section& t, const LabConfig& c) {
  const auto& q = c.truth;
  const bool multi = c.family == Family::Multinomial, gaussian = c.family == Family::Gaussian;
  const int64_t k = q.experts, d = q.dim, C = multi ? c.classes : 1;
  auto need = [&](const char* key, const std::vector<double>& v, int64_t size, const std::string& shape) {
    if (static_cast<int64_t>(v.size()) != size) t.fail(key, fmt::format("needs {} numbers ({}), got {}", size, shape, v.size()));
  };
  need("beta", q.beta, k * d, fmt::format("experts {} x dim {}", k, d));
  need("bias", q.bias, k, "one per expert");
  need("a", q.a, k * C * d, multi ? fmt::format("experts x classes x dim = {} x {} x {}", k, C, d)
                                  : fmt::format("experts {} x dim {}", k, d));
  need("c", q.c, k * C, multi ? "experts x classes" : "one per expert");
  if (!multi) need("sigma", q.sigma, gaussian ? k : 1, gaussian ? "one per expert" : "one");
  for (double v : q.sigma)
    if (!(v > 0)) t.fail("sigma", "must be positive");
  if (c.family == Family::Contaminated) need("frozen_a", q.frozen_a, d, fmt::format("dim {}", d));
  if (c.family == Family::Contaminated && !(q.frozen_sigma > 0)) t.fail("frozen_sigma", "must be positive");
}

// lab.truth: the ground-truth mixture.
void parse_truth(Section& l, LabConfig& c, bool present) {
  Section t = l.section("truth");
  auto& q = c.truth;
  t.read("experts", q.experts);
  t.read("dim", q.dim);
  for (auto [key, v] : {std::pair<const char*, std::vector<double>*>{"beta", &q.beta}, {"bias", &q.bias}, {"a", &q.a},
                        {"c", &q.c}, {"sigma", &q.sigma}, {"frozen_a", &q.frozen_a}})
    t.read(key, *v);
  t.read("frozen_c", q.frozen_c);
  t.read("frozen_sigma", q.frozen_sigma);
  q.frozen_density = t.choice("frozen_density", q.frozen_density);
  t.read("approach", q.approach);
  t.read("approach_n0", q.approach_n0);
  const bool cont = c.family == Family::Contaminated;
  if (cont) q.experts = 1;
  t.check_range("experts", q.experts, 1, kMaxLabExperts);
  t.check_range("dim", q.dim, 1, 4096);
  if (c.family == Family::Multinomial && c.classes < 2) l.fail("classes", "multinomial needs at least 2 classes");
  if (present) check_truth_shapes(t, c);
  for (const char* key : {"frozen_a", "frozen_c", "frozen_sigma", "frozen_density", "approach", "approach_n0"})
    if (t.has(key) && !cont) t.fail(key, "only applies to family contaminated");
  if (q.approach < 0) t.fail("approach", "must be >= 0 (0 = a fixed, distinguishable prompt)");
  if (!(q.approach_n0 > 0)) t.fail("approach_n0", "must be positive");
  t.finish();
}

// lab.fit: how the model is fitted.
void parse_fit(Section& l, LabConfig& c) {
  Section f = l.section("fit");
  auto& q = c.fit;
  f.read("experts", q.experts);
  q.method = f.choice("method", q.method);
  f.read("restarts", q.restarts);
  f.read("iterations", q.iterations);
  f.read("tolerance", q.tolerance);
  f.read("bound", q.bound);
  if (q.bound < 0) f.fail("bound", fmt::format("must be >= 0 (0 = unbounded), got {}", q.bound));
  f.check_real("tolerance", q.tolerance, 0, false, HUGE_VAL, false);
  if (c.family == Family::Contaminated) q.experts = 1;
  f.check_range("experts", q.experts, 1, kMaxLabExperts);
  f.check_range("restarts", q.restarts, 1, 10000);
  f.check_range("iterations", q.iterations, 1, 10000000);
  if (q.method == FitMethod::EM && c.expert != ExpertFn::Linear)
    f.fail("method", fmt::format("em needs linear experts (lab.expert is {}); use gradient", to_string(c.expert)));
  if (q.method == FitMethod::EM && c.family != Family::Gaussian && c.family != Family::Contaminated)
    f.fail("method", fmt::format("em applies to family gaussian or contaminated (family is {})", to_string(c.family)));
  f.finish();
}

// Checks across lab's keys once truth and fit are read.
void check_lab(Section& l, const LabConfig& c) {
  if (c.fit.bound > 0)
    for (const auto* v : {&c.truth.beta, &c.truth.bias, &c.truth.a, &c.truth.c})
      for (double x : *v)
        if (std::abs(x) >= c.fit.bound)
          l.section("fit").fail("bound", fmt::format("{} would exclude the truth (it has a parameter {})", c.fit.bound, x));
  if (c.n.empty()) l.fail("n", "needs at least one sample size");
  for (auto v : c.n) {
    if (v < 10) l.fail("n", fmt::format("sample size {} is too small", v));
    if (v > kMaxSamples) l.fail("n", fmt::format("sample size {} is above tunekit's cap of {}", v, kMaxSamples));
  }
  l.check_range("replications", c.replications, 1, 100000);
  if (c.experiment == Experiment::Select && c.max_experts < 2) l.fail("max_experts", "must be at least 2");
  l.check_range("max_experts", c.max_experts, 1, kMaxLabExperts);
  if (c.experiment == Experiment::Select && c.family == Family::Contaminated)
    l.fail("experiment", "select does not apply to contaminated");
  if (c.constant_weight && c.family != Family::Contaminated)
    l.fail("constant_weight", "applies to family contaminated (a prompt mixed with the frozen expert at a constant weight)");
  if (c.constant_weight)
    for (double b : c.truth.beta)
      if (b != 0)
        l.section("truth").fail("beta", fmt::format("must be zeros with lab.constant_weight (the weight σ(b) does not "
                                                    "depend on x), got {}", b));
}

}  // namespace

LabConfig parse_lab(Section l, bool present) {
  LabConfig c;
  c.present = present;
  c.experiment = l.choice("experiment", c.experiment);
  c.family = l.choice("family", c.family);
  c.gate = l.choice("gate", c.gate);
  c.expert = l.choice("expert", c.expert);
  if (c.expert != ExpertFn::Linear && c.family == Family::Multinomial)
    l.fail("expert", "network experts apply to family gaussian, regression or contaminated");
  l.read("classes", c.classes);
  l.check_range("classes", c.classes, 0, 1000, " (0 = not multinomial)");
  l.read("n", c.n);
  l.read("replications", c.replications);
  l.read("theory_slope", c.theory_slope);
  l.read("max_experts", c.max_experts);
  l.read("constant_weight", c.constant_weight);
  c.dendrogram = l.choice("dendrogram", c.dendrogram);
  if (l.has("dendrogram") && c.experiment != Experiment::Select)
    l.fail("dendrogram", "only applies to experiment select");
  parse_truth(l, c, present);
  parse_fit(l, c);
  check_lab(l, c);
  l.finish();
  return c;
}

}  // namespace tunekit::lab
