#include "adapters/lowrank.h"

#include "models/linear.h"
#include "util/error.h"

namespace tunekit::adapters {

namespace {
torch::Tensor wide(const torch::Tensor& t) {
  return t.scalar_type() == torch::kDouble ? t : models::widen_weight(t, torch::kFloat);
}
}  // namespace

torch::Tensor row_norm(const torch::Tensor& W) { return torch::linalg_vector_norm(wide(W), 2, {1}, false, c10::nullopt); }

torch::Tensor low_rank_forward(const torch::Tensor& x, const torch::Tensor& dropped, const torch::Tensor& W,
                               const torch::Tensor& b, const torch::Tensor& A, const torch::Tensor& B, double scale) {
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
