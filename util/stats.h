// Small statistics shared by sweeps and the estimation lab: mean and sample standard deviation.
#pragma once
#include <cmath>
#include <vector>

namespace tunekit {

inline double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / v.size();
}

inline double stddev(const std::vector<double>& v) {  // n − 1 denominator; 0 below two values
  if (v.size() < 2) return 0;
  double m = mean(v), s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / (v.size() - 1));
}

}  // namespace tunekit
