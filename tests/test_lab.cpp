// The estimation lab: generators against their parameters' moments, likelihoods against
// hand-computed values, maximum-likelihood recovery on large samples, the Voronoi loss
// (zero at the truth, invariant to relabelling and to the softmax translation), dendrograms and
// the log-log slope.
#include <gtest/gtest.h>

#include <cmath>

#include "src/lab/dendrogram.h"
#include "src/lab/lab.h"
#include "src/lab/moe.h"
#include "src/sweep/stats.h"
#include "src/recipe/recipe.h"
#include "util/error.h"
#include "tests/helpers.h"

#include <filesystem>
#include <fmt/format.h>
#include <fstream>

using namespace tunekit;
using namespace tunekit::lab;
namespace fs = std::filesystem;

namespace {

torch::Tensor t(std::vector<double> v, std::vector<int64_t> shape) { return torch::tensor(v, torch::kDouble).reshape(shape); }

MoE gaussian_truth() {
  MoE m;
  m.family = Family::Gaussian;
  m.beta = t({2.0, -2.0}, {2, 1});
  m.bias = t({0.3, -0.3}, {2});
  m.a = t({1.0, -1.0}, {2, 1});
  m.c = t({1.0, -1.0}, {2});
  m.log_sigma = torch::log(t({0.4, 0.7}, {2}));
  return m;
}

MoE contaminated_truth() {
  MoE m;
  m.family = Family::Contaminated;
  m.beta = t({1.0, -0.5}, {1, 2});
  m.bias = t({0.2}, {1});
  m.a = t({-1.0, 2.0}, {1, 2});
  m.c = t({1.0}, {1});
  m.log_sigma = torch::log(t({0.5}, {1}));
  m.a0 = t({1.0, 0.5}, {2});
  m.c0 = torch::tensor(0.0, torch::kDouble);
  m.sigma0 = torch::tensor(0.8, torch::kDouble);
  return m;
}

double normal_pdf(double y, double mu, double s) { return std::exp(-0.5 * std::pow((y - mu) / s, 2)) / (s * std::sqrt(2 * M_PI)); }
double sig(double v) { return 1 / (1 + std::exp(-v)); }

}  // namespace

