#include "models/hf/llama.h"

#include <fmt/format.h>

#include "models/activation.h"
#include "models/block.h"
#include "models/hf/families.h"
#include "models/init_guard.h"
#include "util/error.h"

namespace tunekit::models::hf {

namespace {
constexpr double kInitStd = 0.02;  // LlamaConfig.initializer_range
}  // namespace

LlamaAttentionImpl::LlamaAttentionImpl(AttentionShape shape_, bool qkv_bias_, bool o_bias_)
    : HfAttentionBase(std::move(shape_)), qkv_bias(qkv_bias_), o_bias(o_bias_) {
  reset();
}

void LlamaAttentionImpl::reset() {
  const int64_t d = shape.hidden, q_out = shape.heads * shape.head_dim, kv_out = shape.kv_heads * shape.head_dim;
  q_proj = register_module("q_proj", Linear(LinearOptions(d, q_out).bias(qkv_bias)));
  k_proj = register_module("k_proj", Linear(LinearOptions(d, kv_out).bias(qkv_bias)));
  v_proj = register_module("v_proj", Linear(LinearOptions(d, kv_out).bias(qkv_bias)));
  o_proj = register_module("o_proj", Linear(LinearOptions(q_out, d).bias(o_bias)));
  register_variant();
}

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                          const LmAttention* lm) {
  return o_proj(attend(x, q_proj(x), k_proj(x), v_proj(x), cos, sin, lm));
}

torch::jit::Module LlamaAttentionImpl::to_script(const ScriptUnit& unit) const {
  auto m = unit.module("LlamaAttention");
  m.register_module("q_proj", q_proj->to_script(unit));
  m.register_module("k_proj", k_proj->to_script(unit));
  m.register_module("v_proj", v_proj->to_script(unit));
  m.register_module("o_proj", o_proj->to_script(unit));
  std::string src =
      "def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:\n"
      "    B = x.size(0)\n"
      "    N = x.size(1)\n"
      "    q = self.q_proj.forward(x)\n"
      "    k = self.k_proj.forward(x)\n"
      "    v = self.v_proj.forward(x)\n";
  src += script_attend(m, unit, /*rotary=*/true);
  src += "    return self.o_proj.forward(out)\n";
  m.define(src);
  return m;
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlamaOptions& options_, const AttentionShape& shape)
    : options(options_) {
  const int64_t d = options.hidden_size(), inner = options.intermediate_size();
  // Registered in LlamaDecoderLayer's order: named_parameters() is the checkpoint's order.
  self_attn = register_module("self_attn", LlamaAttention(shape, options.qkv_bias(), options.o_bias()));
  mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
  gate_proj = mlp->register_module("gate_proj", Linear(LinearOptions(d, inner).bias(options.mlp_bias())));
  up_proj = mlp->register_module("up_proj", Linear(LinearOptions(d, inner).bias(options.mlp_bias())));
  down_proj = mlp->register_module("down_proj", Linear(LinearOptions(inner, d).bias(options.mlp_bias())));
  input_layernorm = register_module("input_layernorm", RmsNorm(d, options.rms_norm_eps()));
  post_attention_layernorm = register_module("post_attention_layernorm", RmsNorm(d, options.rms_norm_eps()));
}

torch::Tensor LlamaDecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                             const LmAttention* lm) {
  const double p = options.dropout();
  auto h = x + torch::dropout(self_attn(input_layernorm(x), cos, sin, lm), p, is_training());
  auto n = post_attention_layernorm(h);
  // silu(gate) * up as one op (models/activation.h)
  return h + torch::dropout(down_proj(silu_mul(gate_proj(n), up_proj(n))), p, is_training());
}

