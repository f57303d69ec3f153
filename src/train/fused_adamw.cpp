#include "src/train/fused_adamw.h"

#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <unordered_set>

#include "util/threads.h"

#pragma GCC optimize("fp-contract=off")

namespace tunekit {
namespace {

using torch::optim::AdamWOptions;
using torch::optim::AdamWParamState;

// The scalars of one parameter's step, converted to the parameter's type as LibTorch's AdamW
// hands them to its ATen calls (c10::Scalar::to: a value beyond float32 throws the same
// std::runtime_error "value cannot be converted to type float without overflow").
template <typename T>
struct Coeffs {
  bool decay = false;  // weight_decay != 0
  T keep{};            // 1 - lr * weight_decay
  T beta1{}, one_minus_beta1{}, beta2{}, one_minus_beta2{};
  T bc2_sqrt{};       // sqrt(1 - beta2^step)
  T eps{};
  T neg_step_size{};  // -lr / (1 - beta1^step)
  T grad_scale{1};    // the gradient is read as g * grad_scale (clip_grad_norm's factor; 1: as it is)
};

template <typename T>
Coeffs<T> coeffs_of(const AdamWOptions& o, int64_t step) {
  const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
  const double bc1 = 1 - std::pow(beta1, step), bc2 = 1 - std::pow(beta2, step);
  auto to = [](double x) { return c10::Scalar(x).to<T>(); };
  Coeffs<T> c;
  c.decay = o.weight_decay() != 0;
  if (c.decay) c.keep = to(1 - o.lr() * o.weight_decay());
  c.beta1 = to(beta1);
  c.one_minus_beta1 = to(1 - beta1);
  c.beta2 = to(beta2);
  c.one_minus_beta2 = to(1 - beta2);
  c.bc2_sqrt = to(std::sqrt(bc2));
  c.eps = to(o.eps());
  c.neg_step_size = to(-(o.lr() / bc1));
  return c;
}

// --- the one-pass kernel, AVX2 + FMA (chosen at run time) ---
// Each line is one of LibTorch 1.13 AdamW's ATen calls, rounded as its CPU kernels (as built for
// this machine) round them, found by comparing them element by element with each candidate:
// p.mul_(keep); exp_avg.mul_(beta1).add_(g, 1 - beta1): fma(g, 1 - beta1, m * beta1);
// exp_avg_sq.mul_(beta2).addcmul_(g, g, 1 - beta2): fma((1 - beta2) * g, g, v * beta2);
// max_out (amsgrad; NaN propagates); denom = sqrt(v) / sqrt(bc2) + eps;
// p.addcdiv_(m, denom, -step): p + (-step * m) / denom, each rounded.
// The compiler must not fuse a multiply into an add on its own (p * keep into the last add, say):
// contraction is off in this file and every fused multiply-add is written out.

struct Vec8 {
  __m256 keep, beta1, omb1, beta2, omb2, bc2_sqrt, eps, neg_step, grad_scale;
};

__attribute__((target("avx2,fma"))) inline Vec8 broadcast(const Coeffs<float>& c) {
  return {_mm256_set1_ps(c.keep),  _mm256_set1_ps(c.beta1),    _mm256_set1_ps(c.one_minus_beta1),
          _mm256_set1_ps(c.beta2), _mm256_set1_ps(c.one_minus_beta2), _mm256_set1_ps(c.bc2_sqrt),
          _mm256_set1_ps(c.eps),   _mm256_set1_ps(c.neg_step_size),   _mm256_set1_ps(c.grad_scale)};
}

template <bool kGrad, bool kDecay, bool kAmsgrad>
__attribute__((target("avx2,fma"), always_inline)) inline void update8(float* p, const float* g, float* m, float* v,
                                                                       float* vmax, const Vec8& c) {
  // g * grad_scale rounded once, as clip_grad_norm_'s grad.mul_(coef) rounds it (x * 1 is x).
  const __m256 grad = kGrad ? _mm256_mul_ps(_mm256_loadu_ps(g), c.grad_scale) : _mm256_setzero_ps();
  __m256 param = _mm256_loadu_ps(p);
  if (kDecay) param = _mm256_mul_ps(param, c.keep);
  const __m256 mean = _mm256_fmadd_ps(grad, c.omb1, _mm256_mul_ps(_mm256_loadu_ps(m), c.beta1));
  const __m256 sq = _mm256_fmadd_ps(_mm256_mul_ps(c.omb2, grad), grad, _mm256_mul_ps(_mm256_loadu_ps(v), c.beta2));
  __m256 second = sq;
  if (kAmsgrad) {
    const __m256 old = _mm256_loadu_ps(vmax);
    second = _mm256_or_ps(_mm256_max_ps(sq, old), _mm256_cmp_ps(sq, old, _CMP_UNORD_Q));
    _mm256_storeu_ps(vmax, second);
  }
  const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(second), c.bc2_sqrt), c.eps);
  param = _mm256_add_ps(param, _mm256_div_ps(_mm256_mul_ps(c.neg_step, mean), denom));
  _mm256_storeu_ps(m, mean);
  _mm256_storeu_ps(v, sq);
  _mm256_storeu_ps(p, param);
}

