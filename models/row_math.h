#pragma once
// Row primitives shared by tunekit's CPU kernels (models/attention_kernel.cpp, the fused LM loss
// in models/chunked_loss.cpp, models/activation.cpp): an exp for non-positive arguments and row
// reductions, written as plain loops that GCC vectorises. Internal to the .cpp files that include
// it; nothing here is part of the API.
//
// The loops are compiled without trapping maths (GCC then vectorises their compare-and-select and
// float-to-int steps; with trapping maths it keeps them as branches) and inlined into float entry
// points cloned for AVX-512, AVX2 and the baseline (TUNEKIT_ROW_CLONES: chosen when the library
// loads; the build itself targets only the baseline SSE2).
#include <cmath>
#include <cstdint>
#include <cstring>

#define TUNEKIT_ROW_LOOP __attribute__((optimize("no-trapping-math"), always_inline)) inline
#define TUNEKIT_ROW_CLONES __attribute__((optimize("no-trapping-math"), target_clones("avx512f", "avx2", "default")))

namespace tunekit::models::rowmath {

// exp(x) for x <= 0: Cephes' expf polynomial after x = n ln2 + r, written so that the compiler
// vectorises the loops that call it (no branches, truncation instead of floor since x <= 0).
// Below -87.3 it returns exp(-87.3) ~ 1e-38 instead of a denormal or 0. Double uses std::exp.
TUNEKIT_ROW_LOOP float exp_nonpositive(float x) {
  x = x > -87.3f ? x : -87.3f;
  const float n = float(int(x * 1.44269504088896341f - 0.5f));  // round to nearest (x <= 0)
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r * r + r + 1.0f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return e * scale;
}
TUNEKIT_ROW_LOOP double exp_nonpositive(double x) { return std::exp(x); }

// s = sigmoid(v) and q = s (1 - s) from e = exp(-|v|), so the argument of the exp is never
// positive (q = e / (1 + e)^2 for either sign of v, exact where 1 - s would round to 0).
template <typename T>
TUNEKIT_ROW_LOOP void sigmoid_of(T v, T& s, T& q) {
  const T e = exp_nonpositive(v > 0 ? -v : v), inv = T(1) / (T(1) + e);
  s = v >= 0 ? inv : e * inv;
  q = e * inv * inv;
}

// Row reductions with 8 independent partial results (the compiler vectorises them; a single
// accumulator would serialise on the add latency).
template <typename T>
TUNEKIT_ROW_LOOP T row_max(const T* x, int64_t n) {
  T m[8];
  for (int l = 0; l < 8; ++l) m[l] = x[0];
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) m[l] = x[j + l] > m[l] ? x[j + l] : m[l];
  T out = m[0];
  for (int l = 1; l < 8; ++l) out = m[l] > out ? m[l] : out;
  for (; j < n; ++j) out = x[j] > out ? x[j] : out;
  return out;
}

template <typename T>
TUNEKIT_ROW_LOOP T row_dot(const T* x, const T* y, int64_t n) {
  T acc[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) acc[l] += x[j + l] * y[j + l];
  T out = 0;
  for (int l = 0; l < 8; ++l) out += acc[l];
  for (; j < n; ++j) out += x[j] * y[j];
  return out;
}

template <typename T>
TUNEKIT_ROW_LOOP T row_sum(const T* x, int64_t n) {
  T acc[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) acc[l] += x[j + l];
  T out = 0;
  for (int l = 0; l < 8; ++l) out += acc[l];
  for (; j < n; ++j) out += x[j];
  return out;
}

}  // namespace tunekit::models::rowmath
