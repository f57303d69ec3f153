// The recipe's `model:` section (with model.attention) and `init_from:`.
#include <fmt/format.h>

#include <cstdlib>
#include <utility>

#include "src/recipe/recipe_sections.h"

namespace tunekit::recipe {
namespace {

// model.attention.sigmoid_bias: auto, learnable or a number (fixed).
void parse_sigmoid_bias(Section& a, models::AttentionVariant& v) {
  std::string bias = to_string(models::SigmoidBias::Auto);
  a.read("sigmoid_bias", bias);
  auto named = enum_from_name<models::SigmoidBias>(bias);
  if (named && *named != models::SigmoidBias::Fixed) {
    v.bias_mode = *named;
    return;
  }
  char* end = nullptr;
  v.bias_value = std::strtod(bias.c_str(), &end);
  if (bias.empty() || *end != '\0')
    a.fail("sigmoid_bias", fmt::format("expected auto, learnable or a number, got '{}'", bias));
  v.bias_mode = models::SigmoidBias::Fixed;
}

models::AttentionVariant parse_attention(Section a) {
  models::AttentionVariant v;
  v.score = a.choice("score", v.score);
  v.gate = a.choice("gate", v.gate);
  a.read("qk_norm", v.qk_norm);
  parse_sigmoid_bias(a, v);
  if (a.has("sigmoid_bias") && v.score != models::Score::Sigmoid) a.fail("sigmoid_bias", "only applies to score: sigmoid");
  a.finish();
  return v;
}

// Keys that belong to one model kind only.
void check_kind_keys(Section& m, ModelKind kind) {
  for (const char* key : {"image_size", "channels", "patch"})
    if (m.has(key) && kind != ModelKind::Vit)
      m.fail(key, fmt::format("only applies to model.kind vit (kind is {})", to_string(kind)));
  for (const char* key : {"vocab_size", "max_seq_len", "task", "pooling", "causal", "pad_id"})
    if (m.has(key) && kind != ModelKind::Text)
      m.fail(key, fmt::format("only applies to model.kind text (kind is {})", to_string(kind)));
}

void check_model(Section& m, const ModelConfig& c) {
  for (auto [key, v] : {std::pair<const char*, int64_t>{"image_size", c.image_size}, {"channels", c.channels},
                        {"patch", c.patch}, {"dim", c.dim}, {"depth", c.depth}, {"heads", c.heads},
                        {"num_classes", c.num_classes}, {"vocab_size", c.vocab_size}, {"max_seq_len", c.max_seq_len}})
    if (v <= 0) m.fail(key, fmt::format("must be positive, got {}", v));
  if (c.pad_id < 0 || c.pad_id >= c.vocab_size)
    m.fail("pad_id", fmt::format("{} is outside the vocabulary 0..{}", c.pad_id, c.vocab_size - 1));
  if (c.is_lm() && c.max_seq_len < 2) m.fail("max_seq_len", "a causal LM needs at least 2 tokens");
  if (c.is_lm() && m.has("num_classes")) m.fail("num_classes", "does not apply to task: causal_lm");
  if (c.dim % c.heads != 0) m.fail("heads", fmt::format("dim {} is not divisible by heads {}", c.dim, c.heads));
  if (c.kind == ModelKind::Vit && c.image_size % c.patch != 0)
    m.fail("patch", fmt::format("image_size {} is not a multiple of patch {}", c.image_size, c.patch));
  if (c.mlp_ratio <= 0) m.fail("mlp_ratio", "must be positive");
  if (c.dropout < 0 || c.dropout >= 1) m.fail("dropout", "must be in [0, 1)");
}

}  // namespace

ModelConfig parse_model(Section m) {
  ModelConfig c;
  c.kind = m.choice("kind", c.kind);
  check_kind_keys(m, c.kind);
  m.read("vocab_size", c.vocab_size);
  m.read("max_seq_len", c.max_seq_len);
  m.read("pad_id", c.pad_id);
  c.task = m.choice("task", c.task);
  c.pooling = m.choice("pooling", c.pooling);
  m.read("causal", c.causal);
  if (m.has("pooling") && c.task != models::TextTask::Classify) m.fail("pooling", "only applies to task: classify");
  if (c.is_lm() && !c.causal) m.fail("causal", "a causal LM needs causal attention");
  m.read("image_size", c.image_size);
  m.read("channels", c.channels);
  m.read("patch", c.patch);
  m.read("dim", c.dim);
  m.read("depth", c.depth);
  m.read("heads", c.heads);
  m.read("mlp_ratio", c.mlp_ratio);
  m.read("num_classes", c.num_classes);
  m.read("dropout", c.dropout);
  m.read("post_attn_norm", c.post_attn_norm);
  c.attention = parse_attention(m.section("attention"));
  check_model(m, c);
  m.finish();
  return c;
}

InitFromConfig parse_init_from(Section s) {
  InitFromConfig c;
  s.read("run", c.run);
  c.checkpoint = s.choice("checkpoint", c.checkpoint);
  s.read("exclude", c.exclude);
  s.finish();
  return c;
}

}  // namespace tunekit::recipe
