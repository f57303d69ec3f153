#include "models/attention_kernel.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "models/row_math.h"
#include "util/threads.h"

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

namespace {
std::atomic<bool> kernel_enabled{true};
}  // namespace

void set_attention_kernel_enabled(bool enabled) { kernel_enabled = enabled; }
bool attention_kernel_enabled() { return kernel_enabled; }

bool attention_kernel_available(torch::ScalarType dtype, torch::Device device) {
  if (!kernel_enabled || !device.is_cpu()) return false;  // the kernel reads host memory
  return (dtype == torch::kFloat && gemm<float>()) || (dtype == torch::kDouble && gemm<double>());
}

bool attention_kernel_available(const torch::Tensor& t) { return attention_kernel_available(t.scalar_type(), t.device()); }

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

// ---- Causal grouped-query attention (causal_attention) ----
namespace {

constexpr int64_t kRowBlock = 64;

// The row loops: models/row_math.h.
using rowmath::exp_nonpositive;
using rowmath::row_dot;
using rowmath::row_max;
using rowmath::row_sum;
using rowmath::sigmoid_of;

// Softmax of one row's visible scores in place: max, then exp, then the sum and the scale.
template <typename T>
TUNEKIT_ROW_LOOP void softmax_row_impl(T* x, int64_t n) {
  const T m = row_max(x, n);
  for (int64_t j = 0; j < n; ++j) x[j] = exp_nonpositive(x[j] - m);
  const T inv = T(1) / row_sum(x, n);
  for (int64_t j = 0; j < n; ++j) x[j] *= inv;
}

// P = sigmoid(S + b) of one row's visible scores in place, as exp(-|y|) so the argument is <= 0.
template <typename T>
TUNEKIT_ROW_LOOP void sigmoid_row_impl(T* x, int64_t n, T bias) {
  for (int64_t j = 0; j < n; ++j) {
    T s, slope;
    sigmoid_of(x[j] + bias, s, slope);
    x[j] = s;
  }
}

// Softmax backward of one row in place: dS = P (dP - sum_j dP_j P_j).
template <typename T>
TUNEKIT_ROW_LOOP void softmax_grad_row_impl(T* d, const T* p, int64_t n) {
  const T dot = row_dot(d, p, n);
  for (int64_t j = 0; j < n; ++j) d[j] = p[j] * (d[j] - dot);
}

// Sigmoid backward of one row in place, dS = dP P (1 - P); returns the row's sum of dS.
template <typename T>
TUNEKIT_ROW_LOOP T sigmoid_grad_row_impl(T* d, const T* p, int64_t n) {
  for (int64_t j = 0; j < n; ++j) d[j] *= p[j] * (T(1) - p[j]);
  return row_sum(d, n);
}

TUNEKIT_ROW_CLONES void softmax_row(float* x, int64_t n) { softmax_row_impl(x, n); }
TUNEKIT_ROW_CLONES void sigmoid_row(float* x, int64_t n, float bias) { sigmoid_row_impl(x, n, bias); }
TUNEKIT_ROW_CLONES void softmax_grad_row(float* d, const float* p, int64_t n) { softmax_grad_row_impl(d, p, n); }
TUNEKIT_ROW_CLONES float sigmoid_grad_row(float* d, const float* p, int64_t n) { return sigmoid_grad_row_impl(d, p, n); }
void softmax_row(double* x, int64_t n) { softmax_row_impl(x, n); }
void sigmoid_row(double* x, int64_t n, double bias) { sigmoid_row_impl(x, n, bias); }
void softmax_grad_row(double* d, const double* p, int64_t n) { softmax_grad_row_impl(d, p, n); }
double sigmoid_grad_row(double* d, const double* p, int64_t n) { return sigmoid_grad_row_impl(d, p, n); }

// Which keys each row block multiplies against and where its probabilities live. Block t of
// sample b covers queries [t*64, t*64 + rows) and keys [first_key, t*64 + rows): first_key is the
// smallest key start of its rows (0 without segments), so the masked upper triangle beyond the
// block's last row is never computed. Its probabilities are a rows x width matrix at
// probs + base[b] + head * per_head[b] + offset[b * blocks + t].
struct CausalPlan {
  int64_t B = 0, N = 0, H = 0, KV = 0, Dh = 0, blocks = 0;
  const int64_t* starts = nullptr;  // [B, N] or null (all 0)
  std::vector<int64_t> first_key, offset, per_head, base;
  int64_t total = 0;

