#include "models/attention_kernel.h"

#include <dlfcn.h>

namespace tunekit::models {

namespace {

// CBLAS, resolved at run time from the BLAS LibTorch already loaded (libblas.so.3).
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
template <typename T>
using GemmFn = void (*)(int, int, int, int, int, int, T, const T*, int, const T*, int, T, T*, int);

template <typename T>
GemmFn<T> gemm() {
  static GemmFn<T> fn =
      reinterpret_cast<GemmFn<T>>(dlsym(RTLD_DEFAULT, std::is_same_v<T, float> ? "cblas_sgemm" : "cblas_dgemm"));
  return fn;
}

// One head's matrix inside a [B, N, C] tensor: rows are tokens, leading dimension C.
struct Shape {
  int64_t B, N, C, H, Dh;
  int64_t head(int64_t b, int64_t h) const { return b * N * C + h * Dh; }
  int64_t square(int64_t b, int64_t h) const { return (b * H + h) * N * N; }
};

template <typename T>
void attention_forward(const Shape& s, const T* q, const T* k, const T* v, T* probs, T* out, double scale,
                       torch::Tensor& probs_tensor, const torch::Tensor& sigmoid_bias) {
  auto g = gemm<T>();
  const int N = int(s.N), C = int(s.C), Dh = int(s.Dh);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h)  // S = scale Q K^T
      g(kRowMajor, kNoTrans, kTrans, N, N, Dh, T(scale), q + s.head(b, h), C, k + s.head(b, h), C, T(0),
        probs + s.square(b, h), N);
  if (sigmoid_bias.defined())
    probs_tensor.add_(sigmoid_bias).sigmoid_();  // P = sigma(S + b), no row normalisation
  else
    at::_softmax_out(probs_tensor, probs_tensor, -1, false);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h)  // O = P V
      g(kRowMajor, kNoTrans, kNoTrans, N, Dh, N, T(1), probs + s.square(b, h), N, v + s.head(b, h), C, T(0),
        out + s.head(b, h), C);
}

template <typename T>
torch::Tensor attention_backward(const Shape& s, const T* q, const T* k, const T* v, const T* probs, const T* dout,
                                 T* dq, T* dk, T* dv, const torch::Tensor& probs_tensor, torch::Tensor& dp_tensor,
                                 double scale, bool sigmoid) {
  auto g = gemm<T>();
  const int N = int(s.N), C = int(s.C), Dh = int(s.Dh);
  T* dp = dp_tensor.data_ptr<T>();
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h) {
      // dV = P^T dO;  dP = dO V^T
      g(kRowMajor, kTrans, kNoTrans, N, Dh, N, T(1), probs + s.square(b, h), N, dout + s.head(b, h), C, T(0),
        dv + s.head(b, h), C);
      g(kRowMajor, kNoTrans, kTrans, N, N, Dh, T(1), dout + s.head(b, h), C, v + s.head(b, h), C, T(0),
        dp + s.square(b, h), N);
    }
  // softmax: dS = P * (dP - rowsum(dP * P));  sigmoid: dS = dP * P * (1 - P)
  auto ds = sigmoid ? torch::sigmoid_backward(dp_tensor, probs_tensor)
                    : torch::_softmax_backward_data(dp_tensor, probs_tensor, -1, probs_tensor.scalar_type());
  const T* pds = ds.template data_ptr<T>();
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h) {
      // dQ = scale dS K;  dK = scale dS^T Q
      g(kRowMajor, kNoTrans, kNoTrans, N, Dh, N, T(scale), pds + s.square(b, h), N, k + s.head(b, h), C, T(0),
        dq + s.head(b, h), C);
      g(kRowMajor, kTrans, kNoTrans, N, Dh, N, T(scale), pds + s.square(b, h), N, q + s.head(b, h), C, T(0),
        dk + s.head(b, h), C);
    }
  return ds;
}

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Inputs: q, k, v and the sigmoid bias (a dummy scalar for softmax: autograd functions take no
// undefined tensors).
struct AttentionCore : public torch::autograd::Function<AttentionCore> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& q_, const torch::Tensor& k_,
                               const torch::Tensor& v_, const torch::Tensor& bias, int64_t heads, double scale,
                               bool sigmoid) {
    auto q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
    Shape s{q.size(0), q.size(1), q.size(2), heads, q.size(2) / heads};
    auto out = torch::empty_like(q);
    auto probs = torch::empty({s.B, s.H, s.N, s.N}, q.options());
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "attention_core", [&] {
      attention_forward<scalar_t>(s, q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                  probs.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), scale, probs,
                                  sigmoid ? bias.detach() : torch::Tensor());
    });
    ctx->save_for_backward({q, k, v, probs});
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["sigmoid"] = sigmoid;
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &probs = saved[3];
    const int64_t heads = ctx->saved_data["heads"].toInt();
    const double scale = ctx->saved_data["scale"].toDouble();
    const bool sigmoid = ctx->saved_data["sigmoid"].toBool();
    Shape s{q.size(0), q.size(1), q.size(2), heads, q.size(2) / heads};
    auto dout = grads[0].contiguous();
    auto dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v);
    auto dp = torch::empty_like(probs);
    torch::Tensor ds;
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "attention_core_backward", [&] {
      ds = attention_backward<scalar_t>(s, q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                        probs.data_ptr<scalar_t>(), dout.data_ptr<scalar_t>(), dq.data_ptr<scalar_t>(),
                                        dk.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>(), probs, dp, scale, sigmoid);
    });
    // The bias is added to every score: its gradient is the sum of dS.
    torch::Tensor dbias = sigmoid && ctx->needs_input_grad(3) ? ds.sum() : torch::Tensor();
    return {dq, dk, dv, dbias, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

bool attention_kernel_available(const torch::Tensor& t) {
  return (t.scalar_type() == torch::kFloat && gemm<float>()) || (t.scalar_type() == torch::kDouble && gemm<double>());
}

namespace {
void check_inputs(const char* op, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t heads) {
  TORCH_CHECK(q.dim() == 3 && q.sizes() == k.sizes() && q.sizes() == v.sizes() && q.size(2) % heads == 0, op,
              ": q, k, v must be [B, N, heads * Dh] of one shape");
  TORCH_CHECK(attention_kernel_available(q), op, ": no CBLAS GEMM for this dtype");
}
}  // namespace

torch::Tensor softmax_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t heads,
                                double scale) {
  check_inputs("softmax_attention", q, k, v, heads);
  return AttentionCore::apply(q, k, v, torch::zeros({}, q.options()), heads, scale, false);
}

torch::Tensor sigmoid_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                const torch::Tensor& bias, int64_t heads, double scale) {
  check_inputs("sigmoid_attention", q, k, v, heads);
  TORCH_CHECK(bias.defined() && bias.numel() == 1, "sigmoid_attention: the bias must be a scalar tensor");
  return AttentionCore::apply(q, k, v, bias, heads, scale, true);
}

}  // namespace tunekit::models
