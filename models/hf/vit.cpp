#include "models/hf/vit.h"

#include <fmt/format.h>

#include "models/block.h"
#include "models/hf/families.h"
#include "models/init_guard.h"
#include "util/error.h"

namespace tunekit::models::hf {

namespace {
constexpr double kInitStd = 0.02;  // ViTConfig.initializer_range

// [1, C, 1, 1] of the values (a 0-dim tensor for one value, which broadcasts over any channels).
torch::Tensor per_channel(const std::vector<double>& values, const torch::Tensor& like) {
  auto t = torch::tensor(values, torch::kDouble).to(like.scalar_type());
  return values.size() == 1 ? t.squeeze() : t.view({1, -1, 1, 1});
}

std::string per_channel_script(const std::vector<double>& values) {
  if (values.size() == 1) return py_float(values[0]);
  std::string list;
  for (double v : values) list += (list.empty() ? "" : ", ") + py_float(v);
  return fmt::format("torch.tensor([{}], dtype=x.dtype).view(1, {}, 1, 1)", list, values.size());
}

std::string list_string(const std::vector<double>& v) {
  std::string out;
  for (double x : v) out += (out.empty() ? "" : ", ") + fmt::format("{}", x);
  return "[" + out + "]";
}
}  // namespace

VitSelfAttentionImpl::VitSelfAttentionImpl(AttentionShape shape_, bool qkv_bias_)
    : HfAttentionBase(std::move(shape_)), qkv_bias(qkv_bias_) {
  reset();
}

void VitSelfAttentionImpl::reset() {
  const int64_t d = shape.hidden;
  query = register_module("query", Linear(LinearOptions(d, d).bias(qkv_bias)));
  key = register_module("key", Linear(LinearOptions(d, d).bias(qkv_bias)));
  value = register_module("value", Linear(LinearOptions(d, d).bias(qkv_bias)));
  register_variant();
}

torch::Tensor VitSelfAttentionImpl::forward(const torch::Tensor& x) { return attend(x, query(x), key(x), value(x)); }

torch::jit::Module VitSelfAttentionImpl::to_script(const ScriptUnit& unit) const {
  auto m = unit.module("VitSelfAttention");
  m.register_module("query", query->to_script(unit));
  m.register_module("key", key->to_script(unit));
  m.register_module("value", value->to_script(unit));
  std::string src =
      "def forward(self, x: Tensor) -> Tensor:\n"
      "    B = x.size(0)\n"
      "    N = x.size(1)\n"
      "    q = self.query.forward(x)\n"
      "    k = self.key.forward(x)\n"
      "    v = self.value.forward(x)\n";
  src += script_attend(m, unit, /*rotary=*/false);
  src += "    return out\n";
  m.define(src);
  return m;
}

VitLayerImpl::VitLayerImpl(const VitOptions& options_, const AttentionShape& shape) : options(options_) {
  const int64_t d = options.hidden_size();
  auto ln = torch::nn::LayerNormOptions({d}).eps(options.layer_norm_eps());
  // Registered in ViTLayer's order (attention, intermediate, output, layernorm_before,
  // layernorm_after): named_parameters() is the checkpoint's order.
  attention = register_module("attention", std::make_shared<torch::nn::Module>());
  self_attention = attention->register_module("attention", VitSelfAttention(shape, options.qkv_bias()));
  attention_output = attention->register_module("output", std::make_shared<torch::nn::Module>());
  attention_dense = attention_output->register_module("dense", Linear(d, d));
  intermediate = register_module("intermediate", std::make_shared<torch::nn::Module>());
  intermediate_dense = intermediate->register_module("dense", Linear(d, options.intermediate_size()));
  output = register_module("output", std::make_shared<torch::nn::Module>());
  output_dense = output->register_module("dense", Linear(options.intermediate_size(), d));
  layernorm_before = register_module("layernorm_before", torch::nn::LayerNorm(ln));
  layernorm_after = register_module("layernorm_after", torch::nn::LayerNorm(ln));
}

torch::Tensor VitLayerImpl::forward(const torch::Tensor& x) {
  const double p = options.dropout();
  auto h = x + torch::dropout(attention_dense(self_attention(layernorm_before(x))), p, is_training());
  return h + torch::dropout(output_dense(torch::gelu(intermediate_dense(layernorm_after(h)))), p, is_training());
}

torch::jit::Module VitLayerImpl::to_script(const ScriptUnit& unit) const {
  auto m = unit.module("VitLayer");
  m.register_module("attention",
                    container_script(unit, "VitAttention",
                                     {{"attention", self_attention->to_script(unit)},
                                      {"output", container_script(unit, "VitSelfOutput",
                                                                  {{"dense", attention_dense->to_script(unit)}})}}));
  m.register_module("intermediate",
                    container_script(unit, "VitIntermediate", {{"dense", intermediate_dense->to_script(unit)}}));
  m.register_module("output", container_script(unit, "VitOutput", {{"dense", output_dense->to_script(unit)}}));
  m.register_module("layernorm_before", layer_norm_script(unit, layernorm_before));
  m.register_module("layernorm_after", layer_norm_script(unit, layernorm_after));
  m.define(R"(
def forward(self, x: Tensor) -> Tensor:
    h = x + self.attention.output.dense.forward(self.attention.attention.forward(self.layernorm_before.forward(x)))
    f = torch.gelu(self.intermediate.dense.forward(self.layernorm_after.forward(h)))
    return h + self.output.dense.forward(f)
)");
  return m;
}

VitImpl::VitImpl(VitOptions options_) : options(std::move(options_)) {
  const auto& o = options;
  if (o.image_size() <= 0 || o.patch_size() <= 0 || o.image_size() % o.patch_size() != 0)
    throw Error(fmt::format("vit: image_size {} is not a positive multiple of patch_size {}", o.image_size(),
                            o.patch_size()));
  if (o.hidden_size() <= 0 || o.num_attention_heads() <= 0 || o.hidden_size() % o.num_attention_heads() != 0)
    throw Error(fmt::format("vit: hidden_size {} is not divisible by num_attention_heads {}", o.hidden_size(),
                            o.num_attention_heads()));
  if (o.num_channels() <= 0 || o.intermediate_size() <= 0 || o.num_labels() <= 0 || o.num_hidden_layers() < 0)
    throw Error(fmt::format("vit: num_channels {}, intermediate_size {}, num_labels {} must be positive",
                            o.num_channels(), o.intermediate_size(), o.num_labels()));
  const auto& pp = o.preprocess();
  if (pp.enabled) {
    auto sized = [&](const std::vector<double>& v, const char* what, size_t n) {
      if (v.empty() || (v.size() != 1 && v.size() != n))
        throw Error(fmt::format("vit: preprocessing {} has {} values; expected 1 or {}", what, v.size(), n));
    };
    sized(pp.mean, "image_mean", o.num_channels());
    sized(pp.std, "image_std", o.num_channels());
    if (pp.data_mean.empty() || pp.data_std.empty() || pp.data_mean.size() != pp.data_std.size())
      throw Error(fmt::format("vit: preprocessing data mean {} and std {} differ in length",
                              list_string(pp.data_mean), list_string(pp.data_std)));
    for (const auto* v : {&pp.std, &pp.data_std})
      for (double s : *v)
        if (s == 0) throw Error("vit: preprocessing standard deviations must be non-zero");
  }
  const int64_t d = o.hidden_size();
  AttentionShape shape;
  shape.hidden = d;
  shape.heads = shape.kv_heads = o.num_attention_heads();
  shape.head_dim = d / o.num_attention_heads();
  shape.causal = false;
  shape.variant = o.attention();
  if (shape.variant.max_seq_len <= 0) shape.variant.max_seq_len = max_seq_len();  // sigmoid b = -log n

  // ViTForImageClassification: vit (embeddings, encoder, layernorm), then classifier.
  vit = register_module("vit", std::make_shared<torch::nn::Module>());
  embeddings = vit->register_module("embeddings", std::make_shared<torch::nn::Module>());
  cls_token = embeddings->register_parameter("cls_token", torch::zeros({1, 1, d}));
  position_embeddings = embeddings->register_parameter("position_embeddings", torch::zeros({1, max_seq_len(), d}));
  patch_embeddings = embeddings->register_module("patch_embeddings", std::make_shared<torch::nn::Module>());
  projection = patch_embeddings->register_module(
      "projection",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(o.num_channels(), d, o.patch_size()).stride(o.patch_size())));
  encoder = vit->register_module("encoder", std::make_shared<torch::nn::Module>());
  auto list = encoder->register_module("layer", std::make_shared<torch::nn::Module>());
  for (int64_t i = 0; i < o.num_hidden_layers(); ++i)
    layer.push_back(list->register_module(std::to_string(i), VitLayer(o, shape)));
  layernorm = vit->register_module("layernorm",
                                   torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(o.layer_norm_eps())));
  classifier = register_module("classifier", Linear(d, o.num_labels()));

  // ViTPreTrainedModel._init_weights (normal in place of its truncated normal): weights
  // N(0, 0.02), biases zero, cls token and positions N(0, 0.02).
  if (init_skipped()) return;  // a checkpoint fills them (models/init_guard.h)
  torch::NoGradGuard no_grad;
  cls_token.normal_(0, kInitStd);
  position_embeddings.normal_(0, kInitStd);
  projection->weight.normal_(0, kInitStd);
  projection->bias.zero_();
  for (auto& l : layer)
    for (Linear* lin : {&l->self_attention->query, &l->self_attention->key, &l->self_attention->value,
                        &l->attention_dense, &l->intermediate_dense, &l->output_dense})
      init_linear(*lin, kInitStd);
  init_linear(classifier, kInitStd);
}

