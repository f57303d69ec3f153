// Next-token cross-entropy fused with the LM head, a chunk of tokens at a time: the logits of a
// chunk are made, reduced to the loss and turned into the gradients of the hidden states and (when
// it trains) the head's weight at once, so the [tokens, vocab] logits and their gradient are never
// held whole (at a 152k vocabulary, 256 tokens' logits alone are 156 MB in float32).
#pragma once
#include <torch/torch.h>

#include "models/lm.h"

namespace tunekit::models {

inline constexpr int64_t kIgnoreIndex = -100;  // targets equal to it carry no loss

// Mean cross-entropy of softmax(hidden · head.weightᵀ + head.bias) against `targets` over the
// targets that are not kIgnoreIndex (0 when there are none). hidden [T, d], targets [T] int64.
// Differentiable in hidden, head.weight and head.bias (each when it requires grad); the same
// value and gradients as cross_entropy(linear(hidden, W, b), targets, ignore_index -100).
torch::Tensor chunked_lm_loss(const torch::Tensor& hidden, const LmHead& head, const torch::Tensor& targets,
                              int64_t chunk);

// The same reduction without gradients, for evaluation: the summed loss, the number of targets
// whose argmax logit is the target, and the number of counted targets.
struct LmLossStats {
  double loss_sum = 0;
  int64_t correct = 0, count = 0;
};
LmLossStats chunked_lm_stats(const torch::Tensor& hidden, const LmHead& head, const torch::Tensor& targets,
                             int64_t chunk);

// Evaluation through the fused head, for the evaluators of every causal-LM objective: the head
// (head() of a causal LM with a plain head; an undefined weight otherwise: the caller then
// evaluates on the logits), the rows one forward takes (batch_size, capped so that a forward holds
// at most kEvalTokens tokens of seq_len; at least 1), and the stats of forward_hidden(in) against
// targets [B, N] (-100: not counted) with that head.
inline constexpr int64_t kEvalTokens = 8192;
LmHead fused_eval_head(Model& model);
int64_t fused_eval_rows(int64_t batch_size, int64_t seq_len);
LmLossStats causal_lm_stats(Model& model, const LmHead& head, const LmInputs& in, const torch::Tensor& targets);

// Next-token targets for ids [B, N]: ids shifted left by one, -100 at each row's last position and
// where the target is pad_id (pad_id < 0: no padding).
torch::Tensor next_token_targets(const torch::Tensor& ids, int64_t pad_id);

// The mean loss of a causal LM on `in` against targets [B, N] (-100: no loss), the one path the
// trainer and the benchmarks share: fused and chunked (chunked_lm_loss over forward_hidden and
// head()) when chunk > 0 and the model offers a plain head, else cross-entropy on the logits of
// forward_lm (or forward(ids) for a model that is not a CausalLm).
torch::Tensor causal_lm_loss(Model& model, const LmInputs& in, const torch::Tensor& targets, int64_t chunk);
// The inputs causal_lm_loss's fused path runs forward_hidden on: `in`, with tied_head_grad set
// when the head's weight trains in this backward (the fused head then gives it a dense gradient).
LmInputs fused_lm_inputs(const LmInputs& in, const LmHead& head);

}  // namespace tunekit::models