  int64_t start(int64_t b, int64_t i) const { return starts ? starts[b * N + i] : 0; }
  int64_t rows(int64_t t) const { return std::min(kRowBlock, N - t * kRowBlock); }
  int64_t width(int64_t b, int64_t t) const { return t * kRowBlock + rows(t) - first_key[b * blocks + t]; }
};

CausalPlan plan_causal(int64_t B, int64_t N, int64_t H, int64_t KV, int64_t Dh, const torch::Tensor& starts) {
  CausalPlan p;
  p.B = B, p.N = N, p.H = H, p.KV = KV, p.Dh = Dh, p.blocks = (N + kRowBlock - 1) / kRowBlock;
  if (starts.defined()) p.starts = starts.data_ptr<int64_t>();
  p.first_key.resize(B * p.blocks);
  p.offset.resize(B * p.blocks);
  p.per_head.resize(B);
  p.base.resize(B);
  for (int64_t b = 0; b < B; ++b) {
    int64_t area = 0;
    for (int64_t t = 0; t < p.blocks; ++t) {
      int64_t first = t * kRowBlock;
      for (int64_t i = t * kRowBlock; i < t * kRowBlock + p.rows(t); ++i) first = std::min(first, p.start(b, i));
      p.first_key[b * p.blocks + t] = first;
      p.offset[b * p.blocks + t] = area;
      area += p.rows(t) * p.width(b, t);
    }
    p.per_head[b] = area;
    p.base[b] = p.total;
    p.total += H * area;
  }
  return p;
}

// The pointers of one (sample, head, row block): its queries, its keys / values from first_key,
// and its probabilities; ldq = H*Dh and ldk = KV*Dh are the GEMMs' leading dimensions.
struct CausalBlock {
  int64_t r0, rows, first, width, ldq, ldk, q_off, kv_off, p_off;
};

CausalBlock causal_block(const CausalPlan& p, int64_t b, int64_t h, int64_t t) {
  CausalBlock c;
  c.r0 = t * kRowBlock, c.rows = p.rows(t), c.first = p.first_key[b * p.blocks + t], c.width = p.width(b, t);
  c.ldq = p.H * p.Dh, c.ldk = p.KV * p.Dh;
  c.q_off = (b * p.N + c.r0) * c.ldq + h * p.Dh;
  c.kv_off = (b * p.N + c.first) * c.ldk + (h / (p.H / p.KV)) * p.Dh;
  c.p_off = p.base[b] + h * p.per_head[b] + p.offset[b * p.blocks + t];
  return c;
}

// The work is split over (sample, query head) in forward and (sample, key/value head) in backward,
// whose writes never overlap, across util/threads.h's kernel threads, each GEMM on its own thread:
// the row blocks' products are too small (64 rows, 64 deep) for OpenBLAS to split one well.
template <typename T>
void causal_forward(const CausalPlan& p, const T* q, const T* k, const T* v, T* probs, T* out, double scale,
                    bool sigmoid, double bias) {
  auto g = gemm<T>();
  auto heads = [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u)
      for (int64_t b = u / p.H, h = u % p.H, t = 0; t < p.blocks; ++t) {
        const auto c = causal_block(p, b, h, t);
        T* P = probs + c.p_off;
        const int M = int(c.rows), W = int(c.width), Dh = int(p.Dh), ldq = int(c.ldq), ldk = int(c.ldk);
        // S = scale Q_block K[first, last row]^T
        g(kRowMajor, kNoTrans, kTrans, M, W, Dh, T(scale), q + c.q_off, ldq, k + c.kv_off, ldk, T(0), P, W);
        for (int64_t r = 0; r < c.rows; ++r) {  // row i sees keys [start(i), i]: columns [lo, hi]
          const int64_t i = c.r0 + r, lo = p.start(b, i) - c.first, hi = i - c.first;
          T* row = P + r * c.width;
          std::fill(row, row + lo, T(0));
          std::fill(row + hi + 1, row + c.width, T(0));
          if (sigmoid)
            sigmoid_row(row + lo, hi - lo + 1, T(bias));
          else
            softmax_row(row + lo, hi - lo + 1);
        }
        // O_block = P V[first, last row]
        g(kRowMajor, kNoTrans, kNoTrans, M, Dh, W, T(1), P, W, v + c.kv_off, ldk, T(0), out + c.q_off, ldq);
      }
  };
  parallel_ranges(p.B * p.H, 1, heads, /*serial_blas=*/true);
}

