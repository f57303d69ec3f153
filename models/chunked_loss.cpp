#include "models/chunked_loss.h"

#include <ATen/autocast_mode.h>
#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "models/linear.h"
#include "models/row_math.h"
#include "util/error.h"
#include "util/threads.h"

namespace tunekit::models {

namespace {

// A chunk's float32 logits stay under 256 MiB. The head's products re-pack the whole [V, d] weight
// for every chunk, so rows per chunk set their speed: at Qwen2's vocabulary 110 rows (64 MiB) ran
// the forward product at 140 GFLOP/s and 256 rows at 182 (sgemm peak 287); a Qwen2.5-0.5B LoRA step
// took 2.4-2.5 s with whole 256-token chunks against 2.7-3.1 s with 110-row ones, for +24 MiB of
// peak RSS (GPT-2-small, 1,024 tokens at once: +64 MiB).
constexpr int64_t kChunkLogitBytes = 256LL << 20;

// Tokens per chunk: at most `chunk` (train.loss_chunk), and fewer when the chunk's logits would
// pass kChunkLogitBytes.
int64_t chunk_rows(int64_t chunk, int64_t vocab) {
  return std::max<int64_t>(16, std::min<int64_t>(chunk, kChunkLogitBytes / (4 * std::max<int64_t>(vocab, 1))));
}

// The dtype the head's products run in: the bf16 compute scope's (models/precision.h) or hidden's.
torch::ScalarType product_dtype(const torch::Tensor& hidden) {
  return at::autocast::is_cpu_enabled() ? at::autocast::get_autocast_cpu_dtype() : hidden.scalar_type();
}

void check_inputs(const torch::Tensor& hidden, const LmHead& head, const torch::Tensor& targets) {
  if (!head.weight.defined()) throw Error("chunked_lm_loss: the head has no plain weight (an adapter on it)");
  // A head stored as packed int8 rows (models/linear.h) carries 4 scale bytes after each row.
  const int64_t width = head.weight.dim() == 2 ? head.weight.size(1) - (head.weight.scalar_type() == torch::kChar ? 4 : 0) : -1;
  if (hidden.dim() != 2 || head.weight.dim() != 2 || hidden.size(1) != width)
    throw Error(fmt::format("chunked_lm_loss: hidden {} does not fit the head's weight {}", c10::str(hidden.sizes()),
                            c10::str(head.weight.sizes())));
  if (targets.dim() != 1 || targets.size(0) != hidden.size(0) || targets.scalar_type() != torch::kLong)
    throw Error(fmt::format("chunked_lm_loss: targets must be int64 [{}], got {} {}", hidden.size(0),
                            c10::toString(targets.scalar_type()), c10::str(targets.sizes())));
}

// The dtype the reductions run in: float32, or double for double inputs.
torch::ScalarType reduce_dtype(const torch::Tensor& hidden) {
  return hidden.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
}

// One chunk's logits [rows, V] in `wide` (the reduction dtype).
torch::Tensor chunk_logits(const torch::Tensor& hidden_c, const torch::Tensor& W_c, const torch::Tensor& bias,
                           torch::ScalarType wide) {
  auto logits = torch::matmul(hidden_c, W_c.t()).to(wide);
  if (bias.defined()) logits.add_(bias.to(wide));
  return logits;
}

// Cross-entropy over one chunk's logits [rows, n], row by row while the row (n floats: 200 KB
// for GPT-2's vocabulary, 600 KB for Qwen2's) sits in the core's cache: the maximum, the sum of
// exponentials, and with `grad` the row turned in place into w (softmax - onehot(target)). Rows
// whose target is kIgnoreIndex add no loss and get a zero gradient. Returns the sum over the
// counted rows of logsumexp(row) - row[target]. The sum of exponentials is added in blocks of 512
// into a double, so it is as exact as ATen's cascade sum over a vocabulary of 150 k.
template <typename T>
TUNEKIT_ROW_LOOP double cross_entropy_rows_impl(T* x, int64_t rows, int64_t n, const int64_t* targets, T w,
                                                bool grad) {
  using namespace rowmath;
  constexpr int64_t kBlock = 512;
  double loss = 0;
  for (int64_t i = 0; i < rows; ++i) {
    T* row = x + i * n;
    const int64_t t = targets[i];
    if (t == kIgnoreIndex) {
      if (grad) std::memset(row, 0, sizeof(T) * size_t(n));
      continue;
    }
    const T m = row_max(row, n), xt = row[t];
    double s = 0;
    T scratch[kBlock];  // without a gradient the row is left as it is
    for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
      const int64_t len = std::min(kBlock, n - j0);
      T* e = grad ? row + j0 : scratch;
      for (int64_t j = 0; j < len; ++j) e[j] = exp_nonpositive(row[j0 + j] - m);
      s += double(row_sum(e, len));
    }
    loss += double(m) + std::log(s) - double(xt);
    if (grad) {
      const T scale = T(double(w) / s);
      for (int64_t j = 0; j < n; ++j) row[j] *= scale;
      row[t] -= w;
    }
  }
  return loss;
}

TUNEKIT_ROW_CLONES double cross_entropy_rows(float* x, int64_t rows, int64_t n, const int64_t* targets, float w,
                                             bool grad) {
  return cross_entropy_rows_impl(x, rows, n, targets, w, grad);
}
double cross_entropy_rows(double* x, int64_t rows, int64_t n, const int64_t* targets, double w, bool grad) {
  return cross_entropy_rows_impl(x, rows, n, targets, w, grad);
}

// The chunk's summed loss, and with `grad` its logits turned into d loss / d logits in place. The
// rows are split across the kernel threads (util/threads.h) in blocks of kRowsPerTask; the blocks'
// losses are added in row order, so the sum does not depend on the number of threads.
double chunk_cross_entropy(torch::Tensor& logits, const torch::Tensor& targets, int64_t count, bool grad) {
  TORCH_INTERNAL_ASSERT(logits.is_contiguous() && targets.is_contiguous() && targets.scalar_type() == torch::kLong);
  TORCH_INTERNAL_ASSERT(logits.scalar_type() == torch::kDouble || logits.scalar_type() == torch::kFloat);
  constexpr int64_t kRowsPerTask = 8;
  const int64_t rows = logits.size(0), n = logits.size(1), tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  const int64_t* t = targets.data_ptr<int64_t>();
  std::vector<double> losses(size_t(tasks), 0.0);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "chunk_cross_entropy", [&] {
    scalar_t* x = logits.data_ptr<scalar_t>();
    const auto w = scalar_t(1.0 / double(count));
    parallel_ranges(tasks, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t r0 = k * kRowsPerTask, r = std::min(kRowsPerTask, rows - r0);
        losses[size_t(k)] = cross_entropy_rows(x + r0 * n, r, n, t + r0, w, grad);
      }
    });
  });
  double loss = 0;
  for (double l : losses) loss += l;
  return loss;
}

