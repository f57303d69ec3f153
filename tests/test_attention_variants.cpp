// Every score x gate x qk_norm combination of models::Attention against a naive reference
// written from docs/methods.md §1–§4, gradients, masks, and TorchScript export parity.
#include <gtest/gtest.h>

#include <cmath>

#include "adapters/attach.h"
#include "models/attention.h"
#include "models/vit.h"
#include "src/from_recipe/adapters.h"
#include "src/export/export.h"
#include "src/recipe/recipe.h"
#include "util/error.h"
#include "tests/helpers.h"

using namespace tunekit;
using namespace tunekit::models;

namespace {

// LayerNorm over the last dimension, by hand.
torch::Tensor naive_layer_norm(const torch::Tensor& x, const torch::nn::LayerNorm& ln) {
  auto mu = x.mean(-1, true);
  auto var = (x - mu).pow(2).mean(-1, true);
  return (x - mu) / torch::sqrt(var + ln->options.eps()) * ln->weight + ln->bias;
}

// Straight from the equations: per head h, S = Q_h K_h^T / sqrt(d_h) (+ mask), A = softmax_row(S)
// or sigma(S + b), O_h = A V_h; gates G = sigma(X W_g^T + b_g) on V, on O_h per channel or per head.
torch::Tensor naive(AttentionImpl& a, const torch::Tensor& x, const torch::Tensor& mask = {}) {
  const auto& var = a.options.variant();
  const int64_t N = x.size(1), C = x.size(2), H = a.options.heads(), Dh = C / H;
  auto lin = [](const Linear& l, const torch::Tensor& t) {
    auto y = torch::matmul(t, l->weight.t());
    return l->bias.defined() ? y + l->bias : y;
  };
  auto q = lin(a.q, x), k = lin(a.k, x), v = lin(a.v, x);
  torch::Tensor g;
  if (var.gate != Gate::None) g = torch::sigmoid(lin(a.gate, x));
  if (var.gate == Gate::Value) v = v * g;
  std::vector<torch::Tensor> heads;
  for (int64_t h = 0; h < H; ++h) {
    auto qh = q.slice(2, h * Dh, (h + 1) * Dh), kh = k.slice(2, h * Dh, (h + 1) * Dh);
    auto vh = v.slice(2, h * Dh, (h + 1) * Dh);
    if (var.qk_norm) {
      qh = naive_layer_norm(qh, a.q_norm);
      kh = naive_layer_norm(kh, a.k_norm);
    }
    auto s = torch::bmm(qh, kh.transpose(1, 2)) / std::sqrt(double(Dh));
    torch::Tensor p;
    if (var.score == Score::Softmax) {
      if (mask.defined()) s = s.masked_fill(mask.logical_not(), -INFINITY);
      auto e = (s - std::get<0>(s.max(-1, true))).exp();
      p = e / e.sum(-1, true);
    } else {
      p = 1.0 / (1.0 + torch::exp(-(s + a.sigmoid_bias())));
      if (mask.defined()) p = p.masked_fill(mask.logical_not(), 0.0);  // sigma(-inf) = 0
    }
    auto oh = torch::bmm(p, vh);
    if (var.gate == Gate::SdpaElementwise) oh = oh * g.slice(2, h * Dh, (h + 1) * Dh);
    if (var.gate == Gate::SdpaHeadwise) oh = oh * g.slice(2, h, h + 1);
    heads.push_back(oh);
  }
  (void)N;
  return lin(a.o, torch::cat(heads, 2));
}

struct Case {
  Score score;
  Gate gate;
  bool qk_norm;
  SigmoidBias bias;
  bool gate_bias = false;
};

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (Score s : {Score::Softmax, Score::Sigmoid})
    for (Gate g : {Gate::None, Gate::SdpaElementwise, Gate::SdpaHeadwise, Gate::Value})
      for (bool qk : {false, true}) cases.push_back({s, g, qk, SigmoidBias::Auto});
  cases.push_back({Score::Sigmoid, Gate::SdpaElementwise, true, SigmoidBias::Learnable});
  cases.push_back({Score::Softmax, Gate::SdpaElementwise, false, SigmoidBias::Auto, true});  // tunekit's b_g
  cases.push_back({Score::Sigmoid, Gate::Value, false, SigmoidBias::Auto, true});
  return cases;
}

std::string name(const Case& c) {
  return to_string(c.score) + "/" + to_string(c.gate) + (c.qk_norm ? "/qk_norm" : "") +
         (c.bias == SigmoidBias::Learnable ? "/learnable_bias" : "") + (c.gate_bias ? "/gate_bias" : "");
}

