// The Hugging Face families (models/hf): logits against reference forwards written here from the
// published formulas (transformers' GPT2LMHeadModel, LlamaForCausalLM / Qwen2ForCausalLM,
// ViTForImageClassification) with plain tensor ops on the model's named parameters; the exact
// checkpoint names; LoRA on the HF names; gradients; TorchScript; tunekit's attention variants.
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/import.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <string>

#include "adapters/attach.h"
#include "models/hf/families.h"
#include "models/hf/gpt2.h"
#include "models/hf/llama.h"
#include "models/hf/vit.h"
#include "src/export/export.h"
#include "tests/helpers.h"
#include "tests/tiny_hf.h"
#include "util/error.h"

using namespace tunekit;
using namespace tunekit::models::hf;
using torch::indexing::Slice;

namespace {

using Params = std::map<std::string, torch::Tensor>;

Params params_of(torch::nn::Module& m) {
  Params out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().detach();
  return out;
}

std::set<std::string> names_of(torch::nn::Module& m) {
  std::set<std::string> out;
  for (const auto& p : m.named_parameters()) out.insert(p.key());
  return out;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Weights at a scale where attention is far from uniform and every term matters: matrices
// N(0, 1/fan_in), norm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2), cls/positions N(0, 0.5^2).
void randomise(torch::nn::Module& m, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard g;
  for (auto& p : m.named_parameters()) {
    auto& t = p.value();
    const std::string& n = p.key();
    const bool norm = n.find("norm") != std::string::npos || n.find("ln_") != std::string::npos;
    if (t.dim() == 1 && norm && ends_with(n, "weight"))
      t.copy_(1 + 0.1 * torch::randn_like(t));
    else if (t.dim() == 1)
      t.copy_(0.1 * torch::randn_like(t));
    else if (t.dim() == 3)
      t.copy_(0.5 * torch::randn_like(t));
    else
      t.copy_(torch::randn_like(t) / std::sqrt(double(t.numel() / t.size(0))));
  }
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

torch::Tensor embed(const torch::Tensor& table, const torch::Tensor& ids) {
  return table.index_select(0, ids.reshape(-1)).view({ids.size(0), ids.size(1), table.size(1)});
}

// transformers' causal mask: scores above the diagonal replaced by the dtype's lowest value.
torch::Tensor causal(const torch::Tensor& scores) {
  const int64_t N = scores.size(-1);
  auto keep = torch::ones({N, N}, torch::kBool).tril();
  return torch::where(keep, scores, torch::full({}, std::numeric_limits<float>::lowest(), scores.options()));
}

// ---- GPT-2 (modeling_gpt2.py) ----------------------------------------------------------------
torch::Tensor gpt2_reference(const Params& P, const Gpt2Options& o, const torch::Tensor& ids) {
  const int64_t B = ids.size(0), N = ids.size(1), d = o.n_embd(), H = o.n_head(), Dh = d / H;
  const double eps = o.layer_norm_epsilon();
  // Conv1D: y = x @ W + b with W [in, out] as the checkpoint stores it (the model holds W^T).
  auto conv1d = [&](const torch::Tensor& x, const std::string& name) {
    return torch::addmm(P.at(name + ".bias"), x.reshape({-1, x.size(-1)}), P.at(name + ".weight").t())
        .view({B, N, -1});
  };
  auto ln = [&](const torch::Tensor& x, const std::string& name) {
    auto mu = x.mean(-1, true);
    auto var = (x - mu).pow(2).mean(-1, true);
    return (x - mu) / torch::sqrt(var + eps) * P.at(name + ".weight") + P.at(name + ".bias");
  };
  auto gelu_new = [](const torch::Tensor& x) {
    return 0.5 * x * (1.0 + torch::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * torch::pow(x, 3.0))));
  };
  auto heads = [&](const torch::Tensor& t) { return t.view({B, N, H, Dh}).permute({0, 2, 1, 3}); };
  auto x = embed(P.at("transformer.wte.weight"), ids) + P.at("transformer.wpe.weight").index({Slice(0, N)});
  for (int64_t i = 0; i < o.n_layer(); ++i) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    auto qkv = conv1d(ln(x, p + "ln_1"), p + "attn.c_attn").split(d, 2);
    auto q = heads(qkv[0]), k = heads(qkv[1]), v = heads(qkv[2]);
    auto w = torch::matmul(q, k.transpose(-1, -2)) / std::pow(double(Dh), 0.5);
    w = torch::softmax(causal(w), -1);
    auto a = torch::matmul(w, v).permute({0, 2, 1, 3}).reshape({B, N, d});
    x = x + conv1d(a, p + "attn.c_proj");
    x = x + conv1d(gelu_new(conv1d(ln(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj");
  }
  return torch::matmul(ln(x, "transformer.ln_f"), P.at("transformer.wte.weight").t());
}

// ---- Llama / Mistral / Qwen2 (modeling_llama.py, modeling_qwen2.py) ---------------------------
torch::Tensor llama_reference(const Params& P, const LlamaOptions& o, const torch::Tensor& ids) {
  const int64_t B = ids.size(0), N = ids.size(1), H = o.num_attention_heads();
  const int64_t KV = o.num_key_value_heads() > 0 ? o.num_key_value_heads() : H;
  const int64_t Dh = o.head_dim() > 0 ? o.head_dim() : o.hidden_size() / H;
  auto rms = [&](const torch::Tensor& x, const std::string& name) {
    auto variance = x.pow(2).mean(-1, true);
    return P.at(name + ".weight") * (x * torch::rsqrt(variance + o.rms_norm_eps()));
  };
  auto linear = [&](const torch::Tensor& x, const std::string& name) {
    auto y = torch::matmul(x, P.at(name + ".weight").t());
    return P.count(name + ".bias") ? y + P.at(name + ".bias") : y;
  };
  // LlamaRotaryEmbedding and apply_rotary_pos_emb.
  auto inv_freq = 1.0 / torch::pow(o.rope_theta(), torch::arange(0, Dh, 2, torch::kLong).to(torch::kFloat) / Dh);
  auto position_ids = torch::arange(N, torch::kLong).view({1, N});
  auto freqs = torch::matmul(inv_freq.index({torch::indexing::None, Slice(), torch::indexing::None}).expand({1, -1, 1}),
                             position_ids.index({Slice(), torch::indexing::None, Slice()}).to(torch::kFloat))
                   .transpose(1, 2);
  auto emb = torch::cat({freqs, freqs}, -1);
  auto cos = emb.cos().unsqueeze(1), sin = emb.sin().unsqueeze(1);  // [1, 1, N, Dh]
  auto rotate_half = [&](const torch::Tensor& x) {
    auto x1 = x.index({"...", Slice(0, Dh / 2)}), x2 = x.index({"...", Slice(Dh / 2, torch::indexing::None)});
    return torch::cat({-x2, x1}, -1);
  };
  auto repeat_kv = [&](const torch::Tensor& x) {
    return x.index({Slice(), Slice(), torch::indexing::None}).expand({B, KV, H / KV, N, Dh}).reshape({B, H, N, Dh});
  };
  auto h = embed(P.at("model.embed_tokens.weight"), ids);
  for (int64_t i = 0; i < o.num_hidden_layers(); ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    auto a = rms(h, p + "input_layernorm");
    auto q = linear(a, p + "self_attn.q_proj").view({B, N, H, Dh}).transpose(1, 2);
    auto k = linear(a, p + "self_attn.k_proj").view({B, N, KV, Dh}).transpose(1, 2);
    auto v = linear(a, p + "self_attn.v_proj").view({B, N, KV, Dh}).transpose(1, 2);
    q = q * cos + rotate_half(q) * sin;
    k = k * cos + rotate_half(k) * sin;
    auto w = torch::matmul(q, repeat_kv(k).transpose(2, 3)) * std::pow(double(Dh), -0.5);
    w = torch::softmax(causal(w), -1, torch::kFloat);
    auto out = torch::matmul(w, repeat_kv(v)).transpose(1, 2).reshape({B, N, H * Dh});
    h = h + linear(out, p + "self_attn.o_proj");
    auto m = rms(h, p + "post_attention_layernorm");
    h = h + linear(torch::silu(linear(m, p + "mlp.gate_proj")) * linear(m, p + "mlp.up_proj"), p + "mlp.down_proj");
  }
  h = rms(h, "model.norm");
  return torch::matmul(h, (P.count("lm_head.weight") ? P.at("lm_head.weight") : P.at("model.embed_tokens.weight")).t());
}

// ---- ViT (modeling_vit.py, with the image processor's resize/normalise in front) -------------
torch::Tensor vit_reference(const Params& P, const VitOptions& o, const torch::Tensor& images) {
  const auto& pp = o.preprocess();
  const int64_t S = o.image_size(), C = o.num_channels(), d = o.hidden_size(), H = o.num_attention_heads(), Dh = d / H;
  const double eps = o.layer_norm_eps();
  auto x = images * pp.data_std[0] + pp.data_mean[0];
  x = torch::nn::functional::interpolate(
      x, torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{S, S}).mode(torch::kBilinear).align_corners(false));
  x = x.repeat({1, C, 1, 1});
  auto mean = torch::tensor(pp.mean, torch::kDouble).to(torch::kFloat).view({1, C, 1, 1});
  auto stdv = torch::tensor(pp.std, torch::kDouble).to(torch::kFloat).view({1, C, 1, 1});
  x = (x - mean) / stdv;
  const int64_t B = x.size(0);
  auto ln = [&](const torch::Tensor& t, const std::string& name) {
    return torch::layer_norm(t, {d}, P.at(name + ".weight"), P.at(name + ".bias"), eps);
  };
  auto linear = [&](const torch::Tensor& t, const std::string& name) {
    return torch::matmul(t, P.at(name + ".weight").t()) + P.at(name + ".bias");
  };
  auto h = torch::conv2d(x, P.at("vit.embeddings.patch_embeddings.projection.weight"),
                         P.at("vit.embeddings.patch_embeddings.projection.bias"), o.patch_size())
               .flatten(2)
               .transpose(1, 2);
  h = torch::cat({P.at("vit.embeddings.cls_token").expand({B, -1, -1}), h}, 1) + P.at("vit.embeddings.position_embeddings");
  const int64_t N = h.size(1);
  auto heads = [&](const torch::Tensor& t) { return t.view({B, N, H, Dh}).permute({0, 2, 1, 3}); };
  for (int64_t i = 0; i < o.num_hidden_layers(); ++i) {
    const std::string p = "vit.encoder.layer." + std::to_string(i) + ".";
    auto a = ln(h, p + "layernorm_before");
    auto q = heads(linear(a, p + "attention.attention.query")), k = heads(linear(a, p + "attention.attention.key"));
    auto v = heads(linear(a, p + "attention.attention.value"));
    auto w = torch::softmax(torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(double(Dh)), -1);
    auto ctx = torch::matmul(w, v).permute({0, 2, 1, 3}).reshape({B, N, d});
    h = linear(ctx, p + "attention.output.dense") + h;
    auto m = linear(ln(h, p + "layernorm_after"), p + "intermediate.dense");
    m = 0.5 * m * (1.0 + torch::erf(m / std::sqrt(2.0)));  // exact GELU
    h = linear(m, p + "output.dense") + h;
  }
  return linear(ln(h, "vit.layernorm").select(1, 0), "classifier");
}

Gpt2Options tiny_gpt2() {
  return Gpt2Options().vocab_size(50).n_positions(16).n_embd(32).n_layer(2).n_head(4).layer_norm_epsilon(1e-5);
}
// GQA (4 query heads on 2 key/value heads), head_dim 12 != 32 / 4, untied head.
LlamaOptions tiny_llama() {
  return testkit::tiny_llama_options(50, 16).head_dim(12).rms_norm_eps(1e-6).rope_theta(500.0);
}
// Qwen2's shape: q/k/v biases (no o bias), tied embeddings.
LlamaOptions tiny_qwen2() {
  return LlamaOptions()
      .family(Family::Qwen2)
      .vocab_size(50)
      .hidden_size(32)
      .intermediate_size(40)
      .num_hidden_layers(2)
      .num_attention_heads(4)
      .num_key_value_heads(1)
      .rms_norm_eps(1e-6)
      .rope_theta(1000000.0)
      .max_position_embeddings(16)
      .qkv_bias(true)
      .tie_word_embeddings(true);
}
// A 16x16 RGB checkpoint fed Fashion-MNIST-like normalised 1x12x12 images.
VitOptions tiny_vit() {
  ImagePreprocess pp;
  pp.enabled = true;
  pp.data_mean = {0.2860};
  pp.data_std = {0.3530};
  pp.mean = {0.5, 0.4, 0.3};
  pp.std = {0.2, 0.25, 0.3};
  return VitOptions()
      .image_size(16)
      .patch_size(4)
      .num_channels(3)
      .hidden_size(32)
      .num_hidden_layers(2)
      .num_attention_heads(4)
      .intermediate_size(48)
      .num_labels(7)
      .preprocess(pp);
}

torch::Tensor sample_ids(int64_t B, int64_t N, uint64_t seed = 11) {
  torch::manual_seed(seed);
  return torch::randint(0, 50, {B, N}, torch::kLong);
}
torch::Tensor sample_images(int64_t B, uint64_t seed = 12) {
  torch::manual_seed(seed);
  return (torch::rand({B, 1, 12, 12}) - 0.2860) / 0.3530;
}

torch::Tensor eager(torch::nn::Module& m, const std::function<torch::Tensor()>& f) {
  torch::NoGradGuard g;
  m.eval();
  return f();
}

}  // namespace

TEST(HfModels, Gpt2MatchesTheReferenceFormula) {
  auto o = tiny_gpt2();
  auto m = make_gpt2(o);
  randomise(*m, 1);
  auto ids = sample_ids(3, 9);
  auto logits = eager(*m, [&] { return m->forward(ids); });
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 9, 50}));
  EXPECT_EQ(logits.scalar_type(), torch::kFloat);
  auto ref = gpt2_reference(params_of(*m), o, ids);
  EXPECT_LE(max_diff(logits, ref), 1e-4);
  EXPECT_GT(ref.std().item<double>(), 0.3);  // a spread-out reference, not a near-constant one
  // Causal: a token never sees later ones (right padding cannot reach real positions).
  auto ids2 = ids.clone();
  ids2.index_put_({Slice(), Slice(6, torch::indexing::None)}, 0);
  auto logits2 = eager(*m, [&] { return m->forward(ids2); });
  EXPECT_LE(max_diff(logits2.index({Slice(), Slice(0, 6)}), logits.index({Slice(), Slice(0, 6)})), 1e-6);
  EXPECT_GT(max_diff(logits2, logits), 1e-3);
}