// Elements [0, n) of one chunk; the last n % 8 go through 8-wide scratch copies.
template <bool kGrad, bool kDecay, bool kAmsgrad>
__attribute__((target("avx2,fma"))) void adamw_avx2(float* p, const float* g, float* m, float* v, float* vmax,
                                                    int64_t n, const Coeffs<float>& coeffs) {
  const Vec8 c = broadcast(coeffs);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    update8<kGrad, kDecay, kAmsgrad>(p + i, kGrad ? g + i : nullptr, m + i, v + i, kAmsgrad ? vmax + i : nullptr, c);
  if (i == n) return;
  const size_t bytes = size_t(n - i) * sizeof(float);
  alignas(32) float tp[8] = {}, tg[8] = {}, tm[8] = {}, tv[8] = {}, tx[8] = {};
  std::memcpy(tp, p + i, bytes);
  if (kGrad) std::memcpy(tg, g + i, bytes);
  std::memcpy(tm, m + i, bytes);
  std::memcpy(tv, v + i, bytes);
  if (kAmsgrad) std::memcpy(tx, vmax + i, bytes);
  update8<kGrad, kDecay, kAmsgrad>(tp, tg, tm, tv, tx, c);
  std::memcpy(p + i, tp, bytes);
  std::memcpy(m + i, tm, bytes);
  std::memcpy(v + i, tv, bytes);
  if (kAmsgrad) std::memcpy(vmax + i, tx, bytes);
}

// The same update one element at a time, for CPUs without AVX2/FMA (as LibTorch's default
// kernels compute it there: no fused multiply-add).
template <bool kGrad, bool kDecay, bool kAmsgrad>
void adamw_scalar(float* p, const float* g, float* m, float* v, float* vmax, int64_t n, const Coeffs<float>& c) {
  for (int64_t i = 0; i < n; ++i) {
    const float grad = kGrad ? g[i] * c.grad_scale : 0.0f;
    float param = kDecay ? p[i] * c.keep : p[i];
    m[i] = m[i] * c.beta1 + c.one_minus_beta1 * grad;
    v[i] = v[i] * c.beta2 + c.one_minus_beta2 * grad * grad;  // without FMA, as LibTorch's default kernels
    float second = v[i];
    if (kAmsgrad) {
      const float old = vmax[i];
      vmax[i] = second = (std::isnan(second) || second > old) ? second : old;
    }
    const float denom = std::sqrt(second) / c.bc2_sqrt + c.eps;
    p[i] = param + c.neg_step_size * m[i] / denom;
  }
}

using Kernel = void (*)(float*, const float*, float*, float*, float*, int64_t, const Coeffs<float>&);

template <bool kGrad, bool kDecay, bool kAmsgrad>
Kernel pick_for(bool avx2) {
  return avx2 ? adamw_avx2<kGrad, kDecay, kAmsgrad> : adamw_scalar<kGrad, kDecay, kAmsgrad>;
}

Kernel pick(bool grad, bool decay, bool amsgrad) {
  static const bool avx2 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  const int k = (grad ? 4 : 0) + (decay ? 2 : 0) + (amsgrad ? 1 : 0);
  switch (k) {
    case 0: return pick_for<false, false, false>(avx2);
    case 1: return pick_for<false, false, true>(avx2);
    case 2: return pick_for<false, true, false>(avx2);
    case 3: return pick_for<false, true, true>(avx2);
    case 4: return pick_for<true, false, false>(avx2);
    case 5: return pick_for<true, false, true>(avx2);
    case 6: return pick_for<true, true, false>(avx2);
    default: return pick_for<true, true, true>(avx2);
  }
}

