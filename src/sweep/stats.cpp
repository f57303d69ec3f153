#include "src/sweep/stats.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "util/error.h"

namespace tunekit::stats {

namespace {

// The continued fraction of I_x(a, b) (DLMF 8.17.22) by the modified Lentz method; converges
// fast for x < (a + 1) / (a + b + 2).
double beta_fraction(double a, double b, double x) {
  const double tiny = 1e-300, eps = 1e-15;
  double f = tiny, c = f, d = 0;
  for (int j = 1; j < 100000; ++j) {
    double num;  // the j-th numerator: 1, then d_1, d_2, ...
    if (j == 1) {
      num = 1;
    } else {
      const int k = j - 1, m = k / 2;
      num = k % 2 == 1 ? -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
                       : m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
    }
    d = 1 + num * d;
    if (std::fabs(d) < tiny) d = tiny;
    c = 1 + num / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1 / d;
    const double delta = c * d;
    f *= delta;
    if (std::fabs(delta - 1) < eps) break;
  }
  return f;
}

}  // namespace

double incomplete_beta(double a, double b, double x) {
  if (!(a > 0) || !(b > 0) || !(x >= 0 && x <= 1))
    throw Error(fmt::format("incomplete_beta: needs a, b > 0 and 0 <= x <= 1, got a={} b={} x={}", a, b, x));
  if (x == 0 || x == 1) return x;
  if (x > (a + 1) / (a + b + 2)) return 1 - incomplete_beta(b, a, 1 - x);
  const double log_front = a * std::log(x) + b * std::log1p(-x) + std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b);
  return std::exp(log_front) / a * beta_fraction(a, b, x);
}

double t_cdf(double t, double df) {
  if (!(df > 0)) throw Error(fmt::format("t_cdf: degrees of freedom must be positive, got {}", df));
  if (std::isinf(t)) return t > 0 ? 1 : 0;
  if (std::isinf(df) || df > 1e10) return 0.5 * std::erfc(-t / std::sqrt(2.0));
  const double tail = 0.5 * incomplete_beta(df / 2, 0.5, df / (df + t * t));  // P(T > |t|)
  return t > 0 ? 1 - tail : tail;
}

double t_quantile(double p, double df) {
  if (!(p > 0 && p < 1)) throw Error(fmt::format("t_quantile: p must be in (0, 1), got {}", p));
  if (p < 0.5) return -t_quantile(1 - p, df);
  if (p == 0.5) return 0;
  double lo = 0, hi = 1;
  while (t_cdf(hi, df) < p) {
    lo = hi;
    hi *= 2;
  }
  for (int i = 0; i < 200 && hi - lo > 1e-13 * hi; ++i) {
    const double mid = (lo + hi) / 2;
    (t_cdf(mid, df) < p ? lo : hi) = mid;
  }
  return (lo + hi) / 2;
}

Interval mean_ci(const std::vector<double>& v, double level) {
  Interval r;
  r.n = static_cast<int64_t>(v.size());
  for (double x : v) r.mean += x;
  if (r.n) r.mean /= r.n;
  if (r.n < 2) {
    r.lo = r.hi = std::numeric_limits<double>::quiet_NaN();
    return r;
  }
  double ss = 0;
  for (double x : v) ss += (x - r.mean) * (x - r.mean);
  r.sd = std::sqrt(ss / (r.n - 1));
  const double half = t_quantile(0.5 + level / 2, r.n - 1) * r.sd / std::sqrt(static_cast<double>(r.n));
  r.lo = r.mean - half;
  r.hi = r.mean + half;
  return r;
}

PairedTest paired_t_test(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size())
    throw Error(fmt::format("paired t-test: {} values against {} (each seed needs both)", a.size(), b.size()));
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  PairedTest r;
  r.diff = mean_ci(d);
  if (r.diff.n < 2) return r;
  const double se = r.diff.sd / std::sqrt(static_cast<double>(r.diff.n));
  if (se == 0) {  // every seed gives the same difference
    r.t = r.diff.mean == 0 ? 0 : std::copysign(std::numeric_limits<double>::infinity(), r.diff.mean);
    r.p = r.diff.mean == 0 ? 1 : 0;
    return r;
  }
  r.t = r.diff.mean / se;
  const double df = static_cast<double>(r.diff.n - 1);
  r.p = incomplete_beta(df / 2, 0.5, df / (df + r.t * r.t));
  return r;
}

Verdict verdict(const PairedTest& test, double margin) {
  if (test.diff.n < 2) return Verdict::Inconclusive;
  if (test.diff.lo > margin) return Verdict::Reproduced;
  if (test.diff.hi < margin) return Verdict::NotReproduced;
  return Verdict::Inconclusive;
}

std::string to_string(Verdict v) {
  switch (v) {
    case Verdict::Reproduced: return "reproduced";
    case Verdict::NotReproduced: return "not reproduced";
    case Verdict::Inconclusive: return "inconclusive";
  }
  return "inconclusive";
}

}  // namespace tunekit::stats