TEST(Lab, LikelihoodMatchesHandComputedValues) {
  auto x = t({0.5}, {1, 1}), y = t({1.2}, {1});
  {  // gaussian, softmax gate
    MoE m = gaussian_truth();
    double s1 = 2.0 * 0.5 + 0.3, s2 = -2.0 * 0.5 - 0.3;
    double g1 = std::exp(s1) / (std::exp(s1) + std::exp(s2));
    double p = g1 * normal_pdf(1.2, 1.5, 0.4) + (1 - g1) * normal_pdf(1.2, -1.5, 0.7);
    EXPECT_NEAR(log_likelihood(m, x, y).item<double>(), std::log(p), 1e-12);
    m.gate = GateFn::Sigmoid;  // normalised sigmoid in a mixture density
    double h1 = sig(s1) / (sig(s1) + sig(s2));
    p = h1 * normal_pdf(1.2, 1.5, 0.4) + (1 - h1) * normal_pdf(1.2, -1.5, 0.7);
    EXPECT_NEAR(log_likelihood(m, x, y).item<double>(), std::log(p), 1e-12);
  }
  {  // regression, sigmoid gate (not normalised), one noise scale
    MoE m = gaussian_truth();
    m.family = Family::Regression;
    m.gate = GateFn::Sigmoid;
    m.log_sigma = torch::log(t({0.3}, {1}));
    double f = sig(1.3) * 1.5 + sig(-1.3) * (-1.5);
    EXPECT_NEAR(log_likelihood(m, x, y).item<double>(), std::log(normal_pdf(1.2, f, 0.3)), 1e-12);
    m.expert = ExpertFn::Tanh;  // network experts: h_i = tanh(a_i x + c_i)
    f = sig(1.3) * std::tanh(1.5) + sig(-1.3) * std::tanh(-1.5);
    EXPECT_NEAR(log_likelihood(m, x, y).item<double>(), std::log(normal_pdf(1.2, f, 0.3)), 1e-12);
  }
  {  // contaminated
    MoE m = contaminated_truth();
    auto x2 = t({0.5, -1.0}, {1, 2});
    double g = sig(1.0 * 0.5 - 0.5 * -1.0 + 0.2);
    double p = (1 - g) * normal_pdf(1.2, 0.5 - 0.5, 0.8) + g * normal_pdf(1.2, -0.5 - 2.0 + 1.0, 0.5);
    EXPECT_NEAR(log_likelihood(m, x2, y).item<double>(), std::log(p), 1e-12);
    // The paper's distinguishable setting: Laplace f0 (scale σ0) and tanh means for both experts.
    m.frozen_density = Density::Laplace;
    m.expert = ExpertFn::Tanh;
    const double h0 = std::tanh(0.5 - 0.5), h = std::tanh(-0.5 - 2.0 + 1.0);
    p = (1 - g) * std::exp(-std::abs(1.2 - h0) / 0.8) / (2 * 0.8) + g * normal_pdf(1.2, h, 0.5);
    EXPECT_NEAR(log_likelihood(m, x2, y).item<double>(), std::log(p), 1e-12);
  }
  {  // multinomial: 2 experts, 3 classes
    MoE m;
    m.family = Family::Multinomial;
    m.classes = 3;
    m.beta = t({1.0, -1.0}, {2, 1});
    m.bias = t({0.0, 0.5}, {2});
    m.a = t({1.0, 0.0, -1.0, -0.5, 0.5, 2.0}, {2, 3, 1});
    m.c = t({0.0, 0.1, 0.2, 0.3, 0.0, -0.3}, {2, 3});
    m.log_sigma = torch::zeros({1}, torch::kDouble);
    auto yc = torch::tensor({2}, torch::kLong);
    double s1 = 0.5, s2 = -0.5 + 0.5, g1 = std::exp(s1) / (std::exp(s1) + std::exp(s2));
    auto softmax_at = [](std::vector<double> l, int k) {
      double z = 0;
      for (double v : l) z += std::exp(v);
      return std::exp(l[k]) / z;
    };
    double p = g1 * softmax_at({0.5, 0.1, -0.5 + 0.2}, 2) + (1 - g1) * softmax_at({-0.25 + 0.3, 0.25, 1.0 - 0.3}, 2);
    EXPECT_NEAR(log_likelihood(m, x, yc).item<double>(), std::log(p), 1e-12);
  }
}

TEST(Lab, GeneratorsReproduceTheirMoments) {
  const int64_t n = 200000;
  {
    MoE m = gaussian_truth();
    Sample s = sample(m, n, 1);
    auto g = gate_weights(m, s.x);
    EXPECT_NEAR(s.z.eq(0).to(torch::kDouble).mean().item<double>(), g.select(1, 0).mean().item<double>(), 0.005);
    for (int64_t i = 0; i < 2; ++i) {
      auto idx = s.z.eq(i).nonzero().flatten();
      auto resid = s.y.index_select(0, idx) - (s.x.index_select(0, idx).mm(m.a.t()) + m.c).select(1, i);
      EXPECT_NEAR(resid.mean().item<double>(), 0.0, 0.01);
      EXPECT_NEAR(resid.std().item<double>(), std::exp(m.log_sigma[i].item<double>()), 0.01);
    }
    EXPECT_NEAR(s.x.mean().item<double>(), 0.0, 0.01);
    EXPECT_NEAR(s.x.std().item<double>(), 1.0, 0.01);
  }
  {
    MoE m = contaminated_truth();
    Sample s = sample(m, n, 2);
    EXPECT_NEAR(s.z.to(torch::kDouble).mean().item<double>(), gate_weights(m, s.x).mean().item<double>(), 0.005);
    auto idx0 = s.z.eq(0).nonzero().flatten();
    auto r0 = s.y.index_select(0, idx0) - (s.x.index_select(0, idx0).mv(m.a0) + m.c0);
    EXPECT_NEAR(r0.std().item<double>(), 0.8, 0.01);
    // Laplace f0 with scale 0.8: mean |residual| = 0.8, standard deviation 0.8·√2; tanh means.
    m.frozen_density = Density::Laplace;
    m.expert = ExpertFn::Tanh;
    Sample l = sample(m, n, 2);
    auto i0 = l.z.eq(0).nonzero().flatten(), i1 = l.z.eq(1).nonzero().flatten();
    auto e0 = l.y.index_select(0, i0) - torch::tanh(l.x.index_select(0, i0).mv(m.a0) + m.c0);
    EXPECT_NEAR(e0.mean().item<double>(), 0.0, 0.01);
    EXPECT_NEAR(e0.abs().mean().item<double>(), 0.8, 0.01);
    EXPECT_NEAR(e0.std().item<double>(), 0.8 * std::sqrt(2.0), 0.02);
    auto e1 = l.y.index_select(0, i1) - torch::tanh(l.x.index_select(0, i1).mv(m.a[0]) + m.c[0]);
    EXPECT_NEAR(e1.std().item<double>(), 0.5, 0.01);
  }
  {
    MoE m = gaussian_truth();
    m.family = Family::Regression;
    m.gate = GateFn::Sigmoid;
    m.log_sigma = torch::log(t({0.3}, {1}));
    Sample s = sample(m, n, 3);
    auto f = (gate_weights(m, s.x) * (s.x.mm(m.a.t()) + m.c)).sum(1);
    EXPECT_NEAR((s.y - f).std().item<double>(), 0.3, 0.005);
  }
}

