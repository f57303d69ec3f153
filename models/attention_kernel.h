// The attention core, O = softmax(scale * Q K^T) V or O = sigmoid(scale * Q K^T + b) V per head
// (docs/methods.md §1), as one autograd op that
// calls the BLAS GEMM directly on each (sample, head) block of the [B, N, H*Dh] projections.
// Why: ATen 1.13's CPU bmm loops over the batch with a tensor select + copy per slice (tens of
// thousands of tiny ops per training step at ViT shapes), and splitting heads needs transposed
// copies forward and backward. Here every head is read and written in place through the
// GEMM's leading dimension, and the backward uses transposed GEMMs instead of transposes.
#pragma once
#include <torch/torch.h>

namespace tunekit::models {

// True when a CBLAS GEMM for t's dtype (float or double) was found in the loaded BLAS.
bool attention_kernel_available(const torch::Tensor& t);

// q, k, v: [B, N, heads * Dh], contiguous. Returns [B, N, heads * Dh]. Differentiable in q, k, v.
torch::Tensor softmax_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t heads,
                                double scale);

// Elementwise sigmoid scores with the scalar bias b (a 0-dim tensor; differentiable when it
// requires grad), no row normalisation.
torch::Tensor sigmoid_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                const torch::Tensor& bias, int64_t heads, double scale);

}  // namespace tunekit::models