// A float32 tensor laid out like `p` (contiguous, same sizes), or undefined for `maybe`.
bool fits(const torch::Tensor& t, const torch::Tensor& p, bool maybe = false) {
  if (!t.defined()) return maybe;
  return t.scalar_type() == torch::kFloat && t.device().is_cpu() && !t.is_sparse() && t.is_contiguous() &&
         t.sizes() == p.sizes();
}

// One pass over p, its gradient (none: a zero gradient) and its moments, in chunks split over the
// kernel threads (util/threads.h; memory-bound, so the second core still adds bandwidth).
void fused_update(torch::Tensor& p, const torch::Tensor& grad, AdamWParamState& s, const AdamWOptions& o,
                  float grad_scale) {
  Coeffs<float> c = coeffs_of<float>(o, s.step());
  c.grad_scale = grad_scale;
  const Kernel kernel = pick(grad.defined(), c.decay, o.amsgrad());
  float* pp = p.data_ptr<float>();
  const float* gp = grad.defined() ? grad.data_ptr<float>() : nullptr;
  float* mp = s.exp_avg().data_ptr<float>();
  float* vp = s.exp_avg_sq().data_ptr<float>();
  float* xp = o.amsgrad() ? s.max_exp_avg_sq().data_ptr<float>() : nullptr;
  constexpr int64_t kGrain = 1 << 15;  // elements per task: 128 KiB of each of the 4-5 arrays
  parallel_ranges(p.numel(), kGrain, [&](int64_t begin, int64_t end) {
    kernel(pp + begin, gp ? gp + begin : nullptr, mp + begin, vp + begin, xp ? xp + begin : nullptr, end - begin, c);
  });
  p.unsafeGetTensorImpl()->bump_version();  // as the in-place ATen calls would
}

// torch::optim::AdamW's own ATen calls (LibTorch 1.13), for what the kernel does not take.
void aten_update(torch::Tensor& p, const torch::Tensor& grad_in, AdamWParamState& s, const AdamWOptions& o,
                 float grad_scale) {
  const torch::Tensor grad = grad_in.defined() && grad_scale != 1.0f ? grad_in * grad_scale : grad_in;
  const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
  const double bc1 = 1 - std::pow(beta1, s.step()), bc2 = 1 - std::pow(beta2, s.step());
  if (o.weight_decay() != 0) p.mul_(1 - o.lr() * o.weight_decay());
  s.exp_avg().mul_(beta1);
  s.exp_avg_sq().mul_(beta2);
  if (grad.defined()) {  // a missing gradient is a zero one: m * beta1, v * beta2
    s.exp_avg().add_(grad, 1 - beta1);
    s.exp_avg_sq().addcmul_(grad, grad, 1 - beta2);
  }
  torch::Tensor second = s.exp_avg_sq();
  if (o.amsgrad()) {
    torch::max_out(s.max_exp_avg_sq(), s.exp_avg_sq(), s.max_exp_avg_sq());
    second = s.max_exp_avg_sq();
  }
  const torch::Tensor denom = (second.sqrt() / std::sqrt(bc2)).add_(o.eps());
  p.addcdiv_(s.exp_avg(), denom, -(o.lr() / bc1));
}

// A loaded state must hold moments of the parameter's shape (a [1] moment would broadcast).
void check_state(const AdamWParamState& s, const torch::Tensor& p, const AdamWOptions& o) {
  auto same = [&](const torch::Tensor& t) { return t.defined() && t.sizes() == p.sizes(); };
  TORCH_CHECK(same(s.exp_avg()) && same(s.exp_avg_sq()) && (!o.amsgrad() || same(s.max_exp_avg_sq())),
              "AdamW state does not fit a parameter of shape ", p.sizes(), " (exp_avg ",
              s.exp_avg().defined() ? s.exp_avg().sizes() : at::IntArrayRef{}, ")");
}

std::string tensor_key(const torch::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }

void check_options(const AdamWOptions& o) {
  TORCH_CHECK(o.lr() >= 0, "Invalid learning rate: ", o.lr());
  TORCH_CHECK(o.eps() >= 0, "Invalid epsilon value: ", o.eps());
  TORCH_CHECK(0 <= std::get<0>(o.betas()) && std::get<0>(o.betas()) < 1.0,
              "Invalid beta parameter at index 0: ", std::get<0>(o.betas()));
  TORCH_CHECK(0 <= std::get<1>(o.betas()) && std::get<1>(o.betas()) < 1.0,
              "Invalid beta parameter at index 1: ", std::get<1>(o.betas()));
  TORCH_CHECK(o.weight_decay() >= 0, "Invalid weight_decay value: ", o.weight_decay());
}

}  // namespace