TEST(HfModels, Gpt2ExactGeluAndReluActivations) {
  auto ids = sample_ids(2, 5);
  auto base = make_gpt2(tiny_gpt2());
  randomise(*base, 2);
  auto logits = eager(*base, [&] { return base->forward(ids); });
  for (auto act : {Gpt2Activation::Gelu, Gpt2Activation::Relu}) {
    auto m = make_gpt2(tiny_gpt2().activation(act));
    randomise(*m, 2);
    auto out = eager(*m, [&] { return m->forward(ids); });
    EXPECT_GT(max_diff(out, logits), 1e-4) << "activation " << int(act);
    ASSERT_TRUE(out.isfinite().all().item<bool>());
  }
}

TEST(HfModels, LlamaWithGroupedQueryAttentionMatchesTheReferenceFormula) {
  auto o = tiny_llama();
  auto m = make_llama(o);
  EXPECT_EQ(m->family(), Family::Llama);
  randomise(*m, 3);
  auto ids = sample_ids(3, 11);
  auto logits = eager(*m, [&] { return m->forward(ids); });
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 11, 50}));
  auto ref = llama_reference(params_of(*m), o, ids);
  EXPECT_LE(max_diff(logits, ref), 1e-4);
  EXPECT_GT(ref.std().item<double>(), 0.3);
  // The rotation matters: the same model with another theta gives other logits.
  auto m2 = make_llama(tiny_llama().rope_theta(10000.0));
  randomise(*m2, 3);
  EXPECT_GT(max_diff(eager(*m2, [&] { return m2->forward(ids); }), logits), 1e-3);
}

