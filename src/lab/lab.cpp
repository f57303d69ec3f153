#include "src/lab/lab.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <limits>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "src/io/checkpoint.h"
#include "src/lab/dendrogram.h"
#include "src/sweep/stats.h"
#include "util/error.h"
#include "util/file.h"
#include "util/stats.h"
#include "util/threads.h"

namespace fs = std::filesystem;

namespace tunekit::lab {
namespace {

torch::Tensor vec(const std::vector<double>& v, std::vector<int64_t> shape) {
  return torch::tensor(v, torch::kDouble).reshape(shape);
}


bool have_gnuplot() { return std::system("command -v gnuplot > /dev/null 2>&1") == 0; }

std::vector<std::string> gnuplot(const std::string& dir, const std::string& stem, const std::string& body) {
  std::vector<std::string> out;
  if (!have_gnuplot()) {
    std::fprintf(stderr, "plots skipped: gnuplot not found (apt-get install gnuplot-nox)\n");
    return out;
  }
  for (const char* ext : {"png", "svg"}) {
    std::string path = fmt::format("{}/{}.{}", dir, stem, ext);
    std::string script = fmt::format("set terminal {}\nset output '{}'\n{}",
                                     std::string(ext) == "png" ? "pngcairo noenhanced size 900,600"
                                                               : "svg noenhanced size 900,600",
                                     path, body);
    std::string sp = fmt::format("{}/{}_{}.gp", dir, stem, ext);
    std::ofstream(sp) << script;
    if (std::system(fmt::format("gnuplot '{}' 2>&1", sp).c_str()) == 0 && fs::exists(path)) out.push_back(path);
  }
  return out;
}

int64_t seed_of(uint64_t base, size_t n_index, int64_t rep) {
  return static_cast<int64_t>(base * 1000003ULL + n_index * 1009ULL + static_cast<uint64_t>(rep));
}

FitOptions fit_options(const LabFitConfig& c, int64_t experts) {
  FitOptions o;
  o.experts = experts;
  o.method = c.method;
  o.restarts = c.restarts;
  o.iterations = c.iterations;
  o.tolerance = c.tolerance;
  o.bound = c.bound;
  return o;
}

}  // namespace

std::pair<double, double> loglog_slope(const std::vector<double>& x, const std::vector<double>& y) {
  std::vector<double> lx, ly;
  for (size_t i = 0; i < x.size(); ++i)
    if (x[i] > 0 && y[i] > 0) lx.push_back(std::log(x[i])), ly.push_back(std::log(y[i]));
  const double mx = mean(lx), my = mean(ly);
  double sxx = 0, sxy = 0;
  for (size_t i = 0; i < lx.size(); ++i) sxx += (lx[i] - mx) * (lx[i] - mx), sxy += (lx[i] - mx) * (ly[i] - my);
  if (lx.size() < 3 || sxx == 0) return {std::nan(""), std::nan("")};
  const double b = sxy / sxx, a = my - b * mx;
  double rss = 0;
  for (size_t i = 0; i < lx.size(); ++i) rss += std::pow(ly[i] - a - b * lx[i], 2);
  return {b, std::sqrt(rss / (lx.size() - 2) / sxx)};
}

MoE truth_model(const LabConfig& c, int64_t n) {
  const auto& t = c.truth;
  MoE m;
  m.family = c.family;
  m.gate = c.gate;
  m.expert = c.expert;
  m.classes = c.classes;
  m.constant_weight = c.constant_weight;
  const int64_t k = t.experts, d = t.dim;
  m.beta = vec(t.beta, {k, d});
  m.bias = vec(t.bias, {k});
  if (m.family == Family::Multinomial) {
    m.a = vec(t.a, {k, c.classes, d});
    m.c = vec(t.c, {k, c.classes});
    m.log_sigma = torch::zeros({1}, torch::kDouble);
  } else {
    m.a = vec(t.a, {k, d});
    m.c = vec(t.c, {k});
    m.log_sigma = torch::log(vec(t.sigma, {static_cast<int64_t>(t.sigma.size())}));
  }
  if (m.family == Family::Contaminated) {
    m.a0 = vec(t.frozen_a, {d});
    m.c0 = torch::tensor(t.frozen_c, torch::kDouble);
    m.sigma0 = torch::tensor(t.frozen_sigma, torch::kDouble);
    m.frozen_density = t.frozen_density;
    if (t.approach > 0) {  // the prompt (a, c, σ) moves towards the frozen expert as n grows
      double s = std::pow(double(n) / t.approach_n0, -t.approach);
      m.a = m.a0.unsqueeze(0) + (m.a - m.a0.unsqueeze(0)) * s;
      m.c = m.c0 + (m.c - m.c0) * s;
      m.log_sigma = torch::log(m.sigma0 + (torch::exp(m.log_sigma) - m.sigma0) * s);
    }
  }
  return m;
}

namespace {

// What both experiments share: the lab section, the base seed, the progress lines and the clock.
struct LabContext {
  const LabConfig& c;
  uint64_t base;
  bool quiet;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();