TEST(Lab, MaximumLikelihoodRecoversTheTruthOnALargeSample) {
  MoE g = gaussian_truth();
  Sample s = sample(g, 20000, 4);
  for (auto method : {FitMethod::EM, FitMethod::Gradient}) {
    FitOptions o;
    o.experts = 2;
    o.method = method;
    o.restarts = 3;
    FitResult f = fit(g, s.x, s.y, o, 4);
    EXPECT_LT(voronoi_loss(f.model, g), 0.1) << (method == FitMethod::EM ? "em" : "gradient");
    torch::NoGradGuard ng;
    EXPECT_LE(f.nll, -log_likelihood(g, s.x, s.y).mean().item<double>() + 1e-9);  // the MLE beats the truth in-sample
  }
  MoE c = contaminated_truth();
  Sample sc = sample(c, 20000, 5);
  FitOptions o;
  o.experts = 1;
  o.method = FitMethod::EM;
  FitResult fc = fit(c, sc.x, sc.y, o, 5);
  EXPECT_LT(voronoi_loss(fc.model, c), 0.1);
  EXPECT_TRUE(torch::equal(fc.model.a0, c.a0));  // the frozen expert stays frozen
  EXPECT_THROW(fit(MoE{Family::Regression}, s.x, s.y, o, 0), Error);  // EM does not apply to regression
}

// The constant-weight model (2410.12258): β stays zero in every estimator, the weight σ(b) and the
// prompt are recovered, and β does not count as a free parameter.
TEST(Lab, ConstantWeightFitsKeepTheGateSlopeAtZero) {
  MoE truth = contaminated_truth();
  truth.beta = torch::zeros({1, 2}, torch::kDouble);
  truth.constant_weight = true;
  EXPECT_EQ(truth.num_parameters(), 1 + 2 + 1 + 1);  // b, a, c, σ
  Sample s = sample(truth, 20000, 11);
  for (FitMethod method : {FitMethod::EM, FitMethod::Gradient}) {
    FitOptions o;
    o.experts = 1;
    o.method = method;
    o.restarts = 2;
    FitResult r = fit(truth, s.x, s.y, o, 5);
    EXPECT_TRUE(r.model.constant_weight);
    EXPECT_EQ(r.model.beta.abs().max().item<double>(), 0.0) << to_string(method);
    EXPECT_NEAR(r.model.bias[0].item<double>(), 0.2, 0.05) << to_string(method);
    EXPECT_NEAR(r.model.a[0][1].item<double>(), 2.0, 0.05) << to_string(method);
  }
  const std::string bad = testkit::error_of([] {
    parse_recipe("lab: {family: contaminated, constant_weight: true, truth: {dim: 1, beta: [0.5], bias: [0], a: [2], "
                 "c: [1], sigma: [0.5], frozen_a: [0.5]}}\n",
                 "lab.yaml");
  });
  EXPECT_NE(bad.find("lab.truth.beta: must be zeros with lab.constant_weight"), std::string::npos) << bad;
  EXPECT_NE(testkit::error_of([] {
              parse_recipe("lab: {family: gaussian, constant_weight: true, truth: {experts: 1, dim: 1, beta: [0], "
                           "bias: [0], a: [2], c: [1], sigma: [0.5]}}\n",
                           "lab.yaml");
            }).find("lab.constant_weight: applies to family contaminated"),
            std::string::npos);
}