TEST(HfModels, Qwen2WithBiasesAndTiedHeadMatchesTheReferenceFormula) {
  auto o = tiny_qwen2();
  auto m = make_llama(o);
  EXPECT_EQ(m->family(), Family::Qwen2);
  randomise(*m, 4);
  auto P = params_of(*m);
  ASSERT_EQ(P.count("model.layers.0.self_attn.q_proj.bias"), 1u);
  ASSERT_EQ(P.count("model.layers.0.self_attn.o_proj.bias"), 0u);
  ASSERT_EQ(P.count("lm_head.weight"), 0u);
  auto ids = sample_ids(2, 16);  // the whole context
  auto logits = eager(*m, [&] { return m->forward(ids); });
  EXPECT_LE(max_diff(logits, llama_reference(P, o, ids)), 1e-4);
}

TEST(HfModels, VitWithPreprocessingMatchesTheReferenceFormula) {
  auto o = tiny_vit();
  auto m = make_vit(o);
  randomise(*m, 5);
  EXPECT_EQ(m->max_seq_len(), 17);
  auto images = sample_images(4);
  auto logits = eager(*m, [&] { return m->forward(images); });
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{4, 7}));
  auto ref = vit_reference(params_of(*m), o, images);
  EXPECT_LE(max_diff(logits, ref), 1e-4);
  EXPECT_GT(ref.std().item<double>(), 0.3);
  // Without preprocessing the checkpoint's own input is required, and used as it is.
  auto plain = make_vit(tiny_vit().preprocess(ImagePreprocess{}));
  EXPECT_NE(testkit::error_of([&] { plain->forward(images); }).find("expected images [B, 3, 16, 16]"), std::string::npos);
  EXPECT_EQ(eager(*plain, [&] { return plain->forward(torch::randn({2, 3, 16, 16})); }).sizes(),
            (std::vector<int64_t>{2, 7}));
}