// dq is written, dk and dv accumulated (zeroed by the caller): the R query heads of a key/value
// head and the row blocks each add their part. Returns the sum of dS (the sigmoid bias's gradient).
template <typename T>
double causal_backward(const CausalPlan& p, const T* q, const T* k, const T* v, const T* probs, const T* dout, T* dq,
                       T* dk, T* dv, double scale, bool sigmoid) {
  auto g = gemm<T>();
  const int64_t group = p.H / p.KV;
  std::vector<double> dbias(size_t(p.B * p.KV), 0.0);  // per unit, added in order after
  auto kv_heads = [&](int64_t u0, int64_t u1) {
    std::vector<T> scratch(size_t(kRowBlock * p.N));
    T* ds = scratch.data();
    for (int64_t u = u0; u < u1; ++u)
      for (int64_t b = u / p.KV, h = (u % p.KV) * group; h < (u % p.KV + 1) * group; ++h)
        for (int64_t t = 0; t < p.blocks; ++t) {
          const auto c = causal_block(p, b, h, t);
          const T* P = probs + c.p_off;
          const int M = int(c.rows), W = int(c.width), Dh = int(p.Dh), ldq = int(c.ldq), ldk = int(c.ldk);
          // dV[keys] += P^T dO_block;  dP = dO_block V[keys]^T
          g(kRowMajor, kTrans, kNoTrans, W, Dh, M, T(1), P, W, dout + c.q_off, ldq, T(1), dv + c.kv_off, ldk);
          g(kRowMajor, kNoTrans, kTrans, M, W, Dh, T(1), dout + c.q_off, ldq, v + c.kv_off, ldk, T(0), ds, W);
          for (int64_t r = 0; r < c.rows; ++r) {
            const int64_t i = c.r0 + r, lo = p.start(b, i) - c.first, n = i - c.first - lo + 1;
            T* row = ds + r * c.width;
            const T* pr = P + r * c.width;
            std::fill(row, row + lo, T(0));
            std::fill(row + lo + n, row + c.width, T(0));
            if (sigmoid)
              dbias[size_t(u)] += double(sigmoid_grad_row(row + lo, pr + lo, n));
            else
              softmax_grad_row(row + lo, pr + lo, n);
          }
          // dQ_block = scale dS K[keys];  dK[keys] += scale dS^T Q_block
          g(kRowMajor, kNoTrans, kNoTrans, M, Dh, W, T(scale), ds, W, k + c.kv_off, ldk, T(0), dq + c.q_off, ldq);
          g(kRowMajor, kTrans, kNoTrans, W, Dh, M, T(scale), ds, W, q + c.q_off, ldq, T(1), dk + c.kv_off, ldk);
        }
  };
  parallel_ranges(p.B * p.KV, 1, kv_heads, /*serial_blas=*/true);
  double total = 0;
  for (double d : dbias) total += d;
  return total;
}