TEST(Lab, VoronoiLossIsZeroAtTheTruthAndIgnoresLabelsAndTranslation) {
  MoE g = gaussian_truth();
  EXPECT_NEAR(voronoi_loss(g, g), 0.0, 1e-12);
  MoE f = g.clone();
  f.beta += 0.05;
  f.c -= 0.1;
  const double loss = voronoi_loss(f, g);
  EXPECT_GT(loss, 0.01);
  MoE p = f.clone();  // experts relabelled
  for (auto* tt : {&p.beta, &p.bias, &p.a, &p.c, &p.log_sigma}) *tt = tt->flip(0);
  EXPECT_NEAR(voronoi_loss(p, g), loss, 1e-12);
  MoE tr = f.clone();  // a common translation of the softmax gate changes nothing
  tr.beta += 3.0;
  tr.bias += -1.5;
  EXPECT_NEAR(voronoi_loss(tr, g), loss, 1e-9);
  // Over-specified: two fitted atoms at one true atom, with the weight split, cost only their offsets.
  MoE o = g.clone();
  o.beta = torch::cat({g.beta, g.beta.slice(0, 0, 1)});
  o.bias = torch::cat({g.bias, g.bias.slice(0, 0, 1)});
  o.bias[0] -= std::log(2.0);
  o.bias[2] -= std::log(2.0);
  o.a = torch::cat({g.a, g.a.slice(0, 0, 1)});
  o.c = torch::cat({g.c, g.c.slice(0, 0, 1)});
  o.log_sigma = torch::cat({g.log_sigma, g.log_sigma.slice(0, 0, 1)});
  EXPECT_NEAR(voronoi_loss(o, g), 0.0, 1e-9);
}

// The authors' rule (2510.12744's code; the lab's default): d = π_iπ_j/(π_i+π_j) ·
// (‖c_i − c_j‖² + sqrt(‖a_i − a_j‖² + (σ²_i − σ²_j)²)), the gate slopes β left out, σ² averaged.
// Atoms (β, a, c, σ): (5, 0, 0, 1), (−5, 0, 0.1, 1), (0, 3, 0, 2), weights 1/3 each.
TEST(Lab, DendrogramAuthorsRuleLeavesGateSlopesOutAndAveragesVariances) {
  auto w = t({1.0, 1.0, 1.0}, {3});
  auto theta = t({5.0, 0.0, 0.0, 1.0, -5.0, 0.0, 0.1, 1.0, 0.0, 3.0, 0.0, 2.0}, {3, 4});
  const DendrogramOptions authors{DendrogramRule::Authors, {1, 1, 1, 1}};
  Dendrogram d = build_dendrogram(w, theta, authors);
  ASSERT_EQ(d.merges.size(), 2u);
  // Atoms 0 and 1 differ only in β (ignored) and c: (1/9)/(2/3) · 0.1² = 0.01 / 6.
  EXPECT_EQ(std::min(d.merges[0].left, d.merges[0].right), 0);
  EXPECT_EQ(std::max(d.merges[0].left, d.merges[0].right), 1);
  EXPECT_NEAR(d.merges[0].height, 0.01 / 6, 1e-12);
  // Merged: weight 2/3 at (0, 0, 0.05, σ² = 1); with atom 2: (2/9)/1 · (0.05² + sqrt(3² + (1 − 4)²)).
  EXPECT_NEAR(d.merges[1].height, 2.0 / 9.0 * (0.0025 + std::sqrt(18.0)), 1e-12);
  // The root averages σ² (2/3 · 1 + 1/3 · 4 = 2) and reports σ = sqrt(2), not the mean σ 4/3.
  EXPECT_NEAR(d.levels[0].second[0][3].item<double>(), std::sqrt(2.0), 1e-12);
  EXPECT_NEAR(d.levels[0].second[0][2].item<double>(), 0.1 / 3, 1e-12);
  EXPECT_TRUE(torch::allclose(d.levels[2].second, theta));  // the leaves as given (σ, not σ²)
  // The finite-mixture form over the whole atom merges atoms 0 and 2 first (their β differ by 5,
  // atoms 0 and 1's by 10): (1/6)(25 + 9 + 1) = 35/6.
  Dendrogram m = build_dendrogram(w, theta);
  EXPECT_EQ(std::max(m.merges[0].left, m.merges[0].right), 2);
  EXPECT_NEAR(m.merges[0].height, 35.0 / 6.0, 1e-12);
  EXPECT_THROW(build_dendrogram(w, theta, DendrogramOptions{DendrogramRule::Authors, {1, 1}}), Error);
}

