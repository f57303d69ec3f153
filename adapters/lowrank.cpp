#include "adapters/lowrank.h"

#include <ATen/autocast_mode.h>

#include <atomic>

#include "models/linear.h"
#include "util/error.h"

namespace tunekit::adapters {

namespace {
torch::Tensor wide(const torch::Tensor& t) {
  return t.scalar_type() == torch::kDouble ? t : models::widen_weight(t, torch::kFloat);
}

std::atomic<bool> fused_enabled{true};

// y = x Wᵀ + b + scale·(d Aᵀ) Bᵀ for a frozen W, d = drop(x), as one autograd
// node (docs/methods.md §5): the forward writes the branch into the base product in place
// (addmm_), and the backward forms the rank-r product g B once, scales it and the r-wide
// gradients instead of the [tokens, d_out] ones, and adds the branch's input gradient into the
// base's in place. It saves d, d Aᵀ, W (as stored), A and B, which is what the composed ops keep.
// W gets no gradient; x, d, b, A and B get theirs when they need them.
struct LowRankLinear : torch::autograd::Function<LowRankLinear> {
  // `same`: dropped is x itself (no dropout). An absent bias is no input of the node, so the
  // edges of A and B move down by one (LibTorch numbers the edges of defined inputs only).
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& dropped, const torch::Tensor& W,
                               const c10::optional<torch::Tensor>& bias, const torch::Tensor& A, const torch::Tensor& B,
                               double scale, bool same) {
    const int64_t d_in = x.size(-1), d_out = W.size(0);
    const bool has_b = bias.has_value() && bias->defined();
    auto x2 = x.reshape({-1, d_in});
    auto d2 = same ? x2 : dropped.reshape({-1, d_in});
    auto w = models::narrow_weight(W) ? models::widen_weight(W, x.scalar_type()) : W;
    auto xa = torch::mm(d2, A.t());  // [M, r]
    auto y = has_b ? torch::addmm(*bias, x2, w.t()) : torch::mm(x2, w.t());
    y.addmm_(xa, B.t(), 1.0, scale);
    ctx->save_for_backward({d2, xa, W, A, B});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["same"] = same;
    ctx->saved_data["has_b"] = has_b;
    auto sizes = x.sizes().vec();
    sizes.back() = d_out;
    return y.view(sizes);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &d2 = saved[0], &xa = saved[1], &W = saved[2], &A = saved[3], &B = saved[4];
    const double scale = ctx->saved_data["scale"].toDouble();
    const bool same = ctx->saved_data["same"].toBool(), has_b = ctx->saved_data["has_b"].toBool();
    const int64_t d_in = A.size(1), d_out = B.size(0);
    auto g = grads[0].reshape({-1, d_out});
    torch::Tensor gx, gd, gW, gb, gA, gB;
    const size_t edge_A = has_b ? 4 : 3;  // edges: x, dropped, W, [b], A, B
    const bool want_x = ctx->needs_input_grad(0), want_d = !same && ctx->needs_input_grad(1);
    const bool want_A = ctx->needs_input_grad(edge_A), want_B = ctx->needs_input_grad(edge_A + 1);
    torch::Tensor gxa;  // scale · g B, [M, r]
    if (want_A || want_d || (same && want_x)) gxa = torch::mm(g, B).mul_(scale);
    if (want_A) gA = torch::mm(gxa.t(), d2);
    if (want_B) gB = torch::mm(g.t(), xa).mul_(scale);
    if (has_b && ctx->needs_input_grad(3)) gb = g.sum(0);
    auto input_sizes = [&](const torch::Tensor& t) {
      auto sizes = grads[0].sizes().vec();
      sizes.back() = d_in;
      return t.view(sizes);
    };
    if (want_x) {
      auto w = models::narrow_weight(W) ? models::widen_weight(W, g.scalar_type()) : W;
      gx = torch::mm(g, w);
      if (same) gx.addmm_(gxa, A);
      gx = input_sizes(gx);
    }
    if (want_d) gd = input_sizes(torch::mm(gxa, A));
    return {gx, gd, gW, gb, gA, gB, torch::Tensor(), torch::Tensor()};
  }
};

// The fused node covers what its backward computes: a frozen W (float, double or stored narrow)
// and factors of x's dtype, outside any autocast scope (there the composed ops cast per op).
bool fused_applies(const torch::Tensor& x, const torch::Tensor& W, const torch::Tensor& b, const torch::Tensor& A,
                   const torch::Tensor& B) {
  if (!fused_enabled.load(std::memory_order_relaxed) || at::autocast::is_cpu_enabled()) return false;
  const auto t = x.scalar_type();
  if (t != torch::kFloat && t != torch::kDouble) return false;
  if (W.requires_grad() || W.dim() != 2 || A.dim() != 2 || B.dim() != 2 || x.dim() < 1) return false;
  if (W.scalar_type() != t && !models::narrow_weight(W)) return false;
  if (A.scalar_type() != t || B.scalar_type() != t || (b.defined() && b.scalar_type() != t)) return false;
  return x.device().is_cpu();
}
}  // namespace