  double elapsed() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }
  void say(const std::string& s) const {
    if (!quiet) std::fprintf(stderr, "%s\n", s.c_str());
  }
};

// The rate experiment's results, by n.
struct RateStats {
  std::vector<double> xs, ys;
  std::map<int64_t, std::vector<double>> by_n, gap_by_n;
};

// One replication of the rate experiment: sample, fit, Voronoi loss; returns its results.csv row.
std::string rate_replication(const LabContext& ctx, const MoE& truth, int64_t n, size_t ni, int64_t rep,
                             RateStats& stats) {
  const LabConfig& c = ctx.c;
  auto ts = ctx.elapsed();
  const int64_t seed = seed_of(ctx.base, ni, rep);
  Sample s = sample(truth, n, static_cast<uint64_t>(seed));
  FitResult f = fit(truth, s.x, s.y, fit_options(c.fit, c.fit.experts), static_cast<uint64_t>(seed));
  double loss = voronoi_loss(f.model, truth);
  double nll_truth;
  {
    torch::NoGradGuard g;
    nll_truth = -log_likelihood(truth, s.x, s.y).mean().item<double>();
  }
  Atoms fa = atoms(f.model);
  std::vector<std::string> ws, th;
  for (int64_t i = 0; i < fa.weight.size(0); ++i) {
    ws.push_back(fmt::format("{:.4g}", fa.weight[i].item<double>()));
    std::vector<std::string> row;
    for (int64_t j = 0; j < fa.theta.size(1); ++j) row.push_back(fmt::format("{:.4g}", fa.theta[i][j].item<double>()));
    th.push_back(fmt::format("({})", fmt::join(row, " ")));
  }
  std::string line = fmt::format("{},{},{},{:.8g},{:.8g},{:.8g},{},{:.2f},{},{}\n", n, rep, seed, loss, f.nll, nll_truth,
                                 f.restart, ctx.elapsed() - ts, fmt::join(ws, ";"), fmt::join(th, ";"));
  stats.xs.push_back(double(n));
  stats.ys.push_back(loss);
  stats.by_n[n].push_back(loss);
  stats.gap_by_n[n].push_back(nll_truth - f.nll);
  ctx.say(fmt::format("  n={:<7} rep {:<3} loss {:.5f}  nll fit {:.5f} (truth {:.5f})  [{:.0f}s]", n, rep, loss, f.nll,
                      nll_truth, ctx.elapsed()));
  return line;
}

// Rate: the Voronoi loss against n, its table, rate.dat and the log-log plot. Returns results.csv.
std::string rate_experiment(const LabContext& ctx, LabRunResult& res) {
  const LabConfig& c = ctx.c;
  std::string csv = "n,replication,seed,voronoi_loss,nll_fit,nll_truth,winning_restart,seconds,fitted_weights,fitted_atoms\n";
  RateStats stats;
  for (size_t ni = 0; ni < c.n.size(); ++ni) {
    const int64_t n = c.n[ni];
    MoE truth = truth_model(c, n);
    for (int64_t rep = 0; rep < c.replications; ++rep) csv += rate_replication(ctx, truth, n, ni, rep, stats);
  }
  auto [slope, se] = loglog_slope(stats.xs, stats.ys);
  std::string table = "| n | Voronoi loss (mean ± sd) | median | NLL(truth) − NLL(fit) |\n|---|---|---|---|\n";
  std::string dat;
  for (const auto& [n, v] : stats.by_n) {
    std::vector<double> sorted = v;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted.size() % 2 ? sorted[sorted.size() / 2]
                                            : 0.5 * (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]);
    table += fmt::format("| {} | {:.5f} ± {:.5f} | {:.5f} | {:.2e} |\n", n, mean(v), stddev(v), median,
                         mean(stats.gap_by_n[n]));
    dat += fmt::format("{} {} {}\n", n, mean(v), stddev(v));
  }
  table += fmt::format("\nfitted slope of log(loss) on log(n): {:.3f} ± {:.3f} (standard error, {} fits); theory: {:.3f}\n",
                       slope, se, stats.xs.size(), c.theory_slope);
  res.table = table;
  res.slope = slope;
  res.slope_se = se;
  std::ofstream(res.dir + "/rate.dat") << dat;
  const double n0 = double(c.n.front()), y0 = mean(stats.by_n[c.n.front()]);
  res.plots = gnuplot(res.dir, "rate",
                      fmt::format("set title '{} ({} gate, {} experts): Voronoi loss vs n'\nset logscale xy\nset xlabel 'n'\n"
                                  "set ylabel 'Voronoi loss'\nset grid\nset key bottom left\n"
                                  "plot '{}/rate.dat' using 1:2:3 with yerrorlines title 'mean ± sd over {} fits', "
                                  "{} * (x / {})**({}) dt 2 title 'theory slope {:.2f}'{}\n",
                                  to_string(c.family), to_string(c.gate), to_string(c.expert), res.dir, c.replications, y0, n0, c.theory_slope, c.theory_slope,
                                  std::isfinite(slope)  // one n gives no slope
                                      ? fmt::format(", {} * (x / {})**({}) dt 3 title 'fitted slope {:.2f}'", y0, n0, slope, slope)
                                      : std::string()));
  return csv;
}

