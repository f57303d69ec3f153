// The sweep protocol's statistics against table values and closed forms computed here.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "src/sweep/stats.h"
#include "util/error.h"

using namespace tunekit;
using namespace tunekit::stats;

TEST(Stats, IncompleteBetaClosedForms) {
  for (double x : {0.0, 0.1, 0.37, 0.5, 0.9, 1.0}) {
    EXPECT_NEAR(incomplete_beta(1, 1, x), x, 1e-13);
    EXPECT_NEAR(incomplete_beta(3, 1, x), x * x * x, 1e-13);                  // I_x(a, 1) = x^a
    EXPECT_NEAR(incomplete_beta(1, 2.5, x), 1 - std::pow(1 - x, 2.5), 1e-13);  // I_x(1, b) = 1 − (1 − x)^b
  }
  EXPECT_THROW(incomplete_beta(0, 1, 0.5), Error);
  EXPECT_THROW(incomplete_beta(1, 1, 1.5), Error);
}

TEST(Stats, StudentTCdfClosedForms) {
  const double pi = std::acos(-1.0);
  for (double t : {-7.0, -1.0, 0.0, 0.3, 2.0, 40.0}) {
    EXPECT_NEAR(t_cdf(t, 1), 0.5 + std::atan(t) / pi, 1e-12);               // Cauchy
    EXPECT_NEAR(t_cdf(t, 2), 0.5 + t / (2 * std::sqrt(2 + t * t)), 1e-12);  // df 2
    EXPECT_NEAR(t_cdf(t, std::numeric_limits<double>::infinity()), 0.5 * std::erfc(-t / std::sqrt(2.0)), 1e-15);
  }
}

TEST(Stats, StudentTQuantileMatchesTables) {
  EXPECT_NEAR(t_quantile(0.975, 1), 12.7062, 1e-4);
  EXPECT_NEAR(t_quantile(0.975, 4), 2.7764, 1e-4);
  EXPECT_NEAR(t_quantile(0.975, 9), 2.2622, 1e-4);
  EXPECT_NEAR(t_quantile(0.975, 30), 2.0423, 1e-4);
  EXPECT_NEAR(t_quantile(0.995, 10), 3.1693, 1e-4);
  EXPECT_NEAR(t_quantile(0.95, 120), 1.6577, 1e-4);
  EXPECT_NEAR(t_quantile(0.975, std::numeric_limits<double>::infinity()), 1.959964, 1e-6);
  EXPECT_NEAR(t_quantile(0.025, 4), -2.7764, 1e-4);
  EXPECT_EQ(t_quantile(0.5, 7), 0.0);
  EXPECT_THROW(t_quantile(1.0, 4), Error);
}

TEST(Stats, MeanCiByHand) {
  // {1, 2, 3, 4, 5}: mean 3, sd sqrt(2.5), half-width t_{0.975,4} sd / sqrt(5).
  Interval r = mean_ci({1, 2, 3, 4, 5});
  EXPECT_EQ(r.n, 5);
  EXPECT_DOUBLE_EQ(r.mean, 3);
  EXPECT_NEAR(r.sd, std::sqrt(2.5), 1e-12);
  EXPECT_NEAR(r.half(), 2.776445 * std::sqrt(2.5) / std::sqrt(5.0), 1e-5);
  Interval one = mean_ci({0.7});
  EXPECT_DOUBLE_EQ(one.mean, 0.7);
  EXPECT_TRUE(std::isnan(one.lo));
}

TEST(Stats, PairedTestByHandAndVerdicts) {
  // d = {0.02, 0.02, 0.01, 0.03, 0.03}: mean 0.022, sum of squares 2.8e-4, sd sqrt(7e-5).
  std::vector<double> a{0.80, 0.82, 0.85, 0.83, 0.84}, b{0.78, 0.80, 0.84, 0.80, 0.81};
  PairedTest t = paired_t_test(a, b);
  const double se = std::sqrt(7e-5) / std::sqrt(5.0), tv = 0.022 / se;
  EXPECT_NEAR(t.diff.mean, 0.022, 1e-12);
  EXPECT_NEAR(t.t, tv, 1e-9);
  EXPECT_NEAR(t.diff.half(), 2.776445 * se, 1e-6);
  // Two-sided p for df 4 from the closed-form CDF F(t) = 1/2 + (3/8) u (1 − u² / 12), u = t / sqrt(1 + t² / 4).
  const double u = tv / std::sqrt(1 + tv * tv / 4), F = 0.5 + 0.375 * u * (1 - u * u / 12);
  EXPECT_NEAR(t.p, 2 * (1 - F), 1e-10);
  EXPECT_LT(t.p, 0.05);
  EXPECT_EQ(verdict(t), Verdict::Reproduced);
  EXPECT_EQ(verdict(paired_t_test(b, a)), Verdict::NotReproduced);
  EXPECT_EQ(verdict(t, 0.05), Verdict::NotReproduced);  // the interval lies below a 5-point margin
  EXPECT_EQ(verdict(t, 0.025), Verdict::Inconclusive);  // ... and straddles 2.5 points
  // Differences of both signs: inconclusive; one pair: inconclusive; sizes must match.
  EXPECT_EQ(verdict(paired_t_test({0.8, 0.7, 0.9}, {0.75, 0.76, 0.85})), Verdict::Inconclusive);
  EXPECT_EQ(verdict(paired_t_test({0.9}, {0.1})), Verdict::Inconclusive);
  EXPECT_THROW(paired_t_test({0.9, 0.8}, {0.1}), Error);
  EXPECT_EQ(to_string(Verdict::NotReproduced), "not reproduced");
}
