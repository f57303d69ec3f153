#include "adapters/lowrank.h"

namespace tunekit::adapters {

namespace {
torch::Tensor wide(const torch::Tensor& t) {
  return t.scalar_type() == torch::kDouble ? t : t.to(torch::kFloat);
}
}  // namespace

torch::Tensor row_norm(const torch::Tensor& W) { return torch::linalg_vector_norm(wide(W), 2, {1}, false, c10::nullopt); }

torch::Tensor low_rank_forward(const torch::Tensor& x, const torch::Tensor& dropped, const torch::Tensor& W,
                               const torch::Tensor& b, const torch::Tensor& A, const torch::Tensor& B, double scale) {
  auto base = torch::linear(x, W, b);
  return base + torch::linear(torch::linear(dropped, A), B) * scale;
}

torch::Tensor low_rank_weight(const torch::Tensor& W, const torch::Tensor& A, const torch::Tensor& B, double scale) {
  return (wide(W) + torch::matmul(wide(B), wide(A)) * scale).to(W.scalar_type());
}

torch::Tensor decomposed_forward(const torch::Tensor& x, const torch::Tensor& dropped, const torch::Tensor& W,
                                 const torch::Tensor& b, const torch::Tensor& A, const torch::Tensor& B, double scale,
                                 const torch::Tensor& magnitude, const torch::Tensor& tau, bool detach_norm) {
  torch::Tensor norm;
  if (detach_norm) {
    torch::NoGradGuard no_grad;
    norm = row_norm(low_rank_weight(W, A, B, scale));
  } else {
    norm = row_norm(wide(W) + torch::matmul(wide(B), wide(A)) * scale);
  }
  auto denom = tau.defined() ? norm + tau : norm;
  auto g = (magnitude / denom).to(x.scalar_type());  // [d_out]
  auto lora = torch::linear(torch::linear(dropped, A), B) * scale;
  if (dropped.is_same(x)) {
    auto y = g * (torch::linear(x, W) + lora);
    return b.defined() ? y + b : y;
  }
  // PEFT: base(x) + (g - 1) * (drop(x) W^T) + g * lora
  return torch::linear(x, W, b) + (g - 1) * torch::linear(dropped, W) + g * lora;
}

torch::Tensor decomposed_weight(const torch::Tensor& W, const torch::Tensor& A, const torch::Tensor& B, double scale,
                                const torch::Tensor& magnitude, const torch::Tensor& tau) {
  auto V = wide(W) + torch::matmul(wide(B), wide(A)) * scale;
  auto denom = row_norm(V);
  if (tau.defined()) denom = denom + wide(tau);
  return (V * (wide(magnitude) / denom).unsqueeze(1)).to(W.scalar_type());
}

}  // namespace tunekit::adapters