TEST(Lab, DendrogramMergesTheClosestAtomsFirst) {
  auto w = t({0.25, 0.25, 0.25, 0.25}, {4});
  auto theta = t({0.0, 0.1, 5.0, 10.0}, {4, 1});
  Dendrogram d = build_dendrogram(w, theta);
  ASSERT_EQ(d.merges.size(), 3u);
  EXPECT_EQ(std::min(d.merges[0].left, d.merges[0].right), 0);
  EXPECT_EQ(std::max(d.merges[0].left, d.merges[0].right), 1);
  EXPECT_NEAR(d.merges[0].height, 0.25 * 0.25 / 0.5 * 0.01, 1e-12);  // π_iπ_j/(π_i+π_j)·‖Δθ‖²
  // Next the atoms at 5 and 10 (0.25·0.25/0.5·5² = 3.125), cheaper than the merged atom (weight
  // 0.5 at 0.05) with the one at 5 (0.5·0.25/0.75·4.95² ≈ 4.08); last the two merged atoms.
  EXPECT_EQ(std::min(d.merges[1].left, d.merges[1].right), 2);
  EXPECT_NEAR(d.merges[1].height, 3.125, 1e-12);
  EXPECT_NEAR(d.merges[2].height, 0.5 * 0.5 / 1.0 * 7.45 * 7.45, 1e-9);
  // Two tight pairs far apart: the dendrogram keeps 2 atoms.
  Dendrogram two = build_dendrogram(w, t({0.0, 0.01, 5.0, 5.02}, {4, 1}));
  EXPECT_EQ(two.selected(), 2);
  // On a linear scale the last merge (two heavy atoms far apart) always jumps most.
  Dendrogram three = build_dendrogram(t({0.2, 0.2, 0.2, 0.2, 0.2}, {5}), t({0.0, 0.01, 2.0, 2.01, 4.0}, {5, 1}));
  EXPECT_EQ(three.selected(), 3);
  EXPECT_EQ(three.selected_linear_gap(), 2);
  EXPECT_NE(dendrogram_segments(two).find("# x0 y0 dx dy"), std::string::npos);
  ASSERT_EQ(two.levels.size(), 4u);
  EXPECT_TRUE(torch::allclose(two.levels[3].second, t({0.0, 0.01, 5.0, 5.02}, {4, 1})));
  EXPECT_NEAR(two.levels[1].first.sum().item<double>(), 1.0, 1e-12);  // weights add up when atoms merge
  EXPECT_TRUE(torch::allclose(std::get<0>(two.levels[1].second.flatten().sort()), t({0.005, 5.01}, {2})));
}

TEST(Lab, GaussianModelFromItsAtomsHasTheSameLikelihood) {
  MoE g = gaussian_truth();
  Atoms a = atoms(g);
  MoE back = gaussian_from_atoms(a.weight, a.theta, 1);
  Sample s = sample(g, 500, 6);
  EXPECT_TRUE(torch::allclose(log_likelihood(back, s.x, s.y), log_likelihood(g, s.x, s.y), 1e-10, 1e-12));
}

