// The gating family (docs/methods.md §11) against hand-computed values, and prompt experts (§10):
// g ≡ 0 is the frozen model exactly, gradients reach only the experts and the gate, usage is
// reported, export parity for every placement and gate.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "adapters/attach.h"
#include "adapters/gating.h"
#include "adapters/prompt_expert.h"
#include "models/linear.h"
#include "models/attention.h"
#include "adapters/prefix.h"
#include "models/text.h"
#include "models/vit.h"
#include "src/from_recipe/adapters.h"
#include "src/eval/evaluator.h"
#include "src/export/export.h"
#include "src/io/adapter_file.h"
#include "src/io/safetensors.h"
#include "util/error.h"
#include "tests/eval_parts.h"
#include "tests/helpers.h"

using namespace tunekit;
using adapters::GateKind;

namespace {
double sig(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// A gate over 2 experts in 2-D with β = I and b = [0, 0.5]; x = [1, 0] gives s = [1, 0.5].
adapters::Gate fixed_gate(adapters::GateOptions o) {
  adapters::Gate g(o);
  g->to(torch::kDouble);
  torch::NoGradGuard no_grad;
  g->weight.copy_(torch::eye(2));
  g->bias.copy_(torch::tensor({0.0, 0.5}));
  return g;
}
const torch::Tensor& x10() {
  static auto x = torch::tensor({{1.0, 0.0}}, torch::kDouble);
  return x;
}
torch::Tensor softmax_of(std::vector<double> v) { return torch::softmax(torch::tensor(v, torch::kDouble), 0); }

AdapterConfig prompt_cfg(std::vector<std::string> targets, GateKind kind = GateKind::Softmax, int64_t experts = 1) {
  AdapterConfig c;
  c.kind = AdapterKind::PromptExpert;
  c.targets = std::move(targets);
  c.experts = experts;
  c.gate.kind = kind;
  c.gate.top_k = 2;
  return c;
}

models::ViT vit() {
  return models::ViT(models::ViTOptions().image_size(8).patch(4).dim(16).depth(2).heads(2).num_classes(3));
}
}  // namespace

TEST(Gates, HandComputedWeightsWithAFrozenReference) {
  auto w = [](adapters::GateOptions o) { return fixed_gate(o)->forward(x10()).squeeze(0); };
  auto o = adapters::GateOptions(2, 2);
  EXPECT_TRUE(torch::allclose(w(o), softmax_of({0, 1, 0.5})));
  EXPECT_TRUE(torch::allclose(w(adapters::GateOptions(o).kind(GateKind::Sigmoid)),
                              torch::tensor({1 - sig(1) - sig(0.5), sig(1), sig(0.5)}, torch::kDouble)));
  // top-2 of [0, 1, 0.5] keeps the two experts; the frozen reference gets 0.
  auto top = w(adapters::GateOptions(o).kind(GateKind::TopkSoftmax).top_k(2));
  EXPECT_EQ(top[0].item<double>(), 0.0);
  EXPECT_TRUE(torch::allclose(top.slice(0, 1, 3), softmax_of({1, 0.5})));
  auto top1 = w(adapters::GateOptions(o).kind(GateKind::TopkSoftmax).top_k(1));
  EXPECT_TRUE(torch::equal(top1, torch::tensor({0.0, 1.0, 0.0}, torch::kDouble)));
  // dense-to-sparse: softmax([0, tanh(1)/T + 0, tanh(0)/T + 0.5]) with T = 0.5
  EXPECT_TRUE(torch::allclose(
      w(adapters::GateOptions(o).kind(GateKind::DenseToSparse).act(adapters::GateActivation::Tanh).temperature(0.5)),
      softmax_of({0, std::tanh(1.0) / 0.5, 0.5})));
  // cosine without the projection (tunekit's form): s_i = β_iᵀx / ((‖x‖ + τ1)(‖β_i‖ + τ2)) / T + b_i
  const double t1 = 0.1, t2 = 0.2, T = 2.0, den = (1 + t1) * (1 + t2);
  EXPECT_TRUE(torch::allclose(
      w(adapters::GateOptions(o).kind(GateKind::Cosine).proj_dim(0).tau1(t1).tau2(t2).temperature(T)),
      softmax_of({0, 1 / den / T, 0 / den / T + 0.5})));
  // Euclidean: s_i = −‖x − c_i‖² / T + b_i with c = rows of I: ‖x − e1‖² = 0, ‖x − e2‖² = 2
  double s1 = 0, s2 = -2 / T + 0.5;
  EXPECT_TRUE(torch::allclose(w(adapters::GateOptions(o).kind(GateKind::EuclideanSigmoid).temperature(T)),
                              torch::tensor({1 - sig(s1) - sig(s2), sig(s1), sig(s2)}, torch::kDouble)));
  // normalised sigmoid: σ([0, 1, 0.5]) / Σ σ([0, 1, 0.5]); without the reference σ([1, 0.5]) / Σ
  const double z = sig(0) + sig(1) + sig(0.5);
  EXPECT_TRUE(torch::allclose(w(adapters::GateOptions(o).kind(GateKind::NormalizedSigmoid)),
                              torch::tensor({sig(0) / z, sig(1) / z, sig(0.5) / z}, torch::kDouble)));
  EXPECT_TRUE(torch::allclose(w(adapters::GateOptions(o).kind(GateKind::NormalizedSigmoid).reference(false)),
                              torch::tensor({sig(1) / (sig(1) + sig(0.5)), sig(0.5) / (sig(1) + sig(0.5))}, torch::kDouble)));
}

// The paper's cosine router (2405.14131, the default form): the token projected, z = P x, against
// expert embeddings e_i, s_i = zᵀe_i / ((‖z‖ + τ1)(‖e_i‖ + τ2)) / T, no bias; x = [1, 0],
// P = diag(2, 1): z = [2, 0]; e_1 = [1, 0], e_2 = [0.6, 0.8] (unit norms): zᵀe = [2, 1.2].
TEST(Gates, PaperCosineRouterProjectsTheTokenAndHasNoBias) {
  const double t1 = 0.1, t2 = 0.2, T = 2.0;
  adapters::Gate g(adapters::GateOptions(2, 2).kind(GateKind::Cosine).proj_dim(2).tau1(t1).tau2(t2).temperature(T));
  g->to(torch::kDouble);
  EXPECT_FALSE(g->bias.defined());
  EXPECT_EQ(g->named_parameters().size(), 2u);  // proj and the embeddings
  {
    torch::NoGradGuard no_grad;
    g->proj.copy_(torch::tensor({{2.0, 0.0}, {0.0, 1.0}}));
    g->weight.copy_(torch::tensor({{1.0, 0.0}, {0.6, 0.8}}));
  }
  const double den = (2 + t1) * (1 + t2);
  EXPECT_TRUE(torch::allclose(g(x10()).squeeze(0), softmax_of({0, 2 / den / T, 1.2 / den / T})));
  // The default projection width, and a recipe that names it for another kind is refused.
  EXPECT_EQ(adapters::Gate(adapters::GateOptions(6, 3).kind(GateKind::Cosine))->proj.sizes(),
            (std::vector<int64_t>{8, 6}));
}

TEST(Gates, NormalisationAndTemperatureLimits) {
  torch::manual_seed(0);
  auto x = torch::randn({5, 4}, torch::kDouble);
  for (auto kind : {GateKind::Softmax, GateKind::TopkSoftmax, GateKind::DenseToSparse, GateKind::Cosine,
                    GateKind::NormalizedSigmoid}) {
    for (bool ref : {true, false}) {
      adapters::Gate g(adapters::GateOptions(4, 3).kind(kind).reference(ref).top_k(2));
      g->to(torch::kDouble);
      {
        torch::NoGradGuard no_grad;
        g->weight.normal_();
        if (g->bias.defined()) g->bias.normal_();
      }
      auto w = g(x);
      EXPECT_EQ(w.size(-1), ref ? 4 : 3);
      EXPECT_TRUE(torch::allclose(w.sum(-1), torch::ones({5}, torch::kDouble))) << adapters::to_string(kind);
      if (kind == GateKind::TopkSoftmax) EXPECT_TRUE(torch::equal((w > 0).sum(-1), torch::full({5}, 2, torch::kLong)));
    }
  }
  // Sigmoid gates are not normalised.
  adapters::Gate s(adapters::GateOptions(4, 3).kind(GateKind::Sigmoid).reference(false));
  EXPECT_TRUE(torch::allclose(s(x.to(torch::kFloat)), torch::full({5, 3}, 0.5f)));
  // Temperature: T → 0 is the arg-max one-hot, T → ∞ is uniform (bias 0).
  auto d2s = [&](double T) {
    adapters::Gate g(adapters::GateOptions(4, 3).kind(GateKind::DenseToSparse).temperature(T));
    g->to(torch::kDouble);
    torch::NoGradGuard no_grad;
    g->weight.copy_(torch::tensor({{1.0, 0.0, 0.0, 0.0}, {0.0, 2.0, 0.0, 0.0}, {0.0, 0.0, -1.0, 0.0}}));
    return g(torch::tensor({{1.0, 1.0, 1.0, 0.0}}, torch::kDouble)).squeeze(0);
  };
  EXPECT_TRUE(torch::allclose(d2s(1e-3), torch::tensor({0.0, 0.0, 1.0, 0.0}, torch::kDouble), 0, 1e-9));
  EXPECT_TRUE(torch::allclose(d2s(1e6), torch::full({4}, 0.25, torch::kDouble), 0, 1e-5));
}

TEST(Gates, GradientsAndTorchScriptParityForEveryKind) {
  for (auto kind : {GateKind::Softmax, GateKind::Sigmoid, GateKind::TopkSoftmax, GateKind::DenseToSparse,
                    GateKind::Cosine, GateKind::EuclideanSigmoid, GateKind::NormalizedSigmoid}) {
    SCOPED_TRACE(adapters::to_string(kind));
    torch::manual_seed(1);
    adapters::Gate g(adapters::GateOptions(4, 3).kind(kind).top_k(3).temperature(0.7).act(adapters::GateActivation::Tanh));
    g->to(torch::kDouble);
    {
      torch::NoGradGuard no_grad;
      g->weight.normal_();
      if (g->bias.defined()) g->bias.normal_();
    }
    auto x = torch::randn({6, 4}, torch::kDouble);
    std::vector<torch::Tensor> inputs{x, g->weight};
    for (const auto& t : {g->bias, g->proj})
      if (t.defined()) inputs.push_back(t);
    double worst = testkit::gradcheck([&](const std::vector<torch::Tensor>& in) { return g(in[0]); }, inputs);
    EXPECT_LT(worst, 1e-7);
    g->eval();
    models::ScriptUnit unit;
    auto script = g->to_script(unit);
    EXPECT_TRUE(torch::allclose(script.forward({x}).toTensor(), g(x), 1e-12, 1e-12));
  }
}

TEST(PromptExpert, HandComputedMixtureOnALinear) {
  // frozen y0 = W x + b; expert y1 = E x + e; K = 1 softmax gate g = σ(βᵀx + b_g).
  models::Linear lin(2, 2);
  lin->to(torch::kDouble);
  auto opts = adapters::PromptExpertOptions(2, 2, adapters::GateOptions(2, 1));
  auto pe = std::make_shared<adapters::PromptExpertImpl>(opts);
  pe->to(torch::kDouble);
  lin->attach_output(pe);
  torch::NoGradGuard no_grad;
  lin->weight.copy_(torch::tensor({{1.0, 0.0}, {0.0, 1.0}}));
  lin->bias.copy_(torch::tensor({0.0, 1.0}));
  pe->fc1[0]->weight.copy_(torch::tensor({{2.0, 0.0}, {0.0, -1.0}}));
  pe->fc1[0]->bias.copy_(torch::tensor({1.0, 0.0}));
  pe->gate->weight.copy_(torch::tensor({{0.5, -0.5}}));
  pe->gate->bias.copy_(torch::tensor({0.25}));
  auto x = torch::tensor({{2.0, 1.0}}, torch::kDouble);
  const double g = sig(0.5 * 2 - 0.5 * 1 + 0.25);  // σ(0.75)
  auto y0 = torch::tensor({{2.0, 2.0}}, torch::kDouble), y1 = torch::tensor({{5.0, -1.0}}, torch::kDouble);
  EXPECT_TRUE(torch::allclose(lin(x), (1 - g) * y0 + g * y1, 1e-12, 1e-12));
}

TEST(PromptExpert, ClosedGateIsTheFrozenModelExactly) {
  for (auto kind : {GateKind::Softmax, GateKind::Sigmoid}) {
    torch::manual_seed(2);
    auto m = vit();
    auto x = torch::randn({3, 1, 8, 8});
    m->eval();
    auto frozen = m(x);
    auto cfg = prompt_cfg({"head", "blocks.0.mlp", "blocks.1"}, kind, /*experts=*/2);
    cfg.gate.bias_init = -1e30;  // g ≡ 0
    auto report = adapters::attach_adapters(*m, from_recipe::attach_options(cfg));
    EXPECT_EQ(report.adapted, (std::vector<std::string>{"head", "blocks.0.mlp", "blocks.1"}));  // pattern order
    m->eval();
    EXPECT_TRUE(torch::equal(m(x), frozen)) << adapters::to_string(kind);
  }
}

TEST(PromptExpert, GradientsReachOnlyTheExpertsAndTheGate) {
  torch::manual_seed(3);
  auto m = vit();
  adapters::attach_adapters(*m, from_recipe::attach_options(prompt_cfg({"head", "blocks.1.mlp"}, GateKind::Sigmoid)));
  m(torch::randn({4, 1, 8, 8})).pow(2).sum().backward();
  int64_t prompt_params = 0;
  for (const auto& p : m->named_parameters()) {
    bool is_prompt = p.key().find(".prompt.") != std::string::npos;
    EXPECT_EQ(p.value().requires_grad(), is_prompt) << p.key();
    if (is_prompt) {
      ++prompt_params;
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
    } else {
      EXPECT_FALSE(p.value().grad().defined()) << p.key();
    }
  }
  EXPECT_EQ(prompt_params, 2 * 4);  // per host: gate weight, bias, expert fc1 weight, bias
}

TEST(PromptExpert, ExportParityForEveryPlacementAndGate) {
  for (auto kind : {GateKind::Softmax, GateKind::Sigmoid, GateKind::TopkSoftmax, GateKind::DenseToSparse,
                    GateKind::Cosine, GateKind::EuclideanSigmoid, GateKind::NormalizedSigmoid})
    for (auto input : {adapters::GateInput::Token, adapters::GateInput::Mean}) {
      SCOPED_TRACE(adapters::to_string(kind));
      torch::manual_seed(4);
      auto m = vit();
      auto cfg = prompt_cfg({"head", "blocks.0.mlp", "blocks.1"}, kind, 2);
      cfg.expert_hidden = 5;
      cfg.gate.input = input;
      cfg.gate.bias_init = 0.3;
      adapters::attach_adapters(*m, from_recipe::attach_options(cfg));
      {
        torch::NoGradGuard no_grad;
        for (auto& p : m->named_parameters())
          if (p.key().find("gate.weight") != std::string::npos) p.value().normal_(0, 0.5);
      }
      testkit::TempDir dir;
      ExportResult r = export_torchscript(*m, torch::randn({3, 1, 8, 8}), dir / "model.pt");
      EXPECT_LE(r.max_abs_diff, kExportTolerance);
    }
}

TEST(PromptExpert, EvaluationReportsGateUsageAndFilesRoundTrip) {
  torch::manual_seed(5);
  auto m = vit();
  auto cfg = prompt_cfg({"head", "blocks.1.mlp"});
  cfg.gate.bias_init = -1.0;
  auto report = adapters::attach_adapters(*m, from_recipe::attach_options(cfg));
  data::LabelledDataset d;
  d.inputs = torch::randn({10, 1, 8, 8});
  d.labels = torch::randint(0, 3, {10}, torch::kLong);
  d.class_names = {"a", "b", "c"};
  EvalResult ev = evaluate(*m, d, 4);
  ASSERT_EQ(ev.prompt_usage.size(), 2u);
  EXPECT_EQ(ev.prompt_usage[0].first, "blocks.1.mlp");
  EXPECT_EQ(ev.prompt_usage[1].first, "head");
  // β = 0 at the start: every decision is σ(−1) (softmax([0, −1])_1).
  EXPECT_NEAR(ev.prompt_usage[1].second, sig(-1.0), 1e-6);
  EXPECT_NEAR(ev.mean_prompt_usage(), sig(-1.0), 1e-6);
  EXPECT_NE(ev.report().find("prompt experts (mean gate weight"), std::string::npos);
  EXPECT_NE(ev.json().find("\"prompt_usage\""), std::string::npos);
  // Split among three ranks (data parallel): the parts summed are the whole evaluation.
  const EvalResult parts = testkit::evaluate_in_parts(ClassificationObjective(), *m, d, 4, 3);
  EXPECT_EQ(parts.n, ev.n);
  EXPECT_TRUE(torch::equal(parts.confusion, ev.confusion));
  EXPECT_NEAR(parts.loss, ev.loss, 1e-6 * std::abs(ev.loss));
  EXPECT_DOUBLE_EQ(parts.accuracy, ev.accuracy);
  EXPECT_DOUBLE_EQ(parts.macro_f1, ev.macro_f1);
  EXPECT_EQ(parts.per_class_accuracy, ev.per_class_accuracy);
  ASSERT_EQ(parts.prompt_usage.size(), 2u);
  for (size_t i = 0; i < 2; ++i) EXPECT_NEAR(parts.prompt_usage[i].second, ev.prompt_usage[i].second, 1e-9);

  testkit::TempDir dir;
  {
    torch::NoGradGuard no_grad;
    for (auto& p : m->parameters())
      if (p.requires_grad()) p.add_(torch::randn_like(p) * 0.1);
  }
  io::save_adapter(dir.path(), *m, cfg, report.adapted, "");
  auto file = io::read_safetensors(dir / "adapter_model.safetensors");
  EXPECT_NE(file.find("base_model.model.head.prompt.gate.weight"), nullptr);
  EXPECT_NE(file.find("base_model.model.blocks.1.mlp.prompt.experts.0.fc1.weight"), nullptr);
  auto other = vit();
  {
    torch::NoGradGuard no_grad;
    auto src = m->named_parameters();
    for (auto& p : other->named_parameters()) p.value().copy_(src[p.key()]);
  }
  adapters::attach_adapters(*other, from_recipe::attach_options(cfg));
  io::load_adapter(dir.path(), *other, cfg);
  auto x = torch::randn({2, 1, 8, 8});
  m->eval();
  other->eval();
  EXPECT_TRUE(torch::equal(m(x), other(x)));
}

TEST(PromptExpert, BadTargetsAreClearErrors) {
  auto m = vit();
  try {
    adapters::attach_adapters(*m, from_recipe::attach_options(prompt_cfg({"blocks.1.mpl"})));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("did you mean 'blocks.1.mlp'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_recipe("adapter: {kind: prompt_expert, targets: [head], experts: 1, gate: {top_k: 3}}\n", "r.yaml"),
               Error);
  EXPECT_THROW(parse_recipe("adapter: {kind: lora, targets: [head], gate: {kind: sigmoid}}\n", "r.yaml"), Error);
  Recipe r = parse_recipe(
      "adapter: {kind: prompt_expert, targets: [head], experts: 2, expert_hidden: 8, "
      "gate: {kind: cosine, tau1: 0.05, input: mean, bias_init: -3}}\n",
      "r.yaml");
  EXPECT_EQ(r.adapter.gate.kind, GateKind::Cosine);
  EXPECT_EQ(r.adapter.gate.input, adapters::GateInput::Mean);
  EXPECT_EQ(r.adapter.experts, 2);
  EXPECT_EQ(r.adapter.gate.proj_dim, 8);
  EXPECT_EQ(parse_recipe("adapter: {kind: prompt_expert, targets: [head], gate: {kind: cosine, proj_dim: 0}}\n", "r.yaml")
                .adapter.gate.proj_dim,
            0);
  try {
    parse_recipe("adapter: {kind: prompt_expert, targets: [head], gate: {kind: softmax, proj_dim: 4}}\n", "r.yaml");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("adapter.gate.proj_dim: only applies to kind cosine (kind is softmax)"),
              std::string::npos)
        << e.what();
  }
}

// ---------------------------------------------------------------- prefix experts

namespace {
// Naive per-head attention with the prefix concatenated (docs/methods.md §1, §12), double precision.
torch::Tensor naive_prefix_attention(models::AttentionImpl& a, const torch::Tensor& x, const torch::Tensor& mask) {
  auto [pk, pv] = a.prefix()->keys_values();
  const int64_t B = x.size(0), N = x.size(1), C = x.size(2), H = a.options.heads(), Dh = C / H, L = pk.size(0);
  auto q = torch::linear(x, a.q->weight, a.q->bias);
  auto k = torch::cat({pk.unsqueeze(0).expand({B, L, C}), torch::linear(x, a.k->weight, a.k->bias)}, 1);
  auto v = torch::cat({pv.unsqueeze(0).expand({B, L, C}), torch::linear(x, a.v->weight, a.v->bias)}, 1);
  std::vector<torch::Tensor> heads;
  for (int64_t h = 0; h < H; ++h) {
    auto qh = q.narrow(2, h * Dh, Dh), kh = k.narrow(2, h * Dh, Dh), vh = v.narrow(2, h * Dh, Dh);
    auto s = torch::bmm(qh, kh.transpose(1, 2)) / std::sqrt(static_cast<double>(Dh));  // [B, N, L+N]
    if (mask.defined()) s = s.masked_fill(mask.logical_not(), -INFINITY);
    auto p = a.options.variant().score == models::Score::Sigmoid ? torch::sigmoid(s + a.sigmoid_bias())
                                                                 : torch::softmax(s, -1);
    heads.push_back(torch::bmm(p, vh));
  }
  return torch::linear(torch::cat(heads, 2), a.o->weight, a.o->bias);
}
}  // namespace

TEST(Prefix, AttentionMatchesTheNaiveConcatenationWithAndWithoutACausalMask) {
  for (auto score : {models::Score::Softmax, models::Score::Sigmoid})
    for (bool reparam : {false, true}) {
      SCOPED_TRACE(models::to_string(score) + (reparam ? " reparam" : ""));
      torch::manual_seed(6);
      models::AttentionVariant v;
      v.score = score;
      v.max_seq_len = 5;
      models::Attention a(models::AttentionOptions(8, 2).variant(v));
      a->attach_prefix(std::make_shared<adapters::PrefixImpl>(adapters::PrefixOptions(8, 3).reparam(reparam).hidden(6)));
      a->to(torch::kDouble);
      auto x = torch::randn({2, 5, 8}, torch::kDouble);
      EXPECT_TRUE(torch::allclose(a(x), naive_prefix_attention(*a, x, {}), 1e-12, 1e-12));
      // Causal: token i sees the 3 prompt tokens and tokens 0..i.
      auto causal = torch::ones({5, 5}, torch::kBool).tril();
      auto full = torch::cat({torch::ones({5, 3}, torch::kBool), causal}, 1);
      EXPECT_TRUE(torch::allclose(a(x, causal), naive_prefix_attention(*a, x, full), 1e-12, 1e-12));
      // Gradients by finite differences through the prefix (or its generator).
      std::vector<torch::Tensor> params{x};
      for (auto& p : a->prefix()->parameters()) params.push_back(p);
      double worst = testkit::gradcheck([&](const std::vector<torch::Tensor>& in) { return a(in[0], causal); }, params);
      EXPECT_LT(worst, 1e-7);
    }
}

TEST(Prefix, TrainsOnlyThePrefixesAndExportsWithParity) {
  torch::manual_seed(7);
  auto m = vit();
  AdapterConfig c;
  c.kind = AdapterKind::Prefix;
  c.targets = {"blocks.*.attn"};
  c.prefix_length = 4;
  auto report = adapters::attach_adapters(*m, from_recipe::attach_options(c));
  EXPECT_EQ(report.adapted, (std::vector<std::string>{"blocks.0.attn", "blocks.1.attn"}));
  EXPECT_EQ(report.trainable, 2 * 2 * 4 * 16);  // P_K and P_V per layer
  m(torch::randn({2, 1, 8, 8})).sum().backward();
  for (const auto& p : m->named_parameters())
    EXPECT_EQ(p.value().grad().defined(), p.key().find(".prefix.") != std::string::npos) << p.key();
  testkit::TempDir dir;
  EXPECT_LE(export_torchscript(*m, torch::randn({3, 1, 8, 8}), dir / "model.pt").max_abs_diff, kExportTolerance);
  try {
    c.targets = {"blocks.*.atn"};
    adapters::attach_adapters(*vit(), from_recipe::attach_options(c));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("did you mean 'blocks.0.attn'"), std::string::npos) << e.what();
  }
}

TEST(Prefix, TextModelWithMasksExportsWithParity) {
  torch::manual_seed(8);
  models::TextTransformer m(models::TextTransformerOptions(17, 9).dim(8).depth(2).heads(2).task(models::TextTask::Classify));
  AdapterConfig c;
  c.kind = AdapterKind::Prefix;
  c.targets = {"blocks.*.attn"};
  c.prefix_length = 3;
  c.prefix_reparam = true;
  c.prefix_hidden = 5;
  adapters::attach_adapters(*m, from_recipe::attach_options(c));
  auto ids = torch::randint(1, 17, {3, 7}, torch::kLong);
  ids[0].slice(0, 4, 7).fill_(0);  // padding
  testkit::TempDir dir;
  EXPECT_LE(export_torchscript(*m, ids, dir / "model.pt").max_abs_diff, kExportTolerance);
  // Padding stays invisible with a prefix in front.
  m->eval();
  auto short_ids = ids[1].unsqueeze(0);
  auto padded = torch::cat({short_ids, torch::zeros({1, 2}, torch::kLong)}, 1);
  EXPECT_TRUE(torch::allclose(m(short_ids), m(padded), 1e-5, 1e-6));
}