TEST(HfModels, ModuleNamesAreTheHuggingFaceKeys) {
  auto layer_keys = [](const std::string& prefix, int64_t layers, const std::vector<std::string>& names) {
    std::set<std::string> out;
    for (int64_t i = 0; i < layers; ++i)
      for (const auto& n : names) out.insert(prefix + std::to_string(i) + "." + n);
    return out;
  };
  auto hf_names = [](HfModel& m) {
    std::set<std::string> out;
    for (const auto& t : m.hf_tensors()) out.insert(t.name);
    return out;
  };
  {
    SCOPED_TRACE("gpt2");
    auto m = make_gpt2(tiny_gpt2());
    auto want = layer_keys("transformer.h.", 2,
                           {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                            "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                            "mlp.c_proj.weight", "mlp.c_proj.bias"});
    want.insert({"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"});
    EXPECT_EQ(names_of(*m), want);
    EXPECT_EQ(hf_names(*m), want);  // no lm_head.weight: tied to wte
    EXPECT_TRUE(m->extra_parameters().empty());
    for (const auto& t : m->hf_tensors()) {
      const bool conv1d = t.name.find("c_") != std::string::npos && ends_with(t.name, ".weight");
      EXPECT_EQ(t.transposed, conv1d) << t.name;
      if (t.name == "transformer.h.0.attn.c_attn.weight") EXPECT_EQ(t.tensor.sizes(), (std::vector<int64_t>{96, 32}));
      if (t.name == "transformer.h.0.mlp.c_fc.weight") EXPECT_EQ(t.tensor.sizes(), (std::vector<int64_t>{128, 32}));
    }
    EXPECT_EQ(m->hf_tensors().front().name, "transformer.wte.weight");
  }
  const std::vector<std::string> llama_layer{
      "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
      "mlp.gate_proj.weight",    "mlp.up_proj.weight",      "mlp.down_proj.weight",    "input_layernorm.weight",
      "post_attention_layernorm.weight"};
  {
    SCOPED_TRACE("llama, untied");
    auto m = make_llama(tiny_llama());
    auto want = layer_keys("model.layers.", 2, llama_layer);
    want.insert({"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"});
    EXPECT_EQ(names_of(*m), want);
    EXPECT_EQ(hf_names(*m), want);
    auto P = params_of(*m);
    EXPECT_EQ(P.at("model.layers.0.self_attn.q_proj.weight").sizes(), (std::vector<int64_t>{48, 32}));
    EXPECT_EQ(P.at("model.layers.0.self_attn.k_proj.weight").sizes(), (std::vector<int64_t>{24, 32}));
    EXPECT_EQ(P.at("model.layers.0.self_attn.o_proj.weight").sizes(), (std::vector<int64_t>{32, 48}));
    // named_parameters() is in the checkpoint's order, and so is hf_tensors().
    std::vector<std::string> order;
    for (const auto& p : m->named_parameters()) order.push_back(p.key());
    std::vector<std::string> hf_order;
    for (const auto& t : m->hf_tensors()) {
      hf_order.push_back(t.name);
      EXPECT_FALSE(t.transposed) << t.name;
    }
    EXPECT_EQ(order, hf_order);
  }
  {
    SCOPED_TRACE("qwen2, tied, biases");
    auto m = make_llama(tiny_qwen2());
    auto want = layer_keys("model.layers.", 2, llama_layer);
    auto biases = layer_keys("model.layers.", 2, {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"});
    want.insert(biases.begin(), biases.end());
    want.insert({"model.embed_tokens.weight", "model.norm.weight"});
    EXPECT_EQ(names_of(*m), want);
    EXPECT_EQ(hf_names(*m), want);
  }
  {
    SCOPED_TRACE("vit");
    auto m = make_vit(tiny_vit());
    auto want = layer_keys(
        "vit.encoder.layer.", 2,
        {"attention.attention.query.weight", "attention.attention.query.bias", "attention.attention.key.weight",
         "attention.attention.key.bias", "attention.attention.value.weight", "attention.attention.value.bias",
         "attention.output.dense.weight", "attention.output.dense.bias", "intermediate.dense.weight",
         "intermediate.dense.bias", "output.dense.weight", "output.dense.bias", "layernorm_before.weight",
         "layernorm_before.bias", "layernorm_after.weight", "layernorm_after.bias"});
    want.insert({"vit.embeddings.cls_token", "vit.embeddings.position_embeddings",
                 "vit.embeddings.patch_embeddings.projection.weight", "vit.embeddings.patch_embeddings.projection.bias",
                 "vit.layernorm.weight", "vit.layernorm.bias", "classifier.weight", "classifier.bias"});
    EXPECT_EQ(names_of(*m), want);
    EXPECT_EQ(hf_names(*m), want);
    std::vector<std::string> order;
    for (const auto& p : m->named_parameters()) order.push_back(p.key());
    std::vector<std::string> hf_order;
    for (const auto& t : m->hf_tensors()) hf_order.push_back(t.name);
    EXPECT_EQ(order, hf_order);
  }
}

TEST(HfModels, HfTensorsAreTheModelsOwnTensors) {
  auto m = make_gpt2(tiny_gpt2());
  auto tensors = m->hf_tensors();
  {
    torch::NoGradGuard g;
    for (auto& t : tensors) t.tensor.fill_(0.25);  // what a loader does: copy into the reference
  }
  for (const auto& p : m->named_parameters()) EXPECT_TRUE((p.value() == 0.25).all().item<bool>()) << p.key();
}

TEST(HfModels, LoraAttachesToTheHuggingFaceNamesAndMergesExactly) {
  auto m = make_llama(tiny_llama());
  randomise(*m, 6);
  auto ids = sample_ids(2, 8);
  auto base = eager(*m, [&] { return m->forward(ids); });
  adapters::AttachOptions a(adapters::AdapterKind::Lora);
  a.targets({"model.layers.*.self_attn.q_proj"}).lora(adapters::LoraOptions(0, 0).r(2).alpha(4));
  auto report = adapters::attach_adapters(*m, a);
  EXPECT_EQ(report.adapted, (std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"}));
  EXPECT_LE(max_diff(eager(*m, [&] { return m->forward(ids); }), base), 1e-6);  // B = 0 at the start
  {
    torch::NoGradGuard g;
    for (auto& p : m->named_parameters())
      if (p.key().find("lora_B") != std::string::npos) p.value().normal_(0, 0.5);
  }
  // hf_tensors() holds the base model only.
  for (const auto& t : m->hf_tensors()) EXPECT_EQ(t.name.find("lora"), std::string::npos) << t.name;
  auto unmerged = eager(*m, [&] { return m->forward(ids); });
  EXPECT_GT(max_diff(unmerged, base), 1e-3);
  adapters::merge_adapters(*m);
  EXPECT_LE(max_diff(eager(*m, [&] { return m->forward(ids); }), unmerged), 1e-5);
  adapters::unmerge_adapters(*m);
  EXPECT_LE(max_diff(eager(*m, [&] { return m->forward(ids); }), unmerged), 1e-6);
  // GPT-2's fused c_attn and ViT's query are Linear hosts too.
  auto g = make_gpt2(tiny_gpt2());
  a.targets({"transformer.h.*.attn.c_attn", "transformer.h.1.mlp.c_fc"});
  EXPECT_EQ(adapters::attach_adapters(*g, a).adapted.size(), 3u);
  auto v = make_vit(tiny_vit());
  a.targets({"vit.encoder.layer.*.attention.attention.query", "classifier"});
  EXPECT_EQ(adapters::attach_adapters(*v, a).adapted.size(), 3u);
}

TEST(HfModels, LlamaAttentionGradientsMatchFiniteDifferences) {
  torch::manual_seed(7);
  auto o = LlamaOptions()
               .vocab_size(20)
               .hidden_size(16)
               .intermediate_size(24)
               .num_hidden_layers(1)
               .num_attention_heads(4)
               .num_key_value_heads(2)
               .head_dim(6)
               .max_position_embeddings(8)
               .qkv_bias(true);
  auto m = std::make_shared<LlamaImpl>(o);
  randomise(*m, 7);
  m->to(torch::kDouble);
  auto attn = m->layers[0]->self_attn;
  auto [cos, sin] = rotary_cos_sin(5, 6, o.rope_theta(), torch::kDouble);
  auto x = torch::randn({2, 5, 16}, torch::kDouble);
  double err = testkit::gradcheck([&](const std::vector<torch::Tensor>& in) { return attn->forward(in[0], cos, sin); }, {x});
  EXPECT_LT(err, 1e-6);
  // And w.r.t. a key/value projection shared by two query heads.
  double werr = testkit::gradcheck(
      [&](const std::vector<torch::Tensor>& in) { return attn->forward(x, cos, sin); }, {attn->k_proj->weight});
  EXPECT_LT(werr, 1e-6);
}

TEST(HfModels, TorchScriptMatchesEagerWithLoraFoldedAndKeepsTheNames) {
  testkit::TempDir dir;
  struct Case {
    std::string name;
    std::shared_ptr<HfModel> model;
    std::vector<std::string> targets;
    torch::Tensor sample;
  };
  models::AttentionVariant gated;
  gated.gate = models::Gate::SdpaHeadwise;
  gated.qk_norm = true;
  std::vector<Case> cases{
      {"gpt2", make_gpt2(tiny_gpt2()), {"transformer.h.*.attn.c_attn", "transformer.h.0.mlp.c_proj"}, sample_ids(3, 7)},
      {"llama", make_llama(tiny_llama()), {"model.layers.*.self_attn.q_proj", "model.layers.*.self_attn.v_proj", "lm_head"},
       sample_ids(3, 9)},
      {"qwen2", make_llama(tiny_qwen2().attention(gated)), {"model.layers.*.mlp.down_proj", "model.layers.0.self_attn.gate"},
       sample_ids(2, 16)},
      {"vit", make_vit(tiny_vit()), {"vit.encoder.layer.*.attention.attention.value", "classifier"}, sample_images(3)},
  };
  std::string py_args;
  for (auto& c : cases) {
    SCOPED_TRACE(c.name);
    randomise(*c.model, 8);
    adapters::AttachOptions a(adapters::AdapterKind::Lora);
    a.targets(c.targets).lora(adapters::LoraOptions(0, 0).r(2).alpha(4));
    adapters::attach_adapters(*c.model, a);
    {
      torch::NoGradGuard g;
      for (auto& p : c.model->named_parameters())
        if (p.key().find("lora_B") != std::string::npos) p.value().normal_(0, 0.5);
    }
    ExportResult r = export_torchscript(*c.model, c.sample, dir / (c.name + ".pt"));  // saves, reloads, compares
    EXPECT_LE(r.max_abs_diff, 1e-5);
    auto loaded = torch::jit::load(r.path);
    std::set<std::string> exported, expected;
    for (const auto& p : loaded.named_parameters()) exported.insert(p.name);
    for (const auto& b : loaded.named_buffers()) exported.insert(b.name);
    for (const auto& p : c.model->named_parameters())
      if (p.key().find(".adapter.") == std::string::npos) expected.insert(p.key());
    for (const auto& b : c.model->named_buffers()) expected.insert(b.key());
    EXPECT_EQ(exported, expected);
    // Another batch and length than the sample.
    auto other = c.name == "vit" ? sample_images(2, 99) : sample_ids(2, 5, 99);
    auto want = eager(*c.model, [&] { return c.model->forward(other); });
    torch::NoGradGuard g;
    EXPECT_LE(max_diff(loaded.forward({other}).toTensor(), want), 1e-5);
    py_args += " " + r.path + " " + r.sample_path;
  }
  // The exports load in Python's torch.jit and give the eager outputs there too.
  std::ofstream(dir / "check.py") << "import sys, torch\n"
                                     "a = sys.argv[1:]\n"
                                     "for path, sample in zip(a[0::2], a[1::2]):\n"
                                     "    m = torch.jit.load(path); s = torch.jit.load(sample)\n"
                                     "    d = (m(s.input) - s.output).abs().max().item()\n"
                                     "    print(path, d)\n"
                                     "    if d > 1e-5: sys.exit(3)\n";
  std::string cmd = std::string(TUNEKIT_PYTHON) + " " + (dir / "check.py") + py_args;
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

TEST(HfModels, AttentionVariantsRunDifferAndAreExtraParameters) {
  models::AttentionVariant sigmoid;
  sigmoid.score = models::Score::Sigmoid;
  sigmoid.bias_mode = models::SigmoidBias::Learnable;
  models::AttentionVariant gate_el;
  gate_el.gate = models::Gate::SdpaElementwise;
  models::AttentionVariant gate_value;
  gate_value.gate = models::Gate::Value;
  gate_value.gate_bias = true;  // tunekit's b_g (the ViT case below has the paper's gate, no bias)
  gate_value.qk_norm = true;
  auto ids = sample_ids(2, 10);
  auto images = sample_images(2);
  // The HF tensors of a variant model copied from the default one: only the variant differs.
  auto same_weights = [](HfModel& from, HfModel& to) {
    auto src = from.hf_tensors();
    auto dst = to.hf_tensors();
    ASSERT_EQ(src.size(), dst.size());
    torch::NoGradGuard g;
    for (size_t i = 0; i < src.size(); ++i) dst[i].tensor.copy_(src[i].tensor);
  };
  auto check = [&](const std::string& what, HfModel& base, HfModel& variant, const torch::Tensor& in,
                   const std::vector<std::string>& extras) {
    SCOPED_TRACE(what);
    same_weights(base, variant);
    auto a = eager(base, [&] { return base.forward(in); });
    auto b = eager(variant, [&] { return variant.forward(in); });
    ASSERT_TRUE(b.isfinite().all().item<bool>());
    EXPECT_GT(max_diff(a, b), 1e-3);
    EXPECT_EQ(variant.extra_parameters(), extras);
    auto P = params_of(variant);
    for (const auto& e : extras) EXPECT_EQ(P.count(e), 1u) << e;
    std::set<std::string> hf;
    for (const auto& t : variant.hf_tensors()) hf.insert(t.name);
    EXPECT_EQ(hf.size() + extras.size(), P.size());
    for (const auto& e : extras) EXPECT_EQ(hf.count(e), 0u) << e;
    // The variant trains: its extra parameters get gradients.
    variant.train();
    variant.zero_grad();
    variant.forward(in).pow(2).mean().backward();
    for (const auto& e : extras) {
      auto grad = variant.named_parameters()[e].grad();
      ASSERT_TRUE(grad.defined()) << e;
      // A bias shared by every key shifts all of a query's scores alike: softmax ignores it.
      if (!ends_with(e, "k_norm.bias")) EXPECT_GT(grad.abs().sum().item<double>(), 0) << e;
    }
  };
  auto g0 = make_gpt2(tiny_gpt2());
  randomise(*g0, 9);
  auto g1 = make_gpt2(tiny_gpt2().attention(sigmoid));
  check("gpt2 sigmoid", *g0, *g1, ids, {"transformer.h.0.attn.sigmoid_bias", "transformer.h.1.attn.sigmoid_bias"});
  EXPECT_NEAR(dynamic_cast<Gpt2Impl&>(*g1).h[0]->attn->sigmoid_bias.item<double>(), -std::log(16.0), 1e-6);
  auto l0 = make_llama(tiny_llama());
  randomise(*l0, 10);
  auto l1 = make_llama(tiny_llama().attention(gate_value));
  std::vector<std::string> l1_extras;
  for (int i = 0; i < 2; ++i)
    for (const char* n : {"gate.weight", "gate.bias", "q_norm.weight", "q_norm.bias", "k_norm.weight", "k_norm.bias"})
      l1_extras.push_back("model.layers." + std::to_string(i) + ".self_attn." + n);
  check("llama value gate + qk_norm", *l0, *l1, ids, l1_extras);
  EXPECT_EQ(params_of(*l1).at("model.layers.0.self_attn.gate.weight").sizes(), (std::vector<int64_t>{24, 32}));  // kv width
  auto v0 = make_vit(tiny_vit());
  randomise(*v0, 11);
  auto v1 = make_vit(tiny_vit().attention(gate_el));
  check("vit elementwise gate", *v0, *v1, images,
        {"vit.encoder.layer.0.attention.attention.gate.weight", "vit.encoder.layer.1.attention.attention.gate.weight"});
  EXPECT_EQ(params_of(*v1).count("vit.encoder.layer.0.attention.attention.gate.bias"), 0u);
  // The sigmoid score exports like the rest (its bias exported under its eager name).
  testkit::TempDir dir;
  EXPECT_LE(export_torchscript(*g1, ids, dir / "g1.pt").max_abs_diff, 1e-5);
  EXPECT_LE(export_torchscript(*v1, images, dir / "v1.pt").max_abs_diff, 1e-5);
}

TEST(HfModels, ClearErrorsForBadInputsAndOptions) {
  auto g = make_gpt2(tiny_gpt2());
  EXPECT_NE(testkit::error_of([&] { g->forward(sample_ids(1, 17)); }).find("sequence length 17 is outside 1..16"),
            std::string::npos);
  EXPECT_NE(testkit::error_of([&] { g->forward(torch::full({1, 3}, 50, torch::kLong)); }).find("outside the vocabulary"),
            std::string::npos);
  EXPECT_NE(testkit::error_of([&] { g->forward(torch::zeros({1, 3})); }).find("int64"), std::string::npos);
  auto short_llama = make_llama(tiny_llama().max_seq_len(8));
  EXPECT_EQ(short_llama->max_seq_len(), 8);
  EXPECT_NE(testkit::error_of([&] { short_llama->forward(sample_ids(1, 9)); }).find("outside 1..8"), std::string::npos);
  EXPECT_NE(testkit::error_of([&] { make_llama(tiny_llama().num_key_value_heads(3)); }).find("num_key_value_heads 3"),
            std::string::npos);
  EXPECT_NE(testkit::error_of([&] { make_gpt2(tiny_gpt2().max_seq_len(32)); }).find("n_positions 16"), std::string::npos);
  EXPECT_NE(testkit::error_of([&] { make_vit(tiny_vit().patch_size(5)); }).find("patch_size 5"), std::string::npos);
  auto v = make_vit(tiny_vit());
  EXPECT_NE(testkit::error_of([&] { v->forward(torch::randn({1, 2, 12, 12})); }).find("[B, 1 or 3, H, W]"),
            std::string::npos);
}

TEST(HfModels, DescribeAndFlops) {
  auto g = make_gpt2(tiny_gpt2());
  EXPECT_NE(g->describe().find("gpt2(vocab 50"), std::string::npos) << g->describe();
  auto l = make_llama(tiny_llama());
  EXPECT_NE(l->describe().find("heads 4 (kv 2, head_dim 12)"), std::string::npos) << l->describe();
  auto v = make_vit(tiny_vit());
  EXPECT_NE(v->describe().find("labels 7"), std::string::npos) << v->describe();
  // GPT-2 per layer at n tokens: 2n(3d^2 + d^2 + 2 d inner) + 4 n^2 d; head 2 n d V.
  const double n = 16, d = 32, inner = 128;
  EXPECT_DOUBLE_EQ(g->flops_per_sample(), 2 * (2 * n * (4 * d * d + 2 * d * inner) + 4 * n * n * d) + 2 * n * d * 50);
  EXPECT_GT(l->flops_per_sample(), 0);
  EXPECT_GT(v->flops_per_sample(), 0);
}