// The loss and every gradient in one pass over the chunks, in forward; backward scales them by
// the loss's incoming gradient. `grad`: autograd was on at the call (it is off inside forward).
struct FusedLmLoss : torch::autograd::Function<FusedLmLoss> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& hidden,
                               const torch::Tensor& weight, const c10::optional<torch::Tensor>& bias_opt,
                               const torch::Tensor& targets, int64_t chunk, bool grad, int64_t dtype_code) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
    const auto dtype = static_cast<torch::ScalarType>(dtype_code), wide = reduce_dtype(hidden);
    const torch::Tensor bias = bias_opt.has_value() ? *bias_opt : torch::Tensor();
    const bool need_h = grad && hidden.requires_grad(), need_w = grad && weight.requires_grad(),
               need_b = grad && bias.defined() && bias.requires_grad();
    const int64_t T = hidden.size(0), V = weight.size(0);
    const auto valid = targets != kIgnoreIndex;
    const int64_t count = valid.sum().item<int64_t>();
    if (count > 0) {
      const auto counted = targets.masked_select(valid);
      const int64_t lo = counted.min().item<int64_t>(), hi = counted.max().item<int64_t>();
      if (lo < 0 || hi >= V)
        throw Error(fmt::format("chunked_lm_loss: target {} is outside the vocabulary [0, {}) (ignored targets are {})",
                                lo < 0 ? lo : hi, V, kIgnoreIndex));
    }
    const auto tgt = targets.contiguous();
    auto h = hidden.to(dtype);
    auto W = widen_weight(weight, dtype);
    torch::Tensor grad_h, grad_w, grad_b;
    if (need_h) grad_h = count > 0 ? torch::empty_like(hidden, at::MemoryFormat::Contiguous) : torch::zeros_like(hidden);
    if (need_w) grad_w = torch::empty({V, weight.size(1)}, weight.options().dtype(wide));
    if (need_b) grad_b = torch::zeros({V}, bias.options().dtype(wide));
    const bool any_grad = need_h || need_w || need_b;
    double loss_sum = 0;
    const int64_t rows = chunk_rows(chunk, V);
    bool first_w = true;  // the first chunk writes grad_w, the later ones add to it in place
    for (int64_t r0 = 0; r0 < T && count > 0; r0 += rows) {
      const int64_t r1 = std::min(T, r0 + rows);
      auto logits = chunk_logits(h.slice(0, r0, r1), W, bias, wide).contiguous();
      // d loss / d logits = (softmax - onehot(target)) / count on counted rows, 0 elsewhere.
      loss_sum += chunk_cross_entropy(logits, tgt.slice(0, r0, r1), count, any_grad);
      if (!any_grad) continue;
      auto& g = logits;
      if (need_b) grad_b.add_(g.sum(0));
      auto gc = g.to(dtype);
      if (need_h) {
        auto dst = grad_h.slice(0, r0, r1);
        if (gc.scalar_type() == dst.scalar_type())
          torch::mm_out(dst, gc, W);
        else
          dst.copy_(torch::matmul(gc, W));
      }
      if (need_w) {
        if (wide == dtype) {
          if (first_w)
            torch::mm_out(grad_w, gc.t(), h.slice(0, r0, r1));
          else
            grad_w.addmm_(gc.t(), h.slice(0, r0, r1));
        } else {
          auto part = torch::matmul(gc.t(), h.slice(0, r0, r1)).to(wide);
          first_w ? grad_w.copy_(part) : grad_w.add_(part);
        }
        first_w = false;
      }
    }
    if (need_h) ctx->saved_data["grad_h"] = grad_h;
    if (need_w && first_w) grad_w.zero_();  // no counted target
    if (need_w) ctx->saved_data["grad_w"] = grad_w.to(weight.scalar_type());
    if (need_b) ctx->saved_data["grad_b"] = grad_b.to(bias.scalar_type());
    return torch::full({}, count > 0 ? loss_sum / double(count) : 0.0, hidden.options().dtype(wide));
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto& go = grads[0];
    if (ctx->saved_data.count("used"))
      throw Error("the fused LM loss (models/chunked_loss.h) cannot run its backward twice (retain_graph); set "
                  "train.loss_chunk: 0 for the plain path");
    ctx->saved_data["used"] = true;
    const bool unit = go.item<double>() == 1.0;
    auto scaled = [&](const char* key) {
      if (!ctx->saved_data.count(key)) return torch::Tensor();
      auto g = ctx->saved_data[key].toTensor();
      ctx->saved_data.erase(key);  // handed over: autograd may keep it as .grad without a copy
      // The usual incoming gradient is exactly 1 (loss.backward()): no pass over [V, d] then.
      return unit ? g : g * go.to(g.scalar_type());
    };
    return {scaled("grad_h"), scaled("grad_w"), scaled("grad_b"), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

torch::Tensor chunked_lm_loss(const torch::Tensor& hidden, const LmHead& head, const torch::Tensor& targets,
                              int64_t chunk) {
  check_inputs(hidden, head, targets);
  if (chunk <= 0) throw Error(fmt::format("chunked_lm_loss: chunk must be positive, got {}", chunk));
  c10::optional<torch::Tensor> bias;
  if (head.bias.defined()) bias = head.bias;
  return FusedLmLoss::apply(hidden, head.weight, bias, targets, chunk, torch::GradMode::is_enabled(),
                            static_cast<int64_t>(product_dtype(hidden)));
}

LmLossStats chunked_lm_stats(const torch::Tensor& hidden, const LmHead& head, const torch::Tensor& targets,
                             int64_t chunk) {
  check_inputs(hidden, head, targets);
  torch::NoGradGuard no_grad;
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  const auto dtype = product_dtype(hidden);
  auto h = hidden.to(dtype);
  auto W = widen_weight(head.weight, dtype);
  const auto valid = targets != kIgnoreIndex;
  LmLossStats out;
  const int64_t T = hidden.size(0), rows = chunk_rows(std::max<int64_t>(chunk, 1), W.size(0));
  for (int64_t r0 = 0; r0 < T; r0 += rows) {
    const int64_t r1 = std::min(T, r0 + rows);
    auto ok = valid.slice(0, r0, r1);
    auto t = targets.slice(0, r0, r1);
    auto logits = chunk_logits(h.slice(0, r0, r1), W, head.bias, reduce_dtype(hidden));
    auto nll = torch::logsumexp(logits, 1) - logits.gather(1, t.clamp_min(0).unsqueeze(1)).squeeze(1);
    out.loss_sum += (nll * ok).sum().item<double>();
    out.correct += ((logits.argmax(1) == t) & ok).sum().item<int64_t>();
    out.count += ok.sum().item<int64_t>();
  }
  return out;
}

torch::Tensor next_token_targets(const torch::Tensor& ids, int64_t pad_id) {
  auto t = torch::full_like(ids, kIgnoreIndex);
  const int64_t N = ids.size(1);
  if (N > 1) t.slice(1, 0, N - 1).copy_(ids.slice(1, 1));
  if (pad_id >= 0) t.masked_fill_(t == pad_id, kIgnoreIndex);
  return t;
}

torch::Tensor causal_lm_loss(Model& model, const LmInputs& in, const torch::Tensor& targets, int64_t chunk) {
  auto* lm = as_causal_lm(model);
  if (lm && chunk > 0) {
    LmHead head = lm->head();
    if (head.weight.defined()) {
      auto hidden = lm->forward_hidden(fused_lm_inputs(in, head));
      return chunked_lm_loss(hidden.reshape({-1, hidden.size(-1)}), head, targets.reshape({-1}), chunk);
    }
  }
  auto logits = lm && (in.segments.defined() || in.cache) ? lm->forward_lm(in) : model.forward(in.ids);
  auto flat = targets.reshape({-1});
  auto sum = torch::nn::functional::cross_entropy(
      logits.reshape({-1, logits.size(-1)}).to(reduce_dtype(logits)), flat,
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnoreIndex).reduction(torch::kSum));
  const int64_t count = (flat != kIgnoreIndex).sum().item<int64_t>();
  return count > 0 ? sum / double(count) : sum * 0.0;  // no counted target: a zero loss, in the graph
}

