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

// True when the device is the CPU, a CBLAS GEMM for the dtype (float or double) was found in the
// loaded BLAS and the kernel is enabled (set_attention_kernel_enabled).
bool attention_kernel_available(torch::ScalarType dtype, torch::Device device);
// The same for t's dtype and device.
bool attention_kernel_available(const torch::Tensor& t);

// q, k, v: [B, N, heads * Dh], contiguous. Returns [B, N, heads * Dh]. Differentiable in q, k, v.
torch::Tensor softmax_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t heads,
                                double scale);

// Elementwise sigmoid scores with the scalar bias b (a 0-dim tensor; differentiable when it
// requires grad), no row normalisation.
torch::Tensor sigmoid_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                const torch::Tensor& bias, int64_t heads, double scale);

// A process-wide switch (default on): off, attention_kernel_available() is false and every
// caller takes its ATen path (tests and bench/bench_attention.cpp compare both).
void set_attention_kernel_enabled(bool enabled);
bool attention_kernel_enabled();

// Causal grouped-query attention, O = softmax(scale * Q K^T) V per head (or sigmoid(scale * Q K^T
// + b) V when sigmoid_bias, a scalar tensor, is defined) with query i seeing keys
// [key_starts[b, i], i] only. q [B, N, heads * Dh]; k, v [B, N, kv_heads * Dh] (query head h reads
// key/value head h / (heads / kv_heads), as Hugging Face's repeat_kv), all read in place. Works in
// row blocks of 64 queries, each multiplied only against the keys up to its last row, with a fused
// row softmax over each row's visible keys; saves only those probabilities for the backward.
// key_starts: [B, N] int64 with 0 <= key_starts[b, i] <= i (packed segments: each token's segment
// start); undefined: 0 (plain causal). Differentiable in q, k, v and the sigmoid bias.
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t heads,
                               int64_t kv_heads, double scale, const torch::Tensor& key_starts = {},
                               const torch::Tensor& sigmoid_bias = {});

}  // namespace tunekit::models