void set_fused_low_rank_enabled(bool enabled) { fused_enabled.store(enabled); }
bool fused_low_rank_enabled() { return fused_enabled.load(); }

torch::Tensor row_norm(const torch::Tensor& W) { return torch::linalg_vector_norm(wide(W), 2, {1}, false, c10::nullopt); }

torch::Tensor low_rank_forward(const torch::Tensor& x, const torch::Tensor& dropped, const torch::Tensor& W,
                               const torch::Tensor& b, const torch::Tensor& A, const torch::Tensor& B, double scale) {
  if (fused_applies(x, W, b, A, B))
    return LowRankLinear::apply(x, dropped, W, b.defined() ? c10::optional<torch::Tensor>(b) : c10::nullopt, A, B,
                                scale, dropped.is_same(x));
  auto base = models::base_linear(x, W, b);
  return base + torch::linear(torch::linear(dropped, A), B) * scale;
}

torch::Tensor low_rank_weight(const torch::Tensor& W, const torch::Tensor& A, const torch::Tensor& B, double scale) {
  if (W.scalar_type() == torch::kChar)
    throw Error("merge: the base weight is stored as int8 (model.frozen_dtype: int8); merge into the float32 base "
                "(tunekit merge and export read it from model.from_hf again)");
  return (wide(W) + torch::matmul(wide(B), wide(A)) * scale).to(W.scalar_type());
}

torch::Tensor low_rank_row_norm(const torch::Tensor& W, const torch::Tensor& A, const torch::Tensor& B, double scale) {
  // The norm is the direction's denominator: keep it in float32 even inside a bf16 scope.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  auto w = wide(W), a = wide(A), b = wide(B);
  auto wa = torch::matmul(w, a.t());                      // [d_out, r]
  auto baa = torch::matmul(b, torch::matmul(a, a.t()));  // [d_out, r]
  auto sq = w.pow(2).sum(1) + (2 * scale) * (wa * b).sum(1) + (scale * scale) * (baa * b).sum(1);
  return sq.clamp_min(0).sqrt();
}

torch::Tensor decomposed_forward(const torch::Tensor& x, const torch::Tensor& dropped, const torch::Tensor& W,
                                 const torch::Tensor& b, const torch::Tensor& A, const torch::Tensor& B, double scale,
                                 const torch::Tensor& magnitude, const torch::Tensor& tau, bool detach_norm) {
  torch::Tensor norm;
  {
    torch::AutoGradMode grad_through_norm(!detach_norm && torch::GradMode::is_enabled());
    norm = low_rank_row_norm(W, A, B, scale);
  }
  auto denom = tau.defined() ? norm + tau : norm;
  auto g = (magnitude / denom).to(x.scalar_type());  // [d_out]
  if (dropped.is_same(x) && fused_applies(x, W, {}, A, B)) {
    auto y = g * LowRankLinear::apply(x, x, W, c10::nullopt, A, B, scale, true);
    return b.defined() ? y + b : y;
  }
  auto lora = torch::linear(torch::linear(dropped, A), B) * scale;
  if (dropped.is_same(x)) {
    auto y = g * (models::base_linear(x, W, {}) + lora);
    return b.defined() ? y + b : y;
  }
  // PEFT: base(x) + (g - 1) * (drop(x) W^T) + g * lora
  return models::base_linear(x, W, b) + (g - 1) * models::base_linear(dropped, W, {}) + g * lora;
}

torch::Tensor decomposed_weight(const torch::Tensor& W, const torch::Tensor& A, const torch::Tensor& B, double scale,
                                const torch::Tensor& magnitude, const torch::Tensor& tau) {
  auto V = wide(W) + torch::matmul(wide(B), wide(A)) * scale;
  auto denom = row_norm(V);
  if (tau.defined()) denom = denom + wide(tau);
  return (V * (wide(magnitude) / denom).unsqueeze(1)).to(W.scalar_type());
}

}  // namespace tunekit::adapters