// DSC (2510.12744's code): score each level κ ≥ 2 of the dendrogram by its next merge height
// plus log(n) times the merged model's mean log-likelihood; the best-scoring κ.
int64_t dsc_select(const Dendrogram& dg, const Sample& s, int64_t n, int64_t K, int64_t dim) {
  int64_t k_dsc = -1;
  double best = std::numeric_limits<double>::infinity();
  torch::NoGradGuard ng;
  for (int64_t kk = 2; kk <= K; ++kk) {
    const auto& [w, th] = dg.levels[kk - 1];
    double ll = log_likelihood(gaussian_from_atoms(w, th, dim), s.x, s.y).mean().item<double>();
    double next = kk > 1 ? dg.merges[K - kk].height : 0.0;  // the merge kk -> kk-1
    double score = -(next + std::log(double(n)) * ll);
    if (score < best) best = score, k_dsc = kk;
  }
  return k_dsc;
}

// One replication of the select experiment: the numbers of experts each criterion picks.
struct Selection {
  Dendrogram dg;
  int64_t k_dg = 0, k_lin = 0, k_dsc = -1, k_aic = 0, k_bic = 0;
};

Selection select_replication(const LabContext& ctx, const MoE& truth, const Sample& s, int64_t n, int64_t seed,
                             bool dsc) {
  const LabConfig& c = ctx.c;
  const int64_t K = c.max_experts;
  std::vector<double> aic, bic;
  Selection sel;
  for (int64_t k = 1; k <= K; ++k) {
    FitResult f = fit(truth, s.x, s.y, fit_options(c.fit, k), static_cast<uint64_t>(seed));
    const double p = double(f.model.num_parameters()), total = f.nll * n;
    aic.push_back(2 * p + 2 * total);
    bic.push_back(p * std::log(double(n)) + 2 * total);
    if (k == K) {
      Atoms a = atoms(f.model);
      sel.dg = build_dendrogram(a.weight, a.theta, DendrogramOptions{c.dendrogram, a.blocks});
      if (dsc) sel.k_dsc = dsc_select(sel.dg, s, n, K, c.truth.dim);
    }
  }
  sel.k_dg = sel.dg.selected();
  sel.k_aic = std::min_element(aic.begin(), aic.end()) - aic.begin() + 1;
  sel.k_bic = std::min_element(bic.begin(), bic.end()) - bic.begin() + 1;
  sel.k_lin = sel.dg.selected_linear_gap();
  return sel;
}

