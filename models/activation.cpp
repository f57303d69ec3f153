#include "models/activation.h"

#include <atomic>

#include "models/row_math.h"
#include "util/threads.h"

namespace tunekit::models {

namespace {

std::atomic<bool> g_fused{true};

constexpr double kSqrt2OverPi = 0.7978845608028654, kCubic = 0.044715;

using rowmath::sigmoid_of;  // sigmoid and its slope s (1 - s)

// Elements per thread below which a loop stays on one thread (util/threads.h).
constexpr int64_t kGrain = int64_t(1) << 16;

// gelu_new's sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3).
template <typename T>
TUNEKIT_ROW_LOOP void sigmoid_2u(T v, T& s, T& q) {
  sigmoid_of(T(2 * kSqrt2OverPi) * (v + T(kCubic) * v * v * v), s, q);
}

template <typename T>
TUNEKIT_ROW_LOOP void gelu_tanh_impl(const T* x, T* y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    T s, q;
    sigmoid_2u(x[j], s, q);
    y[j] = x[j] * s;
  }
}

// d/dx [x s] = s + x q 2u', u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
template <typename T>
TUNEKIT_ROW_LOOP void gelu_tanh_grad_impl(const T* x, const T* g, T* dx, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const T v = x[j];
    T s, q;
    sigmoid_2u(v, s, q);
    const T du = T(2 * kSqrt2OverPi) * (T(1) + T(3 * kCubic) * v * v);
    dx[j] = g[j] * (s + v * q * du);
  }
}

TUNEKIT_ROW_CLONES void gelu_tanh_loop(const float* x, float* y, int64_t n) { gelu_tanh_impl(x, y, n); }
TUNEKIT_ROW_CLONES void gelu_tanh_grad_loop(const float* x, const float* g, float* dx, int64_t n) {
  gelu_tanh_grad_impl(x, g, dx, n);
}
void gelu_tanh_loop(const double* x, double* y, int64_t n) { gelu_tanh_impl(x, y, n); }
void gelu_tanh_grad_loop(const double* x, const double* g, double* dx, int64_t n) { gelu_tanh_grad_impl(x, g, dx, n); }

// silu(g) u, and its gradients dg = go u (s + g s (1 - s)), du = go g s, s = sigmoid(g).
template <typename T>
TUNEKIT_ROW_LOOP void silu_mul_impl(const T* g, const T* u, T* y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    T s, q;
    sigmoid_of(g[j], s, q);
    y[j] = g[j] * s * u[j];
  }
}

template <typename T>
TUNEKIT_ROW_LOOP void silu_mul_grad_impl(const T* g, const T* u, const T* go, T* dg, T* du, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    T s, q;
    sigmoid_of(g[j], s, q);
    dg[j] = go[j] * u[j] * (s + g[j] * q);
    du[j] = go[j] * g[j] * s;
  }
}

TUNEKIT_ROW_CLONES void silu_mul_loop(const float* g, const float* u, float* y, int64_t n) { silu_mul_impl(g, u, y, n); }
TUNEKIT_ROW_CLONES void silu_mul_grad_loop(const float* g, const float* u, const float* go, float* dg, float* du,
                                           int64_t n) {
  silu_mul_grad_impl(g, u, go, dg, du, n);
}
void silu_mul_loop(const double* g, const double* u, double* y, int64_t n) { silu_mul_impl(g, u, y, n); }
void silu_mul_grad_loop(const double* g, const double* u, const double* go, double* dg, double* du, int64_t n) {
  silu_mul_grad_impl(g, u, go, dg, du, n);
}

bool takes_loop(const torch::Tensor& x) {
  return g_fused.load(std::memory_order_relaxed) && x.device().is_cpu() && x.layout() == torch::kStrided &&
         (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble);
}