LmInputs fused_lm_inputs(const LmInputs& in, const LmHead& head) {
  // The fused head gives its weight a dense gradient in this backward (FusedLmLoss: need_w is the
  // same condition); a tied embedding can then hand over just its rows.
  LmInputs fused = in;
  fused.tied_head_grad = head.weight.defined() && head.weight.requires_grad() && torch::GradMode::is_enabled();
  return fused;
}

LmHead fused_eval_head(Model& model) {
  auto* lm = as_causal_lm(model);
  return lm ? lm->head() : LmHead{};
}

int64_t fused_eval_rows(int64_t batch_size, int64_t seq_len) {
  return std::max<int64_t>(1, std::min<int64_t>(batch_size, kEvalTokens / std::max<int64_t>(1, seq_len)));
}

LmLossStats causal_lm_stats(Model& model, const LmHead& head, const LmInputs& in, const torch::Tensor& targets) {
  auto* lm = as_causal_lm(model);
  if (!lm || !head.weight.defined()) throw Error("causal_lm_stats: the model has no plain LM head to fuse with");
  auto hidden = lm->forward_hidden(in);
  return chunked_lm_stats(hidden.reshape({-1, hidden.size(-1)}), head, targets.reshape({-1}), kEvalTokens);
}

}  // namespace tunekit::models
