// The shared maths of the low-rank adapters: the LoRA branch (LoRA, HoRA) and the
// magnitude/direction decomposition (DoRA, DoRAN), given factors A [r, d_in] and B [d_out, r]
// whether they are parameters or generated. docs/methods.md §5, §7, §9.
#pragma once
#include <torch/torch.h>

namespace tunekit::adapters {

// L2 norm of each output row of a [d_out, d_in] weight (DoRA's ‖·‖_c, docs/methods.md §7).
torch::Tensor row_norm(const torch::Tensor& W);

// h = W x + b + scale * B A drop(x); `dropped` is drop(x) (or x itself when dropout is off).
// For a frozen W in float32/float64 compute (no bf16 scope) this is one hand-written autograd
// node (lowrank.cpp, LowRankLinear); otherwise, or with set_fused_low_rank_enabled(false), the
// composed ATen ops. Both give the same values and gradients.
torch::Tensor low_rank_forward(const torch::Tensor& x, const torch::Tensor& dropped, const torch::Tensor& W,
                               const torch::Tensor& b, const torch::Tensor& A, const torch::Tensor& B, double scale);

void set_fused_low_rank_enabled(bool enabled);
bool fused_low_rank_enabled();

// ‖W + scale·B A‖_c without building B A: ‖W‖² + 2·scale·rowsum((W Aᵀ) ⊙ B) + scale²·rowsum((B A Aᵀ) ⊙ B)
// per row, computed in float32 or wider (outside any bf16 compute scope); differentiable in A and B.
// O(d_out·d_in·r) like B A, but no [d_out, d_in] temporary besides a widened W stored in bf16.
torch::Tensor low_rank_row_norm(const torch::Tensor& W, const torch::Tensor& A, const torch::Tensor& B, double scale);

// W + scale * B A, computed in float32 or wider (docs/methods.md §5).
torch::Tensor low_rank_weight(const torch::Tensor& W, const torch::Tensor& A, const torch::Tensor& B, double scale);

// DoRA / DoRAN: W' = m ⊙ V / (‖V‖_c + tau), V = W + scale * B A; tau undefined = DoRA.
// With `detach_norm` the norm is a constant in backward (DoRA paper §4.3; PEFT does the same).
// Forward in PEFT's form (docs/methods.md §7): the dense W' is never built and the bias is
// not rescaled; with dropout, the base path sees x and the adapter path drop(x).
torch::Tensor decomposed_forward(const torch::Tensor& x, const torch::Tensor& dropped, const torch::Tensor& W,
                                 const torch::Tensor& b, const torch::Tensor& A, const torch::Tensor& B, double scale,
                                 const torch::Tensor& magnitude, const torch::Tensor& tau, bool detach_norm);

// The merged weight m ⊙ V / (‖V‖_c + tau).
torch::Tensor decomposed_weight(const torch::Tensor& W, const torch::Tensor& A, const torch::Tensor& B, double scale,
                                const torch::Tensor& magnitude, const torch::Tensor& tau);

}  // namespace tunekit::adapters