// Inputs: q, k, v, the sigmoid bias (a dummy scalar for softmax) and the key starts (an empty
// tensor when there are none): autograd functions take no undefined tensors.
struct CausalCore : public torch::autograd::Function<CausalCore> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& q_, const torch::Tensor& k_,
                               const torch::Tensor& v_, const torch::Tensor& bias, const torch::Tensor& starts,
                               int64_t heads, int64_t kv_heads, double scale, bool sigmoid) {
    auto q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
    const auto p = plan_causal(q.size(0), q.size(1), heads, kv_heads, q.size(2) / heads,
                               starts.numel() ? starts : torch::Tensor());
    auto out = torch::empty_like(q);
    auto probs = torch::empty({p.total}, q.options());
    const double b = sigmoid ? bias.item<double>() : 0.0;
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "causal_attention", [&] {
      causal_forward<scalar_t>(p, q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                               probs.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), scale, sigmoid, b);
    });
    ctx->save_for_backward({q, k, v, probs, starts});
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["kv_heads"] = kv_heads;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["sigmoid"] = sigmoid;
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &probs = saved[3], &starts = saved[4];
    const int64_t heads = ctx->saved_data["heads"].toInt();
    const bool sigmoid = ctx->saved_data["sigmoid"].toBool();
    const double scale = ctx->saved_data["scale"].toDouble();
    const auto p = plan_causal(q.size(0), q.size(1), heads, ctx->saved_data["kv_heads"].toInt(), q.size(2) / heads,
                               starts.numel() ? starts : torch::Tensor());
    auto dout = grads[0].contiguous();
    auto dq = torch::empty_like(q), dk = torch::zeros_like(k), dv = torch::zeros_like(v);
    double dbias = 0;
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "causal_attention_backward", [&] {
      dbias = causal_backward<scalar_t>(p, q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                        probs.data_ptr<scalar_t>(), dout.data_ptr<scalar_t>(), dq.data_ptr<scalar_t>(),
                                        dk.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>(), scale, sigmoid);
    });
    torch::Tensor db = sigmoid && ctx->needs_input_grad(3) ? torch::full({}, dbias, q.options()) : torch::Tensor();
    return {dq, dk, dv, db, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t heads,
                               int64_t kv_heads, double scale, const torch::Tensor& key_starts,
                               const torch::Tensor& sigmoid_bias) {
  TORCH_CHECK(heads > 0 && kv_heads > 0 && heads % kv_heads == 0, "causal_attention: ", heads,
              " query heads cannot share ", kv_heads, " key/value heads");
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && q.size(2) % heads == 0 && k.sizes() == v.sizes() &&
                  k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(2) * heads == q.size(2) * kv_heads,
              "causal_attention: q must be [B, N, heads * Dh] and k, v [B, N, kv_heads * Dh]");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type() && attention_kernel_available(q),
              "causal_attention: no CBLAS GEMM for this dtype (float or double, all three alike)");
  torch::Tensor starts = torch::empty({0}, q.options().dtype(torch::kLong));
  if (key_starts.defined()) {
    TORCH_CHECK(key_starts.scalar_type() == torch::kLong && key_starts.dim() == 2 && key_starts.size(0) == q.size(0) &&
                    key_starts.size(1) == q.size(1),
                "causal_attention: key_starts must be [B, N] int64");
    starts = key_starts.contiguous();
    auto index = torch::arange(q.size(1), starts.options());
    TORCH_CHECK(((starts >= 0) & (starts <= index)).all().item<bool>(),
                "causal_attention: key_starts[b, i] must lie in 0..i");
  }
  const bool sigmoid = sigmoid_bias.defined();
  TORCH_CHECK(!sigmoid || sigmoid_bias.numel() == 1, "causal_attention: the sigmoid bias must be a scalar tensor");
  auto bias = sigmoid ? sigmoid_bias.reshape({}) : torch::zeros({}, q.options());
  return CausalCore::apply(q, k, v, bias, starts, heads, kv_heads, scale, sigmoid);
}

}  // namespace tunekit::models