TEST(Lab, LogLogSlopeAndRecipeChecks) {
  std::vector<double> n{1e3, 1e4, 1e5}, y;
  for (double v : n) y.push_back(3.0 * std::pow(v, -0.5));
  auto [slope, se] = loglog_slope(n, y);
  EXPECT_NEAR(slope, -0.5, 1e-12);
  EXPECT_NEAR(se, 0.0, 1e-9);
  try {
    parse_recipe("lab: {family: gaussian, truth: {experts: 2, dim: 1, beta: [1.0], bias: [0, 0], a: [1, 2], c: [0, 0], "
                 "sigma: [1, 1]}}\n",
                 "lab.yaml");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lab.truth.beta: needs 2 numbers (experts 2 x dim 1), got 1"), std::string::npos)
        << e.what();
  }
  Recipe r = parse_recipe("lab: {family: contaminated, truth: {dim: 1, beta: [1], bias: [0], a: [2], c: [1], sigma: [0.5], "
                          "frozen_a: [0.5], approach: 0.5, approach_n0: 100}}\n",
                          "lab.yaml");
  MoE at100 = truth_model(r.lab, 100), at400 = truth_model(r.lab, 400);
  EXPECT_NEAR(at100.a[0][0].item<double>(), 2.0, 1e-12);
  EXPECT_NEAR(at400.a[0][0].item<double>(), 0.5 + 1.5 * 0.5, 1e-12);  // half-way at n = 4 n0 with approach 1/2
  // The frozen density and network experts in the contaminated family.
  Recipe lap = parse_recipe("lab: {family: contaminated, expert: tanh, truth: {dim: 1, beta: [1], bias: [0], a: [2], "
                            "c: [1], sigma: [0.5], frozen_a: [0.5], frozen_density: laplace}}\n",
                            "lab.yaml");
  EXPECT_EQ(lap.lab.truth.frozen_density, Density::Laplace);
  EXPECT_EQ(truth_model(lap.lab, 100).frozen_density, Density::Laplace);
  EXPECT_EQ(truth_model(lap.lab, 100).expert, ExpertFn::Tanh);
  EXPECT_NE(testkit::error_of([] {
              parse_recipe("lab: {family: gaussian, truth: {experts: 1, dim: 1, beta: [1], bias: [0], a: [2], c: [1], "
                           "sigma: [0.5], frozen_density: laplace}}\n",
                           "lab.yaml");
            }).find("lab.truth.frozen_density: only applies to family contaminated"),
            std::string::npos);
  EXPECT_NE(testkit::error_of([] {
              parse_recipe("lab: {family: contaminated, expert: tanh, fit: {method: em}, truth: {dim: 1, beta: [1], "
                           "bias: [0], a: [2], c: [1], sigma: [0.5], frozen_a: [0.5], frozen_density: normal}}\n",
                           "lab.yaml");
            }).find("lab.truth.frozen_density: 'normal' is not one of: gaussian, laplace"),
            std::string::npos);
}