int64_t VitImpl::num_patches() const {
  const int64_t side = options.image_size() / options.patch_size();
  return side * side;
}

torch::Tensor VitImpl::preprocess(const torch::Tensor& x) const {
  const auto& o = options;
  const auto& pp = o.preprocess();
  const int64_t S = o.image_size(), C = o.num_channels();
  if (!pp.enabled) {
    if (x.dim() != 4 || x.size(1) != C || x.size(2) != S || x.size(3) != S)
      throw Error(fmt::format("vit: expected images [B, {}, {}, {}], got {} (enable preprocessing to resize)", C, S, S,
                              c10::str(x.sizes())));
    return x;
  }
  if (x.dim() != 4 || (x.size(1) != 1 && x.size(1) != C))
    throw Error(fmt::format("vit: expected images [B, 1 or {}, H, W], got {}", C, c10::str(x.sizes())));
  if (pp.data_mean.size() != 1 && int64_t(pp.data_mean.size()) != x.size(1))
    throw Error(fmt::format("vit: the data's mean {} does not fit images with {} channels", list_string(pp.data_mean),
                            x.size(1)));
  // Undo the data's normalisation: x01 = x * data_std + data_mean.
  auto h = x * per_channel(pp.data_std, x) + per_channel(pp.data_mean, x);
  if (h.size(2) != S || h.size(3) != S) {  // F.interpolate(mode="bilinear", align_corners=False), no antialias
    const std::vector<int64_t> size{S, S};
    h = torch::upsample_bilinear2d(h, at::IntArrayRef(size), false, c10::nullopt, c10::nullopt);
  }
  if (h.size(1) != C) h = h.expand({h.size(0), C, S, S});  // grey -> num_channels copies
  return (h - per_channel(pp.mean, h)) / per_channel(pp.std, h);
}

