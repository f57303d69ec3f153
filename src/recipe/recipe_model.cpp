// The recipe's `model:` section (with model.attention) and `init_from:`.
#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <utility>

#include "src/hf/config.h"
#include "src/hf/scratch.h"
#include "src/recipe/recipe_sections.h"
#include "util/error.h"
#include "util/text.h"

namespace tunekit::recipe {
namespace {

ModelKind kind_of(models::hf::Family f) {
  switch (f) {
    case models::hf::Family::Gpt2: return ModelKind::Gpt2;
    case models::hf::Family::Llama: return ModelKind::Llama;
    case models::hf::Family::Mistral: return ModelKind::Mistral;
    case models::hf::Family::Qwen2: return ModelKind::Qwen2;
    case models::hf::Family::Vit: return ModelKind::Vit;
  }
  return ModelKind::Vit;
}

// What the recipe records of a checkpoint's config.json (for describe, data and checks).
struct HfSizes {
  int64_t dim = 0, depth = 0, heads = 0, vocab_size = 0, positions = 0;  // LMs
  int64_t image_size = 0, channels = 0, patch = 0, num_labels = 0;       // ViT
};
HfSizes hf_sizes(const hf::HfConfig& h) {
  HfSizes z;
  if (h.family == models::hf::Family::Gpt2) {
    const auto& o = h.gpt2;
    z = {o.n_embd(), o.n_layer(), o.n_head(), o.vocab_size(), o.n_positions()};
  } else if (h.family == models::hf::Family::Vit) {
    const auto& o = h.vit;
    z.dim = o.hidden_size();
    z.depth = o.num_hidden_layers();
    z.heads = o.num_attention_heads();
    z.image_size = o.image_size();
    z.channels = o.num_channels();
    z.patch = o.patch_size();
    z.num_labels = o.num_labels();
  } else {
    const auto& o = h.llama;
    z = {o.hidden_size(), o.num_hidden_layers(), o.num_attention_heads(), o.vocab_size(), o.max_position_embeddings()};
  }
  return z;
}

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
  if (!std::isfinite(v.bias_value)) a.fail("sigmoid_bias", fmt::format("expected a finite number, got '{}'", bias));
  v.bias_mode = models::SigmoidBias::Fixed;
}

models::AttentionVariant parse_attention(Section a) {
  models::AttentionVariant v;
  v.score = a.choice("score", v.score);
  v.gate = a.choice("gate", v.gate);
  a.read("gate_bias", v.gate_bias);
  if (a.has("gate_bias") && v.gate == models::Gate::None) a.fail("gate_bias", "only applies with a gate (gate is none)");
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

// About how many parameters tunekit's own ViT or text model of these sizes has (blocks,
// embeddings and head), to refuse sizes no machine here could hold before LibTorch allocates them.
double own_model_parameters(const ModelConfig& c) {
  const double d = static_cast<double>(c.dim), hidden = std::floor(d * c.mlp_ratio);
  double p = static_cast<double>(c.depth) * (4 * d * d + 2 * d * hidden + 10 * d);
  if (c.kind == ModelKind::Vit) {
    const double side = static_cast<double>(c.image_size / c.patch);
    p += static_cast<double>(c.channels * c.patch * c.patch) * d + (side * side + 1) * d + d * c.num_classes;
  } else {
    p += static_cast<double>(c.vocab_size + c.max_seq_len) * d + (c.is_lm() ? 0.0 : d * c.num_classes);
  }
  return p;
}

// Every size within its bound (recipe_sections.h), then the sizes against each other.
void check_model(Section& m, const ModelConfig& c) {
  m.check_range("dim", c.dim, 1, kMaxDim);
  m.check_range("depth", c.depth, 1, kMaxDepth);
  m.check_range("heads", c.heads, 1, c.dim, " (model.dim)");
  m.check_range("num_classes", c.num_classes, 1, kMaxClasses);
  m.check_range("image_size", c.image_size, 1, kMaxImageSize);
  m.check_range("channels", c.channels, 1, kMaxChannels);
  m.check_range("patch", c.patch, 1, c.image_size, " (model.image_size)");
  m.check_range("vocab_size", c.vocab_size, 1, kMaxVocab);
  m.check_range("max_seq_len", c.max_seq_len, 1, kMaxSeqLen);
  if (c.pad_id < 0 || c.pad_id >= c.vocab_size)
    m.fail("pad_id", fmt::format("{} is outside the vocabulary 0..{}", c.pad_id, c.vocab_size - 1));
  if (c.is_lm() && c.max_seq_len < 2) m.fail("max_seq_len", "a causal LM needs at least 2 tokens");
  if (c.is_lm() && m.has("num_classes")) m.fail("num_classes", "does not apply to task: causal_lm");
  if (c.dim % c.heads != 0) m.fail("heads", fmt::format("dim {} is not divisible by heads {}", c.dim, c.heads));
  if (c.kind == ModelKind::Vit && c.image_size % c.patch != 0)
    m.fail("patch", fmt::format("image_size {} is not a multiple of patch {}", c.image_size, c.patch));
  const int64_t side = c.image_size / c.patch;
  if (c.kind == ModelKind::Vit && side * side > kMaxPatches)
    m.fail("patch", fmt::format("image_size {} / patch {} gives {} patches per image; at most {}", c.image_size, c.patch,
                                side * side, kMaxPatches));
  m.check_real("mlp_ratio", c.mlp_ratio, 0, true, kMaxMlpRatio, false);
  if (static_cast<int64_t>(static_cast<double>(c.dim) * c.mlp_ratio) < 1)
    m.fail("mlp_ratio",
           fmt::format("dim {} x mlp_ratio {} gives an MLP of width 0; it must be at least 1", c.dim, c.mlp_ratio));
  m.check_real("dropout", c.dropout, 0, false, 1, true);
  const double params = own_model_parameters(c);
  if (params > static_cast<double>(kMaxParameters))
    m.fail("dim", fmt::format("a {} model of dim {}, depth {} would have about {:.1f} billion parameters ({:.0f} GiB as "
                              "float32); tunekit's limit is {} parameters (8 GiB)",
                              to_string(c.kind), c.dim, c.depth, params / 1e9, params * 4 / (1LL << 30),
                              with_commas(kMaxParameters)));
}

// The config.json of model.from_hf (a model directory) or model.from_config (a config.json or
// its directory, src/hf/scratch.h), read at `context`; a problem fails on `key` with its line.
hf::HfConfig read_model_config(Section& m, const std::string& key, bool scratch, const std::string& path,
                               int64_t context) {
  try {
    return scratch ? hf::read_config_source(path, context) : hf::read_hf_config(path, context);
  } catch (const Error& e) {
    m.fail(key, e.what());
  } catch (const std::exception& e) {  // a JSON library's own text: name the file it concerns
    m.fail(key, fmt::format("{}: {}", scratch ? path : path + "/config.json", e.what()));
  }
}

// model.from_hf: the family and every size come from the directory's config.json (src/hf/config.h);
// the recipe may name the family (it must agree), the context, a new head and the attention variant.
// model.from_config: the same from a config.json alone, for a causal LM initialised at random
// (src/hf/scratch.h); its vocab_size must hold the tokenizer's pieces (checked with data.tokenizer).
ModelConfig parse_hf_model(Section& m) {
  ModelConfig c;
  const bool scratch = m.has("from_config");
  const std::string key = scratch ? "from_config" : "from_hf";
  if (scratch && m.has("from_hf"))
    m.fail("from_config", "give either model.from_hf (a model with its weights) or model.from_config (random init)");
  std::string& path = scratch ? c.from_config : c.from_hf;
  m.read(key, path);
  if (path.empty())
    m.fail(key, scratch ? "must name a Hugging Face config.json (or a directory holding one)"
                        : "must name a Hugging Face model directory");
  const std::string config_name = scratch ? path : path + "/config.json";
  if (scratch)
    for (const char* k : {"name", "exclude"})
      if (m.has(k)) m.fail(k, "only applies with model.from_hf (a Hugging Face model directory)");
  m.read("name", c.hf_name);
  m.read("exclude", c.exclude);
  for (const char* k : {"image_size", "channels", "patch", "dim", "depth", "heads", "mlp_ratio", "vocab_size", "task",
                        "pooling", "causal", "pad_id", "post_attn_norm"})
    if (m.has(k)) m.fail(k, fmt::format("comes from {} with model.{}", config_name, key));
  hf::HfConfig hc = read_model_config(m, key, scratch, path, /*context=*/2);  // the context is checked below, once known
  c.kind = kind_of(hc.family);
  if (scratch && c.kind == ModelKind::Vit)
    m.fail(key, fmt::format("{} holds a vit model; model.from_config pre-trains the causal-LM families (gpt2, llama, "
                            "mistral, qwen2)",
                            config_name));
  if (m.has("kind")) {
    ModelKind asked = m.choice("kind", c.kind);
    if (asked != c.kind)
      m.fail("kind", fmt::format("is {} but {} holds a {} model (model_type {})", to_string(asked), config_name,
                                 to_string(c.kind), models::hf::to_string(hc.family)));
  }
  const HfSizes z = hf_sizes(hc);
  c.dim = z.dim;
  c.depth = z.depth;
  c.heads = z.heads;
  m.read("dropout", c.dropout);
  c.attention = parse_attention(m.section("attention"));
  if (c.is_hf_lm()) {
    c.task = models::TextTask::CausalLm;
    c.vocab_size = z.vocab_size;
    c.pad_id = -1;
    c.max_seq_len = std::min<int64_t>(z.positions, 1024);
    m.read("max_seq_len", c.max_seq_len);
    if (c.max_seq_len < 2 || c.max_seq_len > z.positions)
      m.fail("max_seq_len", fmt::format("must be in 2..{} (the model's max_position_embeddings)", z.positions));
    read_model_config(m, "max_seq_len", scratch, path, c.max_seq_len);  // GPT-2's positions, a sliding window
    if (m.has("num_classes")) m.fail("num_classes", "does not apply to a causal LM");
  } else {
    if (m.has("max_seq_len")) m.fail("max_seq_len", "does not apply to a ViT");
    c.image_size = z.image_size;
    c.channels = z.channels;
    c.patch = z.patch;
    c.num_classes = z.num_labels;
    m.read("num_classes", c.num_classes);
    m.check_range("num_classes", c.num_classes, 1, kMaxClasses);
  }
  m.check_real("dropout", c.dropout, 0, false, 1, true);
  c.frozen_dtype = m.choice("frozen_dtype", c.frozen_dtype);
  m.finish();
  return c;
}

}  // namespace

ModelConfig parse_model(Section m) {
  ModelConfig c;
  if (m.has("from_hf") || m.has("from_config")) return parse_hf_model(m);
  for (const char* key : {"name", "exclude"})
    if (m.has(key)) m.fail(key, "only applies with model.from_hf (a Hugging Face model directory)");
  c.kind = m.choice("kind", c.kind);
  if (c.kind != ModelKind::Vit && c.kind != ModelKind::Text)
    m.fail("kind", fmt::format("{} is a Hugging Face family: give its directory as model.from_hf", to_string(c.kind)));
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
  c.frozen_dtype = m.choice("frozen_dtype", c.frozen_dtype);
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