torch::jit::Module LlamaDecoderLayerImpl::to_script(const ScriptUnit& unit) const {
  auto m = unit.module("LlamaDecoderLayer");
  m.register_module("self_attn", self_attn->to_script(unit));
  auto mlp_m = unit.module("LlamaMlp");
  mlp_m.register_module("gate_proj", gate_proj->to_script(unit));
  mlp_m.register_module("up_proj", up_proj->to_script(unit));
  mlp_m.register_module("down_proj", down_proj->to_script(unit));
  mlp_m.define(
      "def forward(self, x: Tensor) -> Tensor:\n"
      "    return self.down_proj.forward(torch.silu(self.gate_proj.forward(x)) * self.up_proj.forward(x))\n");
  m.register_module("mlp", mlp_m);
  m.register_module("input_layernorm", input_layernorm->to_script(unit));
  m.register_module("post_attention_layernorm", post_attention_layernorm->to_script(unit));
  m.define(
      "def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:\n"
      "    h = x + self.self_attn.forward(self.input_layernorm.forward(x), cos, sin)\n"
      "    return h + self.mlp.forward(self.post_attention_layernorm.forward(h))\n");
  return m;
}

LlamaImpl::LlamaImpl(LlamaOptions options_) : options(std::move(options_)) {
  const auto& o = options;
  const std::string fam = to_string(o.family());
  if (o.family() != Family::Llama && o.family() != Family::Mistral && o.family() != Family::Qwen2) throw Error(fmt::format("llama: family {} is not a Llama-shaped causal LM", fam));
  if (o.vocab_size() <= 0 || o.hidden_size() <= 0 || o.intermediate_size() <= 0 || o.num_hidden_layers() < 0 ||
      o.num_attention_heads() <= 0 || o.max_position_embeddings() <= 0)
    throw Error(fmt::format(
        "{}: vocab_size {}, hidden_size {}, intermediate_size {}, num_attention_heads {}, max_position_embeddings {} "
        "must be positive",
        fam, o.vocab_size(), o.hidden_size(), o.intermediate_size(), o.num_attention_heads(),
        o.max_position_embeddings()));
  if (o.head_dim() <= 0 && o.hidden_size() % o.num_attention_heads() != 0)
    throw Error(fmt::format("{}: hidden_size {} is not divisible by num_attention_heads {} (and no head_dim is given)",
                            fam, o.hidden_size(), o.num_attention_heads()));
  if (o.num_key_value_heads() < 0 || o.num_attention_heads() % num_key_value_heads() != 0)
    throw Error(fmt::format("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", fam,
                            o.num_attention_heads(), o.num_key_value_heads()));
  if (o.rope_theta() <= 0) throw Error(fmt::format("{}: rope_theta {} must be positive", fam, o.rope_theta()));
  if (o.max_seq_len() < 0 || o.max_seq_len() > o.max_position_embeddings())
    throw Error(fmt::format("{}: max_seq_len {} exceeds max_position_embeddings {}", fam, o.max_seq_len(),
                            o.max_position_embeddings()));
  const int64_t d = o.hidden_size();
  AttentionShape shape;
  shape.hidden = d;
  shape.heads = o.num_attention_heads();
  shape.kv_heads = num_key_value_heads();
  shape.head_dim = head_dim();
  shape.causal = true;
  shape.variant = o.attention();
  if (shape.variant.max_seq_len <= 0) shape.variant.max_seq_len = max_seq_len();  // sigmoid b = -log n

  // LlamaForCausalLM: model (embed_tokens, layers, norm), then lm_head.
  model = register_module("model", std::make_shared<torch::nn::Module>());
  embed_tokens = model->register_module("embed_tokens", torch::nn::Embedding(embedding_options(o.vocab_size(), d)));
  auto list = model->register_module("layers", std::make_shared<torch::nn::Module>());
  for (int64_t i = 0; i < o.num_hidden_layers(); ++i)
    layers.push_back(list->register_module(std::to_string(i), LlamaDecoderLayer(o, shape)));
  norm = model->register_module("norm", RmsNorm(d, o.rms_norm_eps()));
  if (!o.tie_word_embeddings()) lm_head = register_module("lm_head", Linear(LinearOptions(d, o.vocab_size()).bias(false)));

  // LlamaPreTrainedModel._init_weights: normal(0, 0.02), biases zero, norms one.
  if (init_skipped()) return;  // a checkpoint fills them (models/init_guard.h)
  torch::NoGradGuard no_grad;
  embed_tokens->weight.normal_(0, kInitStd);
  for (auto& l : layers)
    for (Linear* lin : {&l->self_attn->q_proj, &l->self_attn->k_proj, &l->self_attn->v_proj, &l->self_attn->o_proj,
                        &l->gate_proj, &l->up_proj, &l->down_proj})
      init_linear(*lin, kInitStd);
  if (lm_head) init_linear(lm_head, kInitStd);
}