TEST(Lab, FitCommandWritesResultsSummaryAndSelection) {
  testkit::TempDir dir;
  std::ofstream(dir / "rate.yaml") << "seed: 1\nlab:\n  family: contaminated\n  truth: {dim: 1, beta: [1.0], bias: [0.0], "
                                      "a: [-1.0], c: [1.0], sigma: [0.5], frozen_a: [1.0]}\n  fit: {method: em}\n"
                                      "  n: [300, 1000, 3000]\n  replications: 2\noutput: {dir: \"" + dir.path() + "\"}\n";
  std::string cmd = std::string(TUNEKIT_CLI) + " fit " + (dir / "rate.yaml") + " -q > " + (dir / "out.txt") + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream csv(dir / "rate/results.csv");
  int lines = 0;
  for (std::string l; std::getline(csv, l);) ++lines;
  EXPECT_EQ(lines, 1 + 3 * 2);
  std::ifstream out(dir / "out.txt");
  std::string text((std::istreambuf_iterator<char>(out)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("fitted slope of log(loss) on log(n)"), std::string::npos) << text;

  // Selection on a well-separated 2-expert truth: every criterion finds it at this size.
  Recipe r = parse_recipe("seed: 2\nlab:\n  experiment: select\n  truth: {experts: 2, dim: 1, beta: [2, -2], bias: [0, 0], "
                          "a: [1, -1], c: [2, -2], sigma: [0.3, 0.3]}\n  fit: {method: em, restarts: 2}\n  max_experts: 3\n"
                          "  n: [3000]\n  replications: 1\noutput: {dir: \"" + dir.path() + "\", name: sel}\n",
                          "sel.yaml");
  LabRunResult res = run_lab(r, true);
  EXPECT_NE(res.table.find("| 3000 | 1/1 | 1/1 | 1/1 |"), std::string::npos) << res.table;
}

TEST(Lab, FitOverSeedsGivesEachSeedsSlopeAndTheirInterval) {
  testkit::TempDir dir;
  const std::string recipe = dir / "rate.yaml";
  std::ofstream(recipe) << "seed: 0\nlab:\n  family: contaminated\n  truth: {dim: 1, beta: [1.0], bias: [0.0], "
                           "a: [-1.0], c: [1.0], sigma: [0.5], frozen_a: [1.0]}\n  fit: {method: em}\n"
                           "  n: [300, 1000, 3000]\n  replications: 2\n  theory_slope: -0.5\noutput: {dir: \"" + dir.path() + "\"}\n";
  const LabSeedsResult res = run_lab_seeds(recipe, {}, {1, 2, 3}, true);
  ASSERT_EQ(res.slopes.size(), 3u);
  // Each seed's slope is the slope of a plain run of that seed.
  const LabRunResult alone = run_lab(load_recipe(recipe, {"seed=2", "output.name=alone"}), true);
  EXPECT_DOUBLE_EQ(res.slopes[1], alone.slope);
  EXPECT_NE(res.slopes[0], res.slopes[1]);  // the seeds draw different samples
  for (int s : {1, 2, 3}) EXPECT_TRUE(fs::exists(dir / fmt::format("rate_seed{}/results.csv", s))) << s;
  const stats::Interval ci = stats::mean_ci(res.slopes);
  EXPECT_NE(res.table.find(fmt::format("slope over 3 seeds: {:.3f} [{:.3f}, {:.3f}]", ci.mean, ci.lo, ci.hi)),
            std::string::npos)
      << res.table;
  EXPECT_NE(res.table.find(ci.lo <= -0.5 && -0.5 <= ci.hi ? "inside the interval" : "outside the interval"),
            std::string::npos);
  EXPECT_EQ(res.csv, dir / "rate_seeds/seeds.csv");
  int lines = 0;
  std::ifstream csv(res.csv);
  for (std::string l; std::getline(csv, l);) ++lines;
  EXPECT_EQ(lines, 1 + 3);

  EXPECT_NE(testkit::error_of([&] { run_lab_seeds(recipe, {}, {4}, true); }).find("at least 2 seeds"), std::string::npos);
  EXPECT_NE(testkit::error_of([&] { run_lab_seeds(recipe, {}, {4, 4}, true); }).find("--seeds: seed 4 is listed twice"),
            std::string::npos);
  EXPECT_NE(testkit::error_of([&] { run_lab_seeds(recipe, {"lab.n=[300]"}, {1, 2}, true); }).find("one size"),
            std::string::npos);
  std::ofstream(dir / "sel.yaml") << "lab:\n  experiment: select\n  truth: {experts: 2, dim: 1, beta: [2, -2], bias: [0, 0], "
                                     "a: [1, -1], c: [2, -2], sigma: [0.3, 0.3]}\n  max_experts: 3\n  n: [300, 1000]\n";
  EXPECT_NE(testkit::error_of([&] { run_lab_seeds(dir / "sel.yaml", {}, {1, 2}, true); })
                .find("--seeds applies to lab.experiment rate (this recipe's is select"),
            std::string::npos);
}