// Select: how often the dendrogram, DSC, AIC and BIC find the true number of experts, and the
// dendrogram plot of the largest n's first replication. Returns results.csv.
std::string select_experiment(const LabContext& ctx, LabRunResult& res) {
  const LabConfig& c = ctx.c;
  std::string csv = "n,replication,seed,k_dendrogram,k_dendrogram_linear_gap,k_dsc,k_aic,k_bic,merge_heights\n";
  // DSC only where merged atoms form a model.
  const bool dsc = c.family == Family::Gaussian && c.gate == GateFn::Softmax;
  const int64_t K = c.max_experts, kstar = c.truth.experts;
  std::map<int64_t, std::array<int, 5>> hits;
  Dendrogram shown;
  for (size_t ni = 0; ni < c.n.size(); ++ni) {
    const int64_t n = c.n[ni];
    MoE truth = truth_model(c, n);
    for (int64_t rep = 0; rep < c.replications; ++rep) {
      const int64_t seed = seed_of(ctx.base, ni, rep);
      Sample s = sample(truth, n, static_cast<uint64_t>(seed));
      Selection sel = select_replication(ctx, truth, s, n, seed, dsc);
      std::vector<std::string> hs;
      for (const auto& m : sel.dg.merges) hs.push_back(fmt::format("{:.4g}", m.height));
      csv += fmt::format("{},{},{},{},{},{},{},{},{}\n", n, rep, seed, sel.k_dg, sel.k_lin, sel.k_dsc, sel.k_aic, sel.k_bic,
                         fmt::join(hs, ";"));
      auto& h = hits[n];
      h[0] += sel.k_dg == kstar;
      h[1] += sel.k_dsc == kstar;
      h[2] += sel.k_aic == kstar;
      h[3] += sel.k_bic == kstar;
      h[4] += sel.k_lin == kstar;
      if (ni + 1 == c.n.size() && rep == 0) shown = sel.dg;
      ctx.say(fmt::format("  n={:<7} rep {:<3} k: dendrogram {}  DSC {}  AIC {}  BIC {}  (truth {})  [{:.0f}s]", n, rep,
                          sel.k_dg, dsc ? std::to_string(sel.k_dsc) : "-", sel.k_aic, sel.k_bic, kstar, ctx.elapsed()));
    }
  }
  std::string table = fmt::format(
      "| n | dendrogram, log-height gap: picks k*={} | dendrogram, linear gap | dendrogram DSC | AIC | BIC |\n"
      "|---|---|---|---|---|---|\n", kstar);
  for (const auto& [n, h] : hits)
    table += fmt::format("| {} | {}/{} | {}/{} | {} | {}/{} | {}/{} |\n", n, h[0], c.replications, h[4], c.replications,
                         dsc ? fmt::format("{}/{}", h[1], c.replications) : std::string("-"), h[2], c.replications, h[3],
                         c.replications);
  res.table = table + fmt::format(
                          "\n(over-specified fit: {} experts; dendrogram dissimilarity: {}; DSC over the levels with >= 2 "
                          "atoms; AIC/BIC over separate fits with 1..{} experts)\n",
                          K, c.dendrogram == DendrogramRule::Authors ? "the authors' (2510.12744)" : "finite mixture (2403.01684)",
                          K);
  std::ofstream(res.dir + "/dendrogram.dat") << dendrogram_segments(shown);
  res.plots = gnuplot(res.dir, "dendrogram",
                      fmt::format("set title 'dendrogram of the {}-expert fit (n = {}, replication 0)'\n"
                                  "set xlabel 'atoms'\nset ylabel 'merge height'\nunset key\nset grid y\n"
                                  "set xrange [-0.5:{}]\nplot '{}/dendrogram.dat' using 1:2:3:4 with vectors nohead lw 2\n",
                                  K, c.n.back(), K - 0.5, res.dir));
  return csv;
}

}  // namespace

