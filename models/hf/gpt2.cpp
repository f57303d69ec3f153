#include "models/hf/gpt2.h"

#include <fmt/format.h>

#include <cmath>

#include "models/activation.h"
#include "models/block.h"
#include "models/hf/families.h"
#include "models/init_guard.h"
#include "util/error.h"

namespace tunekit::models::hf {

namespace {
constexpr double kInitStd = 0.02;  // GPT2Config.initializer_range

torch::Tensor activate(const torch::Tensor& x, Gpt2Activation a) {
  switch (a) {
    case Gpt2Activation::GeluNew: return gelu_tanh(x);  // gelu_new: the tanh approximation (models/activation.h)
    case Gpt2Activation::Gelu: return torch::gelu(x);
    case Gpt2Activation::Relu: return torch::relu(x);
  }
  return x;
}

std::string activation_script(Gpt2Activation a) {
  switch (a) {
    case Gpt2Activation::GeluNew: return "torch.gelu(f, approximate='tanh')";
    case Gpt2Activation::Gelu: return "torch.gelu(f)";
    case Gpt2Activation::Relu: return "torch.relu(f)";
  }
  return "f";
}

std::string activation_name(Gpt2Activation a) {
  switch (a) {
    case Gpt2Activation::GeluNew: return "gelu_new";
    case Gpt2Activation::Gelu: return "gelu";
    case Gpt2Activation::Relu: return "relu";
  }
  return "?";
}
}  // namespace

Gpt2AttentionImpl::Gpt2AttentionImpl(AttentionShape shape_) : HfAttentionBase(std::move(shape_)) { reset(); }

void Gpt2AttentionImpl::reset() {
  const int64_t d = shape.hidden;
  c_attn = register_module("c_attn", Linear(d, 3 * d));
  c_proj = register_module("c_proj", Linear(d, d));
  register_variant();
}

torch::Tensor Gpt2AttentionImpl::forward(const torch::Tensor& x, const LmAttention* lm) {
  auto qkv = c_attn(x).split(shape.hidden, -1);  // query, key, value in that order
  return c_proj(attend(x, qkv[0], qkv[1], qkv[2], {}, {}, lm));
}

torch::jit::Module Gpt2AttentionImpl::to_script(const ScriptUnit& unit) const {
  auto m = unit.module("Gpt2Attention");
  m.register_module("c_attn", c_attn->to_script(unit));
  m.register_module("c_proj", c_proj->to_script(unit));
  std::string src = fmt::format(
      "def forward(self, x: Tensor) -> Tensor:\n"
      "    B = x.size(0)\n"
      "    N = x.size(1)\n"
      "    qkv = self.c_attn.forward(x)\n"
      "    q = qkv[:, :, :{d}]\n"
      "    k = qkv[:, :, {d}:{d2}]\n"
      "    v = qkv[:, :, {d2}:]\n",
      fmt::arg("d", shape.hidden), fmt::arg("d2", 2 * shape.hidden));
  src += script_attend(m, unit, /*rotary=*/false);
  src += "    return self.c_proj.forward(out)\n";
  m.define(src);
  return m;
}

Gpt2BlockImpl::Gpt2BlockImpl(const Gpt2Options& options_, const AttentionShape& shape) : options(options_) {
  const int64_t d = options.n_embd(), inner = options.n_inner() > 0 ? options.n_inner() : 4 * d;
  auto ln = torch::nn::LayerNormOptions({d}).eps(options.layer_norm_epsilon());
  // Registered in GPT2Block's order (ln_1, attn, ln_2, mlp): named_parameters() is the checkpoint's order.
  ln_1 = register_module("ln_1", torch::nn::LayerNorm(ln));
  attn = register_module("attn", Gpt2Attention(shape));
  ln_2 = register_module("ln_2", torch::nn::LayerNorm(ln));
  mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
  c_fc = mlp->register_module("c_fc", Linear(d, inner));
  c_proj = mlp->register_module("c_proj", Linear(inner, d));
}

torch::Tensor Gpt2BlockImpl::forward(const torch::Tensor& x, const LmAttention* lm) {
  const double p = options.dropout();
  auto h = x + torch::dropout(attn(ln_1(x), lm), p, is_training());
  return h + torch::dropout(c_proj(activate(c_fc(ln_2(h)), options.activation())), p, is_training());
}

torch::jit::Module Gpt2BlockImpl::to_script(const ScriptUnit& unit) const {
  auto m = unit.module("Gpt2Block");
  m.register_module("ln_1", layer_norm_script(unit, ln_1));
  m.register_module("attn", attn->to_script(unit));
  m.register_module("ln_2", layer_norm_script(unit, ln_2));
  auto mlp_m = unit.module("Gpt2Mlp");
  mlp_m.register_module("c_fc", c_fc->to_script(unit));
  mlp_m.register_module("c_proj", c_proj->to_script(unit));
  mlp_m.define(fmt::format(
      "def forward(self, x: Tensor) -> Tensor:\n"
      "    f = self.c_fc.forward(x)\n"
      "    return self.c_proj.forward({})\n",
      activation_script(options.activation())));
  m.register_module("mlp", mlp_m);
  m.define(
      "def forward(self, x: Tensor) -> Tensor:\n"
      "    h = x + self.attn.forward(self.ln_1.forward(x))\n"
      "    return h + self.mlp.forward(self.ln_2.forward(h))\n");
  return m;
}

Gpt2Impl::Gpt2Impl(Gpt2Options options_) : options(std::move(options_)) {
  const auto& o = options;
  if (o.vocab_size() <= 0 || o.n_positions() <= 0 || o.n_embd() <= 0 || o.n_layer() < 0 || o.n_head() <= 0)
    throw Error(fmt::format("gpt2: vocab_size {}, n_positions {}, n_embd {}, n_head {} must be positive",
                            o.vocab_size(), o.n_positions(), o.n_embd(), o.n_head()));
  if (o.n_embd() % o.n_head() != 0)
    throw Error(fmt::format("gpt2: n_embd {} is not divisible by n_head {}", o.n_embd(), o.n_head()));
  if (o.max_seq_len() < 0 || o.max_seq_len() > o.n_positions())
    throw Error(fmt::format("gpt2: max_seq_len {} exceeds the checkpoint's n_positions {}", o.max_seq_len(),
                            o.n_positions()));
  const int64_t d = o.n_embd();
  AttentionShape shape;
  shape.hidden = d;
  shape.heads = shape.kv_heads = o.n_head();
  shape.head_dim = d / o.n_head();
  shape.causal = true;
  shape.variant = o.attention();
  if (shape.variant.max_seq_len <= 0) shape.variant.max_seq_len = max_seq_len();  // sigmoid b = -log n

  transformer = register_module("transformer", std::make_shared<torch::nn::Module>());
  wte = transformer->register_module("wte", torch::nn::Embedding(embedding_options(o.vocab_size(), d)));
  wpe = transformer->register_module("wpe", torch::nn::Embedding(embedding_options(o.n_positions(), d)));
  auto list = transformer->register_module("h", std::make_shared<torch::nn::Module>());
  for (int64_t i = 0; i < o.n_layer(); ++i) h.push_back(list->register_module(std::to_string(i), Gpt2Block(o, shape)));
  ln_f = transformer->register_module(
      "ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(o.layer_norm_epsilon())));

  // GPT2PreTrainedModel._init_weights: normal(0, 0.02), biases zero, c_proj scaled by 1/sqrt(2 n_layer).
  if (init_skipped()) return;  // a checkpoint fills them (models/init_guard.h)
  torch::NoGradGuard no_grad;
  wte->weight.normal_(0, kInitStd);
  wpe->weight.normal_(0, kInitStd);
  const double proj_std = kInitStd / std::sqrt(2.0 * std::max<int64_t>(o.n_layer(), 1));
  for (auto& b : h) {
    init_linear(b->attn->c_attn, kInitStd);
    init_linear(b->attn->c_proj, proj_std);
    init_linear(b->c_fc, kInitStd);
    init_linear(b->c_proj, proj_std);
  }
}

int64_t Gpt2Impl::max_seq_len() const { return options.max_seq_len() > 0 ? options.max_seq_len() : options.n_positions(); }

int64_t Gpt2Impl::n_inner() const { return options.n_inner() > 0 ? options.n_inner() : 4 * options.n_embd(); }

torch::Tensor Gpt2Impl::forward(const torch::Tensor& ids) {
  LmInputs in;
  in.ids = ids;
  return forward_lm(in);
}

torch::Tensor Gpt2Impl::forward_lm(const LmInputs& in) {
  return torch::linear(forward_hidden(in), wte->weight);  // the head tied to wte
}

torch::Tensor Gpt2Impl::forward_hidden(const LmInputs& in) {
  if (in.cache || in.segments.defined())
    if (auto why = incremental_blocker(); !why.empty()) throw Error(why);
  LmCall call = prepare_lm_call(in, max_seq_len(), options.vocab_size(), h.size(), "gpt2");
  const int64_t N = in.ids.size(1);
  auto x = embed_ids(wte, in.ids, in.tied_head_grad) + wpe(call.positions);  // [P, N, d] positions broadcast over the batch
  x = torch::dropout(x, options.dropout(), is_training());
  x = run_decoder_layers(*this, h, call.attention, checkpointing_applies(checkpointing_, *this, in.cache != nullptr), x,
                         [](Gpt2BlockImpl& block, const torch::Tensor& t, const LmAttention* a) {
                           return block.forward(t, a);
                         });
  if (in.cache) in.cache->length += N;
  if (in.last_only) x = x.slice(1, N - 1);
  return ln_f(x);
}

std::string Gpt2Impl::incremental_blocker() { return incremental_blocker_of(*this, "gpt2"); }

torch::jit::Module Gpt2Impl::to_script(const ScriptUnit& unit) const {
  auto m = unit.module("Gpt2LMHeadModel");
  auto t = unit.module("Gpt2Model");
  t.register_module("wte", embedding_script(unit, wte));
  t.register_module("wpe", embedding_script(unit, wpe));
  std::vector<torch::jit::Module> blocks;
  std::string calls;
  for (size_t i = 0; i < h.size(); ++i) {
    blocks.push_back(h[i]->to_script(unit));
    calls += fmt::format("    x = {}.forward(x)\n", list_item("h", i));
  }
  t.register_module("h", list_script(unit, "Gpt2Blocks", blocks));
  t.register_module("ln_f", layer_norm_script(unit, ln_f));
  t.define(fmt::format(R"(
def forward(self, ids: Tensor) -> Tensor:
    N = ids.size(1)
    assert N <= {max}, "gpt2: the sequence is longer than the model's positions"
    x = self.wte.forward(ids) + self.wpe.weight[:N]
{calls}    return torch.linear(self.ln_f.forward(x), self.wte.weight)
)",
                       fmt::arg("max", max_seq_len()), fmt::arg("calls", calls)));
  m.register_module("transformer", t);
  m.define("def forward(self, ids: Tensor) -> Tensor:\n    return self.transformer.forward(ids)\n");
  return m;
}

double Gpt2Impl::flops_per_sample() const {
  const double n = max_seq_len(), d = options.n_embd(), inner = n_inner();
  double per_layer = 2 * n * (d * 3 * d + d * d + 2 * d * inner);
  if (!h.empty()) per_layer += h.front()->attn->core_flops(n);
  return options.n_layer() * per_layer + 2 * n * d * options.vocab_size();
}

std::string Gpt2Impl::describe() const {
  const auto& o = options;
  return fmt::format(
      "gpt2(vocab {}, n_positions {}, n_embd {}, n_layer {}, n_head {}, n_inner {}, {}, context {}, head tied to wte; "
      "attention {}; {} parameters)",
      o.vocab_size(), o.n_positions(), o.n_embd(), o.n_layer(), o.n_head(), n_inner(), activation_name(o.activation()),
      max_seq_len(), describe_attention(o.attention(), false), count_string(parameter_count(*this)));
}

std::vector<HfTensor> Gpt2Impl::hf_tensors() {
  std::vector<HfTensor> out{{"transformer.wte.weight", wte->weight}, {"transformer.wpe.weight", wpe->weight}};
  auto conv1d = [&](const std::string& name, Linear& lin) {  // Conv1D: the file holds weight [in, out]
    out.push_back({name + ".weight", lin->weight, true});
    out.push_back({name + ".bias", lin->bias});
  };
  for (size_t i = 0; i < h.size(); ++i) {
    const std::string p = fmt::format("transformer.h.{}.", i);
    auto& b = h[i];
    out.push_back({p + "ln_1.weight", b->ln_1->weight});
    out.push_back({p + "ln_1.bias", b->ln_1->bias});
    conv1d(p + "attn.c_attn", b->attn->c_attn);
    conv1d(p + "attn.c_proj", b->attn->c_proj);
    out.push_back({p + "ln_2.weight", b->ln_2->weight});
    out.push_back({p + "ln_2.bias", b->ln_2->bias});
    conv1d(p + "mlp.c_fc", b->c_fc);
    conv1d(p + "mlp.c_proj", b->c_proj);
  }
  out.push_back({"transformer.ln_f.weight", ln_f->weight});
  out.push_back({"transformer.ln_f.bias", ln_f->bias});
  return out;
}

std::vector<std::string> Gpt2Impl::extra_parameters() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < h.size(); ++i)
    for (const auto& n : h[i]->attn->variant_parameters()) out.push_back(fmt::format("transformer.h.{}.attn.{}", i, n));
  return out;
}

std::shared_ptr<HfModel> make_gpt2(const Gpt2Options& options) { return std::make_shared<Gpt2Impl>(options); }

}  // namespace tunekit::models::hf