torch::Tensor VitImpl::forward(const torch::Tensor& images) {
  auto x = preprocess(images);
  auto h = projection(x).flatten(2).transpose(1, 2);
  h = torch::cat({cls_token.expand({h.size(0), -1, -1}).to(h.scalar_type()), h}, 1) + position_embeddings;
  h = torch::dropout(h, options.dropout(), is_training());
  for (auto& l : layer) h = l(h);
  return classifier(layernorm(h).select(1, 0));
}

torch::jit::Module VitImpl::to_script(const ScriptUnit& unit) const {
  const auto& o = options;
  const auto& pp = o.preprocess();
  const int64_t S = o.image_size(), C = o.num_channels();
  auto conv = unit.module("Conv2d");
  conv.register_parameter("weight", projection->weight.detach().clone(), false);
  conv.register_parameter("bias", projection->bias.detach().clone(), false);
  conv.define(fmt::format("def forward(self, x: Tensor) -> Tensor:\n"
                          "    return torch.conv2d(x, self.weight, self.bias, [{p}, {p}])\n",
                          fmt::arg("p", o.patch_size())));
  auto emb = unit.module("VitEmbeddings");
  emb.register_parameter("cls_token", cls_token.detach().clone(), false);
  emb.register_parameter("position_embeddings", position_embeddings.detach().clone(), false);
  emb.register_module("patch_embeddings", container_script(unit, "VitPatchEmbeddings", {{"projection", conv}}));
  emb.define(R"(
def forward(self, x: Tensor) -> Tensor:
    h = self.patch_embeddings.projection.forward(x).flatten(2).transpose(1, 2)
    return torch.cat([self.cls_token.expand(h.size(0), -1, -1), h], 1) + self.position_embeddings
)");
  std::vector<torch::jit::Module> items;
  std::string calls;
  for (size_t i = 0; i < layer.size(); ++i) {
    items.push_back(layer[i]->to_script(unit));
    calls += fmt::format("    h = {}.forward(h)\n", list_item("encoder.layer", i));
  }
  auto model = unit.module("VitModel");
  model.register_module("embeddings", emb);
  model.register_module("encoder", container_script(unit, "VitEncoder", {{"layer", list_script(unit, "VitLayers", items)}}));
  model.register_module("layernorm", layer_norm_script(unit, layernorm));
  model.define(fmt::format(R"(
def forward(self, x: Tensor) -> Tensor:
    h = self.embeddings.forward(x)
{calls}    return self.layernorm.forward(h)
)",
                           fmt::arg("calls", calls)));
  auto m = unit.module("VitForImageClassification");
  m.register_module("vit", model);
  m.register_module("classifier", classifier->to_script(unit));
  std::string pre;
  if (pp.enabled) {
    pre = fmt::format("    x = x * {} + {}\n", per_channel_script(pp.data_std), per_channel_script(pp.data_mean));
    pre += fmt::format(
        "    if x.size(2) != {S} or x.size(3) != {S}:\n"
        "        x = torch.upsample_bilinear2d(x, [{S}, {S}], False, None, None)\n"
        "    if x.size(1) != {C}:\n"
        "        x = x.expand(x.size(0), {C}, {S}, {S})\n",
        fmt::arg("S", S), fmt::arg("C", C));
    pre += fmt::format("    x = (x - {}) / {}\n", per_channel_script(pp.mean), per_channel_script(pp.std));
  }
  m.define(fmt::format(R"(
def forward(self, x: Tensor) -> Tensor:
{pre}    return self.classifier.forward(self.vit.forward(x).select(1, 0))
)",
                       fmt::arg("pre", pre)));
  return m;
}