FusedAdamW::FusedAdamW(std::vector<torch::optim::OptimizerParamGroup> param_groups, AdamWOptions defaults)
    : Optimizer(std::move(param_groups), std::make_unique<AdamWOptions>(defaults)) {
  check_options(defaults);
}

FusedAdamW::FusedAdamW(std::vector<torch::Tensor> params, AdamWOptions defaults)
    : FusedAdamW(std::vector<torch::optim::OptimizerParamGroup>{torch::optim::OptimizerParamGroup(std::move(params))},
                 defaults) {}

torch::Tensor FusedAdamW::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    const auto& options = static_cast<const AdamWOptions&>(group.options());
    for (auto& p : group.params()) {
      const torch::Tensor& grad = p.grad();
      auto found = state_.find(tensor_key(p));
      if (!grad.defined() && found == state_.end()) continue;  // never stepped: no state to carry on
      TORCH_CHECK(!grad.defined() || !grad.is_sparse(), "AdamW does not support sparse gradients");
      if (found == state_.end()) {
        auto fresh = std::make_unique<AdamWParamState>();
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        if (options.amsgrad()) fresh->max_exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        found = state_.emplace(tensor_key(p), std::move(fresh)).first;
      }
      auto& s = static_cast<AdamWParamState&>(*found->second);
      check_state(s, p, options);
      s.step(s.step() + 1);
      const bool fused = fits(p, p) && fits(grad, p, /*maybe=*/true) && fits(s.exp_avg(), p) &&
                         fits(s.exp_avg_sq(), p) && (!options.amsgrad() || fits(s.max_exp_avg_sq(), p));
      if (fused)
        fused_update(p, grad, s, options, grad_scale_);
      else
        aten_update(p, grad, s, options, grad_scale_);
    }
  }
  grad_scale_ = 1.0f;
  return loss;
}

void FusedAdamW::scale_next_gradients(float scale) { grad_scale_ = scale; }

void FusedAdamW::zero_grad() {
  for (auto& group : param_groups_)
    for (auto& p : group.params()) p.mutable_grad() = torch::Tensor();
}

void FusedAdamW::save(torch::serialize::OutputArchive& archive) const {
  torch::optim::serialize<AdamWParamState, AdamWOptions>(archive, *this);
}

void FusedAdamW::load(torch::serialize::InputArchive& archive) {
  torch::optim::serialize<AdamWParamState, AdamWOptions>(archive, *this);
}

torch::Tensor global_grad_norm(const std::vector<torch::Tensor>& params) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (const auto& p : params)
    if (p.grad().defined()) norms.push_back(p.grad().norm());
  if (norms.empty()) return {};
  // LibTorch 1.13's clip_grad_norm_ (norm_type 2), expression for expression.
  return norms.size() == 1 ? norms[0] : torch::stack(norms).norm();
}

double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm, torch::optim::Optimizer* optimizer) {
  torch::NoGradGuard no_grad;
  const torch::Tensor total = global_grad_norm(params);
  if (!total.defined()) return 0.0;
  std::unordered_set<const void*> clipped;
  for (const auto& p : params)
    if (p.grad().defined()) clipped.insert(p.unsafeGetTensorImpl());
  // LibTorch's factor, from the same float32 norm.
  const torch::Tensor coef = torch::clamp(max_norm / (total + 1e-6), c10::nullopt, 1.0);
  const double total_norm = total.item<double>();
  auto* fused = dynamic_cast<FusedAdamW*>(optimizer);
  bool hand_over = fused != nullptr && coef.scalar_type() == torch::kFloat && std::isfinite(total_norm);
  if (hand_over) {  // only when the optimizer steps exactly the clipped gradients
    size_t with_grad = 0;
    for (const auto& group : fused->param_groups())
      for (const auto& p : group.params())
        if (p.grad().defined()) {
          ++with_grad;
          hand_over = hand_over && clipped.count(p.unsafeGetTensorImpl()) > 0;
        }
    hand_over = hand_over && with_grad == clipped.size();
  }
  if (hand_over) {
    fused->scale_next_gradients(coef.item<float>());
  } else {
    for (const auto& p : params)
      if (p.grad().defined()) p.grad().mul_(coef);
  }
  return total_norm;
}

void clear_gradients(torch::optim::Optimizer& optimizer) {
  if (auto* fused = dynamic_cast<FusedAdamW*>(&optimizer))
    fused->zero_grad();
  else
    optimizer.zero_grad();
}

}  // namespace tunekit