int64_t LlamaImpl::num_key_value_heads() const {
  return options.num_key_value_heads() > 0 ? options.num_key_value_heads() : options.num_attention_heads();
}

int64_t LlamaImpl::head_dim() const {
  return options.head_dim() > 0 ? options.head_dim() : options.hidden_size() / options.num_attention_heads();
}

int64_t LlamaImpl::max_seq_len() const {
  return options.max_seq_len() > 0 ? options.max_seq_len() : options.max_position_embeddings();
}

torch::Tensor LlamaImpl::forward(const torch::Tensor& ids) {
  LmInputs in;
  in.ids = ids;
  return forward_lm(in);
}

torch::Tensor LlamaImpl::forward_lm(const LmInputs& in) {
  auto h = forward_hidden(in);
  return lm_head ? lm_head(h) : torch::linear(h, embed_tokens->weight);
}

torch::Tensor LlamaImpl::forward_hidden(const LmInputs& in) {
  const std::string fam = to_string(options.family());
  if (in.cache || in.segments.defined())
    if (auto why = incremental_blocker(); !why.empty()) throw Error(why);
  LmCall call = prepare_lm_call(in, max_seq_len(), options.vocab_size(), layers.size(), fam);
  const int64_t N = in.ids.size(1);
  auto h = embed_ids(embed_tokens, in.ids, in.tied_head_grad && !lm_head);
  auto [cos, sin] = rotary_cos_sin_at(call.positions, head_dim(), options.rope_theta(), h.scalar_type());
  h = run_decoder_layers(*this, layers, call.attention, checkpointing_applies(checkpointing_, *this, in.cache != nullptr),
                         h, [cos = cos, sin = sin](LlamaDecoderLayerImpl& layer, const torch::Tensor& t, const LmAttention* a) {
                           return layer.forward(t, cos, sin, a);
                         });
  if (in.cache) in.cache->length += N;
  if (in.last_only) h = h.slice(1, N - 1);
  return norm(h);
}

LmHead LlamaImpl::head() {
  if (!lm_head) return {embed_tokens->weight, {}};
  if (lm_head->adapter() || lm_head->output_adapter() || lm_head->merged()) return {};  // not a plain product
  return {lm_head->weight, lm_head->bias};
}

std::string LlamaImpl::incremental_blocker() { return incremental_blocker_of(*this, to_string(options.family())); }

torch::jit::Module LlamaImpl::to_script(const ScriptUnit& unit) const {
  auto m = unit.module("LlamaForCausalLM");
  auto inner = unit.module("LlamaModel");
  inner.register_module("embed_tokens", embedding_script(unit, embed_tokens));
  std::vector<torch::jit::Module> items;
  std::string calls;
  for (size_t i = 0; i < layers.size(); ++i) {
    items.push_back(layers[i]->to_script(unit));
    calls += fmt::format("    h = {}.forward(h, cos, sin)\n", list_item("layers", i));
  }
  inner.register_module("layers", list_script(unit, "LlamaLayers", items));
  inner.register_module("norm", norm->to_script(unit));
  inner.define(fmt::format(R"(
def forward(self, ids: Tensor) -> Tensor:
    N = ids.size(1)
    assert N <= {max}, "{fam}: the sequence is longer than the model's positions"
    h = self.embed_tokens.forward(ids)
{rotary}{calls}    return self.norm.forward(h)
)",
                           fmt::arg("max", max_seq_len()), fmt::arg("fam", to_string(options.family())),
                           fmt::arg("rotary", rotary_script(head_dim(), options.rope_theta(), "h")),
                           fmt::arg("calls", calls)));
  m.register_module("model", inner);
  if (lm_head) {
    m.register_module("lm_head", lm_head->to_script(unit));
    m.define("def forward(self, ids: Tensor) -> Tensor:\n    return self.lm_head.forward(self.model.forward(ids))\n");
  } else {
    m.define(
        "def forward(self, ids: Tensor) -> Tensor:\n"
        "    return torch.linear(self.model.forward(ids), self.model.embed_tokens.weight)\n");
  }
  return m;
}