Attention make(const Case& c, int64_t dim = 12, int64_t heads = 3, int64_t max_len = 5) {
  AttentionVariant v;
  v.score = c.score;
  v.gate = c.gate;
  v.qk_norm = c.qk_norm;
  v.bias_mode = c.bias;
  v.gate_bias = c.gate_bias;
  v.max_seq_len = max_len;
  Attention a(AttentionOptions(dim, heads).variant(v));
  a->to(torch::kDouble);
  torch::NoGradGuard no_grad;
  for (auto& p : a->parameters()) p.add_(0.1 * torch::randn_like(p));  // non-trivial norms, gate bias
  return a;
}

}  // namespace

TEST(AttentionVariants, EveryCombinationMatchesTheNaiveReference) {
  torch::manual_seed(0);
  auto causal = torch::ones({5, 5}, torch::kBool).tril();
  for (const auto& c : all_cases()) {
    auto a = make(c);
    auto x = torch::randn({2, 5, 12}, torch::kDouble);
    EXPECT_LT((a(x) - naive(*a, x)).abs().max().item<double>(), 1e-12) << name(c);
    EXPECT_LT((a(x, causal) - naive(*a, x, causal)).abs().max().item<double>(), 1e-12) << name(c) << " causal";
  }
}

TEST(AttentionVariants, GradcheckDoubleIncludingGateAndBias) {
  torch::manual_seed(1);
  for (const auto& c : all_cases()) {
    if (c.gate == Gate::None && c.qk_norm) continue;  // keep the suite fast; covered by the cases around it
    auto a = make(c, 8, 2, 4);
    auto x = torch::randn({2, 4, 8}, torch::kDouble);
    std::vector<torch::Tensor> inputs{x, a->q->weight, a->v->weight};
    if (c.gate != Gate::None) inputs.push_back(a->gate->weight);
    if (c.gate_bias) inputs.push_back(a->gate->bias);
    if (c.qk_norm) inputs.push_back(a->k_norm->weight);
    if (c.bias == SigmoidBias::Learnable) inputs.push_back(a->sigmoid_bias());
    auto f = [&](const std::vector<torch::Tensor>& in) { return a(in[0]); };
    EXPECT_LT(testkit::gradcheck(f, inputs), 1e-6) << name(c);
    auto causal = torch::ones({4, 4}, torch::kBool).tril();
    auto fm = [&](const std::vector<torch::Tensor>& in) { return a(in[0], causal); };
    EXPECT_LT(testkit::gradcheck(fm, inputs), 1e-6) << name(c) << " causal";
  }
}

TEST(AttentionVariants, SigmoidBiasDefaultsToMinusLogOfTheMaximumLength) {
  models::ViT m(ViTOptions().patch(7).dim(16).depth(1).heads(2).num_classes(3).attention({Score::Sigmoid}));
  // 28 / 7 = 4 -> 16 patches + the class token = 17 positions.
  EXPECT_EQ(m->blocks[0]->attn->sigmoid_bias().item<float>(), static_cast<float>(-std::log(17.0)));  // float32 buffer
  EXPECT_FALSE(m->blocks[0]->attn->sigmoid_bias().requires_grad());  // a buffer unless learnable
  AttentionVariant fixed{Score::Sigmoid, SigmoidBias::Fixed, -10.0};
  Attention a(AttentionOptions(8, 2).variant(fixed));
  EXPECT_DOUBLE_EQ(a->sigmoid_bias().item<double>(), -10.0);
}

TEST(AttentionVariants, GateShapesAndAdapterTargets) {
  AttentionVariant head{Score::Softmax};
  head.gate = Gate::SdpaHeadwise;
  Attention a(AttentionOptions(12, 3).variant(head));
  EXPECT_EQ(a->gate->weight.sizes(), (std::vector<int64_t>{3, 12}));  // W_g in R^{d x H}
  EXPECT_FALSE(a->gate->bias.defined());  // the paper's gate has no bias
  EXPECT_EQ(a->named_parameters().find("gate.bias"), nullptr);
  AttentionVariant with_bias = head;
  with_bias.gate_bias = true;  // tunekit's option: b_g, 0 at the start
  Attention wb(AttentionOptions(12, 3).variant(with_bias));
  EXPECT_TRUE(torch::equal(wb->gate->bias, torch::zeros({3})));
  AttentionVariant elem = head;
  elem.gate = Gate::SdpaElementwise;
  Attention b(AttentionOptions(12, 3).variant(elem));
  EXPECT_EQ(b->gate->weight.sizes(), (std::vector<int64_t>{12, 12}));
  // The gate's Linear is a LoRA target like q and v.
  models::ViT m(ViTOptions().patch(7).dim(16).depth(2).heads(2).num_classes(3).attention(elem));
  AdapterConfig cfg;
  cfg.kind = AdapterKind::Lora;
  cfg.targets = {"blocks.*.attn.gate"};
  EXPECT_EQ(adapters::attach_adapters(*m, from_recipe::attach_options(cfg)).adapted.size(), 2u);
}