struct GeluTanh : torch::autograd::Function<GeluTanh> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x_in) {
    const auto x = x_in.contiguous();
    ctx->save_for_backward({x});
    auto y = torch::empty_like(x, at::MemoryFormat::Contiguous);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gelu_tanh", [&] {
      const scalar_t* xp = x.data_ptr<scalar_t>();
      scalar_t* yp = y.data_ptr<scalar_t>();
      parallel_ranges(x.numel(), kGrain, [&](int64_t b, int64_t e) { gelu_tanh_loop(xp + b, yp + b, e - b); });
    });
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto x = ctx->get_saved_variables()[0];
    const auto& go = grads[0];
    // Building a graph of the backward (double backward): ATen's differentiable formula.
    if (torch::GradMode::is_enabled()) return {at::gelu_backward(go, x, "tanh")};
    const auto g = go.to(x.scalar_type()).contiguous();
    auto dx = torch::empty_like(x, at::MemoryFormat::Contiguous);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gelu_tanh_backward", [&] {
      const scalar_t *xp = x.data_ptr<scalar_t>(), *gp = g.data_ptr<scalar_t>();
      scalar_t* dxp = dx.data_ptr<scalar_t>();
      parallel_ranges(x.numel(), kGrain,
                      [&](int64_t b, int64_t e) { gelu_tanh_grad_loop(xp + b, gp + b, dxp + b, e - b); });
    });
    return {dx};
  }
};

struct SiluMul : torch::autograd::Function<SiluMul> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& gate_in,
                               const torch::Tensor& up_in) {
    const auto gate = gate_in.contiguous(), up = up_in.contiguous();
    ctx->save_for_backward({gate, up});
    auto y = torch::empty_like(gate, at::MemoryFormat::Contiguous);
    AT_DISPATCH_FLOATING_TYPES(gate.scalar_type(), "silu_mul", [&] {
      const scalar_t *gp = gate.data_ptr<scalar_t>(), *up_p = up.data_ptr<scalar_t>();
      scalar_t* yp = y.data_ptr<scalar_t>();
      parallel_ranges(gate.numel(), kGrain,
                      [&](int64_t b, int64_t e) { silu_mul_loop(gp + b, up_p + b, yp + b, e - b); });
    });
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &gate = saved[0], &up = saved[1];
    const auto& go = grads[0];
    if (torch::GradMode::is_enabled()) {  // a graph of the backward: ATen's differentiable ops
      const auto s = torch::sigmoid(gate);
      return {go * up * (s * (1 + gate * (1 - s))), go * gate * s};
    }
    const auto g = go.to(gate.scalar_type()).contiguous();
    auto dgate = torch::empty_like(gate, at::MemoryFormat::Contiguous), dup = torch::empty_like(up, at::MemoryFormat::Contiguous);
    AT_DISPATCH_FLOATING_TYPES(gate.scalar_type(), "silu_mul_backward", [&] {
      const scalar_t *gp = gate.data_ptr<scalar_t>(), *up_p = up.data_ptr<scalar_t>(), *gop = g.data_ptr<scalar_t>();
      scalar_t *dgp = dgate.data_ptr<scalar_t>(), *dup_p = dup.data_ptr<scalar_t>();
      parallel_ranges(gate.numel(), kGrain, [&](int64_t b, int64_t e) {
        silu_mul_grad_loop(gp + b, up_p + b, gop + b, dgp + b, dup_p + b, e - b);
      });
    });
    return {dgate, dup};
  }
};

}  // namespace

torch::Tensor silu_mul(const torch::Tensor& gate, const torch::Tensor& up) {
  if (!takes_loop(gate) || !takes_loop(up) || gate.scalar_type() != up.scalar_type() || gate.sizes() != up.sizes() ||
      gate.device() != up.device() || gate.numel() == 0)
    return torch::silu(gate) * up;
  return SiluMul::apply(gate, up);
}

torch::Tensor gelu_tanh(const torch::Tensor& x) {
  if (!takes_loop(x) || x.numel() == 0) return torch::gelu(x, "tanh");
  return GeluTanh::apply(x);
}

void set_fused_activation_enabled(bool enabled) { g_fused.store(enabled, std::memory_order_relaxed); }
bool fused_activation_enabled() { return g_fused.load(std::memory_order_relaxed); }

}  // namespace tunekit::models