double LlamaImpl::flops_per_sample() const {
  const double n = max_seq_len(), d = options.hidden_size(), inner = options.intermediate_size();
  const double q = double(options.num_attention_heads() * head_dim()), kv = double(num_key_value_heads() * head_dim());
  double per_layer = 2 * n * (d * q + 2 * d * kv + q * d + 3 * d * inner);
  if (!layers.empty()) per_layer += layers.front()->self_attn->core_flops(n);
  return options.num_hidden_layers() * per_layer + 2 * n * d * options.vocab_size();
}

std::string LlamaImpl::describe() const {
  const auto& o = options;
  std::string biases;
  if (o.qkv_bias()) biases += ", qkv bias";
  if (o.o_bias()) biases += ", o bias";
  if (o.mlp_bias()) biases += ", mlp bias";
  return fmt::format(
      "{}(vocab {}, hidden {}, layers {}, heads {} (kv {}, head_dim {}), intermediate {}, rope_theta {}, context {}{}, "
      "{}; attention {}; {} parameters)",
      to_string(o.family()), o.vocab_size(), o.hidden_size(), o.num_hidden_layers(), o.num_attention_heads(),
      num_key_value_heads(), head_dim(), o.intermediate_size(), o.rope_theta(), max_seq_len(), biases,
      o.tie_word_embeddings() ? "head tied to embed_tokens" : "own lm_head", describe_attention(o.attention(), false),
      count_string(parameter_count(*this)));
}

std::vector<HfTensor> LlamaImpl::hf_tensors() {
  std::vector<HfTensor> out{{"model.embed_tokens.weight", embed_tokens->weight}};
  auto linear = [&](const std::string& name, Linear& lin) {
    out.push_back({name + ".weight", lin->weight});
    if (lin->bias.defined()) out.push_back({name + ".bias", lin->bias});
  };
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    auto& l = layers[i];
    linear(p + "self_attn.q_proj", l->self_attn->q_proj);
    linear(p + "self_attn.k_proj", l->self_attn->k_proj);
    linear(p + "self_attn.v_proj", l->self_attn->v_proj);
    linear(p + "self_attn.o_proj", l->self_attn->o_proj);
    linear(p + "mlp.gate_proj", l->gate_proj);
    linear(p + "mlp.up_proj", l->up_proj);
    linear(p + "mlp.down_proj", l->down_proj);
    out.push_back({p + "input_layernorm.weight", l->input_layernorm->weight});
    out.push_back({p + "post_attention_layernorm.weight", l->post_attention_layernorm->weight});
  }
  out.push_back({"model.norm.weight", norm->weight});
  if (lm_head) out.push_back({"lm_head.weight", lm_head->weight});
  return out;
}

std::vector<std::string> LlamaImpl::extra_parameters() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < layers.size(); ++i)
    for (const auto& n : layers[i]->self_attn->variant_parameters())
      out.push_back(fmt::format("model.layers.{}.self_attn.{}", i, n));
  return out;
}

std::shared_ptr<HfModel> make_llama(const LlamaOptions& options) { return std::make_shared<LlamaImpl>(options); }

}  // namespace tunekit::models::hf