TEST(AttentionVariants, CausalMaskIsRespectedBySigmoidScores) {
  torch::manual_seed(2);
  auto a = make({Score::Sigmoid, Gate::SdpaElementwise, true, SigmoidBias::Auto}, 8, 2, 4);
  auto causal = torch::ones({4, 4}, torch::kBool).tril();
  auto x = torch::randn({1, 4, 8}, torch::kDouble);
  auto x2 = x.clone();
  x2.select(1, 3).add_(3.0);
  auto y = a(x, causal), y2 = a(x2, causal);
  EXPECT_TRUE(torch::allclose(y.slice(1, 0, 3), y2.slice(1, 0, 3), 0, 1e-12));
  EXPECT_FALSE(torch::allclose(y.select(1, 3), y2.select(1, 3)));
}

TEST(AttentionVariants, ExportParityForEveryVariant) {
  testkit::TempDir dir;
  torch::manual_seed(3);
  int i = 0;
  for (const auto& c : all_cases()) {
    for (bool post_norm : {false, true}) {
      if (post_norm && c.score == Score::Softmax) continue;
      AttentionVariant v{c.score, c.bias};
      v.gate = c.gate;
      v.qk_norm = c.qk_norm;
      models::ViT m(ViTOptions().patch(7).dim(16).depth(2).heads(2).num_classes(3).attention(v).post_attn_norm(post_norm));
      {
        torch::NoGradGuard no_grad;
        for (auto& p : m->parameters()) p.add_(0.05 * torch::randn_like(p));
      }
      auto r = export_torchscript(*m, torch::randn({3, 1, 28, 28}), dir / ("m" + std::to_string(i++) + ".pt"));
      EXPECT_LE(r.max_abs_diff, kExportTolerance) << name(c) << (post_norm ? "/post_attn_norm" : "");
    }
  }
}

TEST(AttentionVariants, RecipeKeys) {
  Recipe r = parse_recipe(
      "model:\n  post_attn_norm: true\n  attention: {score: sigmoid, gate: sdpa_headwise, qk_norm: true, "
      "sigmoid_bias: learnable}\n",
      "r.yaml");
  EXPECT_EQ(r.model.attention.score, Score::Sigmoid);
  EXPECT_EQ(r.model.attention.gate, Gate::SdpaHeadwise);
  EXPECT_TRUE(r.model.attention.qk_norm);
  EXPECT_EQ(r.model.attention.bias_mode, SigmoidBias::Learnable);
  EXPECT_FALSE(r.model.attention.gate_bias);
  EXPECT_TRUE(r.model.post_attn_norm);
  EXPECT_TRUE(parse_recipe("model: {attention: {gate: value, gate_bias: true}}\n", "r.yaml").model.attention.gate_bias);
  Recipe f = parse_recipe("model: {attention: {score: sigmoid, sigmoid_bias: -10}}\n", "r.yaml");
  EXPECT_EQ(f.model.attention.bias_mode, SigmoidBias::Fixed);
  EXPECT_DOUBLE_EQ(f.model.attention.bias_value, -10.0);
  auto err = [](const std::string& y) {
    try {
      parse_recipe(y, "r.yaml");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(err("model: {attention: {gate: sdpa_elementwse}}\n"),
            "r.yaml:1:27: model.attention.gate: 'sdpa_elementwse' is not one of: none, sdpa_elementwise, "
            "sdpa_headwise, value (did you mean 'sdpa_elementwise'?)");
  EXPECT_EQ(err("model: {attention: {score: sigmoid, sigmoid_bias: big}}\n"),
            "r.yaml:1:51: model.attention.sigmoid_bias: expected auto, learnable or a number, got 'big'");
  EXPECT_EQ(err("model: {attention: {gate_bias: true}}\n"),
            "r.yaml:1:32: model.attention.gate_bias: only applies with a gate (gate is none)");
  EXPECT_EQ(err("model: {attention: {sigmoid_bias: -3}}\n"),
            "r.yaml:1:35: model.attention.sigmoid_bias: only applies to score: sigmoid");
}
