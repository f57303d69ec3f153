#include "models/text.h"

#include <fmt/format.h>

#include "util/error.h"

namespace tunekit::models {

TextTransformerImpl::TextTransformerImpl(TextTransformerOptions options_) : options(std::move(options_)) { reset(); }

void TextTransformerImpl::reset() {
  const auto& o = options;
  if (o.vocab_size() <= 0 || o.max_seq_len() <= 0)
    throw Error(fmt::format("text: vocab_size ({}) and max_seq_len ({}) must be positive", o.vocab_size(),
                            o.max_seq_len()));
  if (o.pad_id() < 0 || o.pad_id() >= o.vocab_size())
    throw Error(fmt::format("text: pad_id {} is outside the vocabulary (0..{})", o.pad_id(), o.vocab_size() - 1));
  token_embed = register_module("token_embed", torch::nn::Embedding(o.vocab_size(), o.dim()));
  {
    torch::NoGradGuard no_grad;
    token_embed->weight.normal_(0, 0.02);  // GPT-2's init; the tied LM head starts small
  }
  pos_embed = register_parameter("pos_embed", torch::randn({1, o.max_seq_len(), o.dim()}) * 0.02);
  AttentionVariant variant = o.attention();
  if (variant.max_seq_len <= 0) variant.max_seq_len = o.max_seq_len();  // sigmoid b = -log n (docs/methods.md §1)
  auto list = register_module("blocks", std::make_shared<torch::nn::Module>());
  blocks.clear();
  for (int64_t i = 0; i < o.depth(); ++i)
    blocks.push_back(list->register_module(std::to_string(i), Block(BlockOptions(o.dim(), o.heads())
                                                                        .mlp_ratio(o.mlp_ratio())
                                                                        .dropout(o.dropout())
                                                                        .attention(variant)
                                                                        .post_attn_norm(o.post_attn_norm()))));
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim()})));
  if (o.task() == TextTask::Classify) head = register_module("head", Linear(o.dim(), o.num_classes()));
}

torch::Tensor TextTransformerImpl::attention_mask(const torch::Tensor& ids) const {
  const int64_t N = ids.size(1);
  auto pos = torch::arange(N, ids.options());
  auto keys = ids.ne(options.pad_id()).logical_or(pos.eq(0)).view({ids.size(0), 1, 1, N});  // [B,1,1,N]
  if (!options.causal()) return keys;
  auto causal = torch::ones({N, N}, ids.options().dtype(torch::kBool)).tril();  // [N, N]
  return keys.logical_and(causal);
}

torch::Tensor TextTransformerImpl::forward(const torch::Tensor& ids) {
  if (ids.dim() != 2 || ids.scalar_type() != torch::kLong)
    throw Error(fmt::format("text: expected token ids [B, N] of int64, got {} {}", c10::toString(ids.scalar_type()),
                            c10::str(ids.sizes())));
  const int64_t N = ids.size(1);
  if (N > options.max_seq_len() || N == 0)
    throw Error(fmt::format("text: sequence length {} is outside 1..max_seq_len {}", N, options.max_seq_len()));
  auto h = token_embed(ids) + pos_embed.slice(1, 0, N);
  auto mask = attention_mask(ids);
  for (auto& b : blocks) h = b(h, mask);
  h = norm(h);
  if (options.task() == TextTask::CausalLm) return torch::linear(h, token_embed->weight);
  auto valid = ids.ne(options.pad_id());
  torch::Tensor pooled;
  if (options.pooling() == TextPooling::Mean) {
    auto m = valid.unsqueeze(-1).to(h.scalar_type());
    pooled = (h * m).sum(1) / m.sum(1).clamp_min(1);
  } else {
    auto last = (valid.sum(1) - 1).clamp_min(0);  // right padding: the last real token
    pooled = h.index({torch::arange(ids.size(0), ids.options()), last});
  }
  return head(pooled);
}

torch::jit::Module TextTransformerImpl::to_script(const ScriptUnit& unit) const {
  auto m = unit.module("TextTransformer");
  auto embed = unit.module("Embedding");  // token_embed.weight, as the eager Embedding (and the tied LM head)
  embed.register_parameter("weight", token_embed->weight.detach().clone(), false);
  embed.define("def forward(self, ids: Tensor) -> Tensor:\n    return torch.embedding(self.weight, ids)\n");
  m.register_module("token_embed", embed);
  m.register_parameter("pos_embed", pos_embed.detach().clone(), false);
  std::string calls = register_block_scripts(m, blocks, unit, ", mask");
  m.register_module("norm", layer_norm_script(unit, norm));
  std::string tail;
  if (options.task() == TextTask::CausalLm) {
    tail = "    return torch.linear(h, self.token_embed.weight)\n";
  } else {
    m.register_module("head", head->to_script(unit));
    tail = fmt::format("    valid = ids != {}\n", options.pad_id());
    if (options.pooling() == TextPooling::Mean)
      tail +=
          "    m = valid.unsqueeze(-1).to(h.dtype)\n"
          "    pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)\n";
    else
      tail +=
          "    last = (valid.sum(1) - 1).clamp_min(0)\n"
          "    pooled = h[torch.arange(ids.size(0)), last]\n";
    tail += "    return self.head.forward(pooled)\n";
  }
  std::string causal =
      options.causal() ? "    mask = mask & (torch.ones(N, N).tril() != 0)\n" : std::string();
  m.define(fmt::format(R"(
def forward(self, ids: Tensor) -> Tensor:
    N = ids.size(1)
    h = self.token_embed.forward(ids) + self.pos_embed[:, :N]
    mask = ((ids != {pad}) | (torch.arange(N) == 0)).view(ids.size(0), 1, 1, N)
{causal}{calls}    h = self.norm.forward(h)
{tail})",
                       fmt::arg("pad", options.pad_id()), fmt::arg("causal", causal), fmt::arg("calls", calls),
                       fmt::arg("tail", tail)));
  return m;
}

double TextTransformerImpl::flops_per_sample() const {
  const double d = options.dim(), n = options.max_seq_len();
  double out = options.task() == TextTask::CausalLm ? 2 * n * d * options.vocab_size() : 2 * d * options.num_classes();
  return options.depth() * block_flops(BlockOptions(options.dim(), options.heads()).mlp_ratio(options.mlp_ratio()).attention(options.attention()), n) + out;
}

std::string TextTransformerImpl::describe() const {
  const auto& o = options;
  const std::string attn = describe_attention(o.attention(), o.post_attn_norm());
  std::string task = o.task() == TextTask::CausalLm
                         ? "causal LM, tied head"
                         : fmt::format("classifier ({} classes, {} pooling)", o.num_classes(), to_string(o.pooling()));
  return fmt::format("TextTransformer(vocab {}, max_seq_len {}, dim {}, depth {}, heads {}, mlp x{}, {}{}; attention {})",
                     o.vocab_size(), o.max_seq_len(), o.dim(), o.depth(), o.heads(), o.mlp_ratio(), task,
                     o.causal() ? ", causal" : "", attn);
}

}  // namespace tunekit::models