LabRunResult run_lab(const Recipe& recipe, bool quiet) {
  const LabConfig& c = recipe.lab;
  if (!c.present) throw Error(fmt::format("{}: no lab: section (tunekit fit runs estimation-lab recipes)", recipe.source));
  apply_thread_policy(recipe.threads);
  LabRunResult res;
  res.dir = recipe.run_dir();
  fs::create_directories(res.dir);
  write_file_atomic(res.dir + "/recipe.yaml", recipe.resolved_yaml);
  const LabContext ctx{c, static_cast<uint64_t>(recipe.seed), quiet};
  ctx.say(fmt::format("lab {}: {} experiment, family {} ({} gate, {} experts), truth {} expert(s), fit {} expert(s) by {}, n = {}, {} replications",
                      res.dir, to_string(c.experiment), to_string(c.family), to_string(c.gate), to_string(c.expert),
                      c.truth.experts, c.experiment == Experiment::Select ? c.max_experts : c.fit.experts,
                      to_string(c.fit.method), fmt::join(c.n, ", "),
                      c.replications));
  const std::string csv = c.experiment == Experiment::Rate ? rate_experiment(ctx, res) : select_experiment(ctx, res);
  res.csv = res.dir + "/results.csv";
  write_file_atomic(res.csv, csv);
  res.summary = res.dir + "/summary.md";
  write_file_atomic(res.summary, fmt::format("# Lab {}\n\nRecipe: `{}`; seed {}; {} experiment; family {} ({} gate); "
                                                 "{:.0f} s.\n\n{}", recipe.output.name, recipe.source, recipe.seed,
                                                 to_string(c.experiment), to_string(c.family), to_string(c.gate), ctx.elapsed(), res.table));
  return res;
}

LabSeedsResult run_lab_seeds(const std::string& recipe_path, const std::vector<std::string>& overrides,
                             const std::vector<int64_t>& seeds, bool quiet) {
  const Recipe base = load_recipe(recipe_path, overrides);
  if (!base.lab.present)
    throw Error(fmt::format("{}: no lab: section (tunekit fit runs estimation-lab recipes)", recipe_path));
  if (base.lab.experiment != Experiment::Rate)
    throw Error(fmt::format("{}: --seeds applies to lab.experiment rate (this recipe's is {}; a select experiment's "
                            "replications already draw a sample each)",
                            recipe_path, to_string(base.lab.experiment)));
  if (base.lab.n.size() < 2)
    throw Error(fmt::format("{}: --seeds compares slopes over n, and lab.n has one size", recipe_path));
  if (seeds.size() < 2) throw Error("--seeds needs at least 2 seeds (an interval over seeds)");
  if (auto problem = seed_list_problem(seeds); !problem.empty()) throw Error("--seeds: " + problem);
  LabSeedsResult out;
  const double theory = base.lab.theory_slope;
  std::string csv = "seed,slope,slope_se,run_dir\n";
  std::string rows;
  for (int64_t seed : seeds) {
    std::vector<std::string> o = overrides;
    o.push_back(fmt::format("seed={}", seed));
    o.push_back(fmt::format("output.name={}_seed{}", base.output.name, seed));
    const LabRunResult r = run_lab(load_recipe(recipe_path, o), quiet);
    if (!quiet) std::fprintf(stderr, "seed %lld: slope %.3f ± %.3f (%s)\n", static_cast<long long>(seed), r.slope, r.slope_se, r.dir.c_str());
    out.slopes.push_back(r.slope);
    csv += fmt::format("{},{:.6f},{:.6f},{}\n", seed, r.slope, r.slope_se, r.dir);
    rows += fmt::format("| {} | {:.3f} ± {:.3f} |\n", seed, r.slope, r.slope_se);
  }
  const stats::Interval ci = stats::mean_ci(out.slopes);
  const bool inside = ci.lo <= theory && theory <= ci.hi;
  out.table = fmt::format("| seed | slope ± standard error (its own fits) |\n|---|---|\n{}\n"
                          "slope over {} seeds: {:.3f} [{:.3f}, {:.3f}] (mean, 95 % interval, Student t; sd {:.3f}); "
                          "theory {:.3f}: {} the interval\n",
                          rows, seeds.size(), ci.mean, ci.lo, ci.hi, ci.sd, theory, inside ? "inside" : "outside");
  out.dir = base.output.dir + "/" + base.output.name + "_seeds";
  fs::create_directories(out.dir);
  out.csv = out.dir + "/seeds.csv";
  write_file_atomic(out.csv, csv);
  out.summary = out.dir + "/summary.md";
  write_file_atomic(out.summary, fmt::format("# Lab {} over seeds\n\nRecipe: `{}`; seeds {}; each seed a whole rate "
                                             "experiment ({} sizes x {} replications).\n\n{}",
                                             base.output.name, recipe_path, fmt::join(seeds, ", "), base.lab.n.size(),
                                             base.lab.replications, out.table));
  return out;
}

}  // namespace tunekit::lab
