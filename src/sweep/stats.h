// Statistics for the sweep protocol (issue 19): the Student-t distribution (CDF through the
// regularised incomplete beta function, quantile by bisection), mean with a 95 % confidence
// interval, the paired t-test over matching seeds and the verdict rule of docs/experiments.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tunekit::stats {

// I_x(a, b), the regularised incomplete beta function (a, b > 0, 0 <= x <= 1).
double incomplete_beta(double a, double b, double x);
// P(T <= t) for Student's t with df > 0 degrees of freedom (df = infinity: the normal).
double t_cdf(double t, double df);
// The p-quantile of Student's t (0 < p < 1); e.g. t_quantile(0.975, 4) = 2.7764.
double t_quantile(double p, double df);

// Mean and its two-sided confidence interval (Student t, n − 1 df); lo = hi = NaN below 2 values.
struct Interval {
  int64_t n = 0;
  double mean = 0, lo = 0, hi = 0, sd = 0;
  double half() const { return (hi - lo) / 2; }
};
Interval mean_ci(const std::vector<double>& v, double level = 0.95);

// Paired t-test of a − b (a[i] and b[i] from the same seed): the mean difference with its 95 %
// interval, t and the two-sided p-value against 0. Throws Error when the sizes differ.
struct PairedTest {
  Interval diff;
  double t = 0, p = 1;
};
PairedTest paired_t_test(const std::vector<double>& a, const std::vector<double>& b);

// The claim "A beats B by more than margin": reproduced when the 95 % interval of A − B lies
// above the margin, not reproduced when it lies below, inconclusive otherwise (or below 2 pairs).
// With margin 0, reproduced = A − B > 0 with p < 0.05, not reproduced = B − A > 0 with p < 0.05.
enum class Verdict { Reproduced, NotReproduced, Inconclusive };
Verdict verdict(const PairedTest& test, double margin = 0);
std::string to_string(Verdict v);

}  // namespace tunekit::stats