double VitImpl::flops_per_sample() const {
  const auto& o = options;
  const double n = max_seq_len(), d = o.hidden_size(), inner = o.intermediate_size();
  const double patch_in = double(o.num_channels() * o.patch_size() * o.patch_size());
  double per_layer = 2 * n * (4 * d * d + 2 * d * inner);
  if (!layer.empty()) per_layer += layer.front()->self_attention->core_flops(n);
  return 2 * num_patches() * patch_in * d + o.num_hidden_layers() * per_layer + 2 * d * o.num_labels();
}

std::string VitImpl::describe() const {
  const auto& o = options;
  const auto& pp = o.preprocess();
  std::string pre = pp.enabled ? fmt::format(", images resized and normalised (mean {}, std {})", list_string(pp.mean),
                                             list_string(pp.std))
                               : "";
  return fmt::format(
      "vit(image {}x{}x{}, patch {}, hidden {}, layers {}, heads {}, intermediate {}, labels {}{}; attention {}; {} "
      "parameters)",
      o.num_channels(), o.image_size(), o.image_size(), o.patch_size(), o.hidden_size(), o.num_hidden_layers(),
      o.num_attention_heads(), o.intermediate_size(), o.num_labels(), pre, describe_attention(o.attention(), false),
      count_string(parameter_count(*this)));
}

std::vector<HfTensor> VitImpl::hf_tensors() {
  std::vector<HfTensor> out{{"vit.embeddings.cls_token", cls_token},
                            {"vit.embeddings.position_embeddings", position_embeddings},
                            {"vit.embeddings.patch_embeddings.projection.weight", projection->weight},
                            {"vit.embeddings.patch_embeddings.projection.bias", projection->bias}};
  auto linear = [&](const std::string& name, Linear& lin) {
    out.push_back({name + ".weight", lin->weight});
    if (lin->bias.defined()) out.push_back({name + ".bias", lin->bias});
  };
  auto norm = [&](const std::string& name, torch::nn::LayerNorm& ln) {
    out.push_back({name + ".weight", ln->weight});
    out.push_back({name + ".bias", ln->bias});
  };
  for (size_t i = 0; i < layer.size(); ++i) {
    const std::string p = fmt::format("vit.encoder.layer.{}.", i);
    auto& l = layer[i];
    linear(p + "attention.attention.query", l->self_attention->query);
    linear(p + "attention.attention.key", l->self_attention->key);
    linear(p + "attention.attention.value", l->self_attention->value);
    linear(p + "attention.output.dense", l->attention_dense);
    linear(p + "intermediate.dense", l->intermediate_dense);
    linear(p + "output.dense", l->output_dense);
    norm(p + "layernorm_before", l->layernorm_before);
    norm(p + "layernorm_after", l->layernorm_after);
  }
  norm("vit.layernorm", layernorm);
  linear("classifier", classifier);
  return out;
}

std::vector<std::string> VitImpl::extra_parameters() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < layer.size(); ++i)
    for (const auto& n : layer[i]->self_attention->variant_parameters())
      out.push_back(fmt::format("vit.encoder.layer.{}.attention.attention.{}", i, n));
  return out;
}

std::shared_ptr<HfModel> make_vit(const VitOptions& options) { return std::make_shared<VitImpl>(options); }

}  // namespace tunekit::models::hf
