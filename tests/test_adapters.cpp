// DoRA, HoRA and DoRAN against hand-written references (docs/methods.md §7–§9): forward, gradients,
// zero initialisation, merge, parameter counts, shared-generator ownership, export parity.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "adapters/attach.h"
#include "adapters/dora.h"
#include "adapters/doran.h"
#include "adapters/hora.h"
#include "adapters/hypernet.h"
#include "adapters/lora.h"
#include "models/vit.h"
#include "src/from_recipe/adapters.h"
#include "src/recipe/recipe.h"
#include "src/export/export.h"
#include "tests/helpers.h"

using namespace tunekit;

namespace {
models::ViT tiny_vit(int64_t dim = 16, int64_t heads = 2, int64_t depth = 2) {
  return models::ViT(
      models::ViTOptions().image_size(8).patch(4).dim(dim).depth(depth).heads(heads).num_classes(3));
}

AdapterConfig cfg_of(AdapterKind kind, std::vector<std::string> targets = {"blocks.*.attn.q", "blocks.*.attn.v"}) {
  AdapterConfig c;
  c.kind = kind;
  c.r = 2;
  c.alpha = 4;
  c.targets = std::move(targets);
  c.hypernet.embed = 3;
  c.hypernet.hidden = 5;
  c.hypernet.share = kind == AdapterKind::Doran ? HypernetShare::Model : HypernetShare::Parent;
  c.hypernet.share_seeds = kind == AdapterKind::Hora;
  return c;
}

// Moves every B (or W2_B) away from zero so the adapters do something.
void perturb(torch::nn::Module& m, double std = 0.5) {
  torch::NoGradGuard g;
  for (auto& p : m.named_parameters()) {
    const auto& k = p.key();
    if (k.find("lora_B") != std::string::npos || k.find("W2_B") != std::string::npos) p.value().normal_(0, std);
    if (k.find("lora_magnitude_vector") != std::string::npos) p.value().mul_(1.0 + 0.2 * torch::rand_like(p.value()));
  }
}

torch::Tensor ref_generate(const torch::Tensor& seed, const torch::Tensor& W1, const torch::Tensor& W2) {
  // docs/methods.md §8, row-vector form: act(E W1ᵀ) W2ᵀ with act = tanh.
  return torch::matmul(torch::tanh(torch::matmul(seed, W1.t())), W2.t());
}
}  // namespace

// ---------------------------------------------------------------- DoRA

TEST(Dora, HandComputedForwardAndMerge) {
  // W0 rows have norms 3 and 4; r 1, alpha 1 (scale 1); A = [1 0], B = [0 1]ᵀ -> BA = [[0,0],[1,0]].
  auto W = torch::tensor({{3.0, 0.0}, {0.0, 4.0}}, torch::kDouble), b = torch::tensor({0.5, 0.0}, torch::kDouble);
  adapters::DoraImpl dora(adapters::LoraOptions(2, 2).r(1).alpha(1), W);
  dora.to(torch::kDouble);
  EXPECT_TRUE(torch::allclose(dora.magnitude, torch::tensor({3.0, 4.0}, torch::kDouble)));  // m = ‖W0‖_c
  torch::NoGradGuard g;
  dora.lora_A.copy_(torch::tensor({{1.0, 0.0}}));
  dora.lora_B.copy_(torch::tensor({{0.0}, {1.0}}));
  dora.magnitude.copy_(torch::tensor({6.0, 4.0}));
  // V = [[3,0],[1,4]], ‖V‖ = [3, √17]; W' = [[6, 0], [4/√17, 16/√17]].
  const double s17 = std::sqrt(17.0);
  auto expect_W = torch::tensor({{6.0, 0.0}, {4.0 / s17, 16.0 / s17}}, torch::kDouble);
  EXPECT_TRUE(torch::allclose(dora.merged_weight(W), expect_W, 1e-12, 1e-12));
  auto x = torch::tensor({{1.0, 1.0}}, torch::kDouble);
  // y = W' x + b = [6.5, 20/√17]  (the bias is not rescaled)
  EXPECT_TRUE(torch::allclose(dora.forward(x, W, b), torch::tensor({{6.5, 20.0 / s17}}, torch::kDouble), 1e-12, 1e-12));
}

TEST(Dora, ZeroInitLeavesOutputUnchangedAndMergedEqualsUnmerged) {
  torch::manual_seed(0);
  auto m = tiny_vit();
  m->to(torch::kDouble);
  auto x = torch::randn({4, 1, 8, 8}, torch::kDouble);
  auto before = m(x);
  auto report =
      adapters::attach_adapters(*m, from_recipe::attach_options(cfg_of(AdapterKind::Dora, {"blocks.*.attn.*", "blocks.*.mlp.fc1"})));
  m->to(torch::kDouble);
  EXPECT_TRUE(torch::allclose(before, m(x), 0, 1e-12));  // g = ‖W0‖/‖W0‖ = 1
  perturb(*m);
  m->eval();
  auto unmerged = m(x);
  EXPECT_FALSE(torch::allclose(before, unmerged, 0, 1e-3));
  adapters::merge_adapters(*m);
  EXPECT_TRUE(torch::allclose(unmerged, m(x), 0, 1e-10));
  adapters::unmerge_adapters(*m);
  EXPECT_TRUE(torch::allclose(unmerged, m(x), 0, 1e-12));
  // Parameters: LoRA's r(d_in + d_out) plus d_out per layer (docs/methods.md §7).
  int64_t expect = 0;
  for (const auto& name : report.adapted) {
    auto* lin = m->named_modules()[name]->as<models::LinearImpl>();
    expect += 2 * (lin->options.in_features() + lin->options.out_features()) + lin->options.out_features();
  }
  EXPECT_EQ(report.trainable, expect);
}

TEST(Dora, GradientsMatchFiniteDifferencesWithTheNormLive) {
  torch::manual_seed(2);
  auto W = torch::randn({5, 4}, torch::kDouble), b = torch::randn({5}, torch::kDouble);
  adapters::DoraImpl dora(adapters::LoraOptions(4, 5).r(2).alpha(3), W, /*detach_norm=*/false);
  dora.to(torch::kDouble);
  perturb(dora);
  double worst = testkit::gradcheck(
      [&](const std::vector<torch::Tensor>& in) { return dora.forward(in[0], W, b); },
      {torch::randn({3, 4}, torch::kDouble), dora.lora_A, dora.lora_B, dora.magnitude});
  EXPECT_LT(worst, 1e-7);
}

TEST(Dora, DetachedNormIsAConstantInBackward) {
  // With the norm detached (the default, DoRA §4.3), the gradients are those of
  // (m / c) ⊙ (W0 x + s B A x) + b with c = ‖W0 + sBA‖_c a constant tensor.
  torch::manual_seed(3);
  auto W = torch::randn({5, 4}, torch::kDouble), b = torch::randn({5}, torch::kDouble);
  adapters::DoraImpl dora(adapters::LoraOptions(4, 5).r(2).alpha(3), W);
  dora.to(torch::kDouble);
  perturb(dora);
  auto x = torch::randn({3, 4}, torch::kDouble).requires_grad_(true);
  auto w = torch::randn({3, 5}, torch::kDouble);
  auto grads = torch::autograd::grad({(dora.forward(x, W, b) * w).sum()}, {x, dora.lora_A, dora.lora_B, dora.magnitude});

  const double s = 1.5;
  auto A = dora.lora_A.detach().clone().requires_grad_(true), B = dora.lora_B.detach().clone().requires_grad_(true);
  auto m = dora.magnitude.detach().clone().requires_grad_(true);
  auto xr = x.detach().clone().requires_grad_(true);
  auto c = (W + s * B.detach().mm(A.detach())).pow(2).sum(1).sqrt();  // constant
  auto y = (m / c) * (xr.mm(W.t()) + s * xr.mm(A.t()).mm(B.t())) + b;
  auto ref = torch::autograd::grad({(y * w).sum()}, {xr, A, B, m});
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_TRUE(torch::allclose(grads[i], ref[i], 1e-12, 1e-12)) << i;

  // And the live-norm gradient for A differs: the detach is real.
  adapters::DoraImpl live(adapters::LoraOptions(4, 5).r(2).alpha(3), W, false);
  live.to(torch::kDouble);
  {
    torch::NoGradGuard g;
    live.lora_A.copy_(dora.lora_A);
    live.lora_B.copy_(dora.lora_B);
    live.magnitude.copy_(dora.magnitude);
  }
  auto live_grads = torch::autograd::grad({(live.forward(x, W, b) * w).sum()}, {live.lora_A});
  EXPECT_FALSE(torch::allclose(live_grads[0], grads[1], 1e-6, 1e-6));
}

TEST(Dora, DropoutFollowsPeftsForm) {
  // With dropout the base path sees x and the adapter path drop(x): in eval mode (no dropout) it
  // equals the merged layer.
  torch::manual_seed(4);
  auto W = torch::randn({6, 4}), b = torch::randn({6});
  adapters::DoraImpl dora(adapters::LoraOptions(4, 6).r(2).alpha(2).dropout(0.5), W);
  perturb(dora);
  auto x = torch::randn({3, 4});
  dora.eval();
  EXPECT_TRUE(torch::allclose(dora.forward(x, W, b), torch::linear(x, dora.merged_weight(W), b), 1e-5, 1e-5));
  dora.train();
  EXPECT_FALSE(torch::allclose(dora.forward(x, W, b), torch::linear(x, dora.merged_weight(W), b), 1e-3, 1e-3));
}

// ---------------------------------------------------------------- HoRA

TEST(Hora, GeneratorMatchesTheEquationsAndIsOwnedOnce) {
  torch::manual_seed(5);
  auto m = tiny_vit(/*dim=*/16, /*heads=*/2, /*depth=*/2);
  auto cfg = cfg_of(AdapterKind::Hora);
  auto report = adapters::attach_adapters(*m, from_recipe::attach_options(cfg));
  perturb(*m);
  // One generator per attention module (share: parent), q and v sharing one seed set.
  auto named = m->named_parameters();
  std::set<std::string> gens;
  for (const auto& p : named)
    if (p.key().rfind("hypernets.", 0) == 0) gens.insert(p.key().substr(0, p.key().find('.', 10)));
  EXPECT_EQ(gens, (std::set<std::string>{"hypernets.blocks_0_attn", "hypernets.blocks_1_attn"}));
  // Every parameter appears once in parameters() (no module registered under two parents).
  std::set<const void*> impls;
  for (const auto& p : m->parameters()) EXPECT_TRUE(impls.insert(p.unsafeGetTensorImpl()).second);
  // Count (docs/methods.md §8, shared seeds): per block 2·z·e (W1) + r·e + d·e (seeds) + per target d·z + r·z.
  const int64_t d = 16, r = 2, e = 3, z = 5;
  EXPECT_EQ(report.trainable, 2 * (2 * z * e + r * e + d * e + 2 * (d * z + r * z)));

  // The generated factors of block 0's q follow A = tanh(E_A W1_Aᵀ) W2_Aᵀ, B = tanh(E_B W1_Bᵀ) W2_Bᵀ.
  const std::string g = "hypernets.blocks_0_attn.";
  auto A = ref_generate(named[g + "seed_A"], named[g + "W1_A"], named[g + "blocks_0_attn_q_W2_A"]);
  auto B = ref_generate(named[g + "seed_B"], named[g + "W1_B"], named[g + "blocks_0_attn_q_W2_B"]);
  auto q = m->blocks[0]->attn->q;
  auto x = torch::randn({3, d});
  auto expect = torch::linear(x, q->weight, q->bias) + torch::linear(torch::linear(x, A), B) * (cfg.alpha / cfg.r);
  EXPECT_TRUE(torch::allclose(q->forward(x), expect, 1e-5, 1e-6));
  auto* hora = dynamic_cast<adapters::HoraImpl*>(q->adapter().get());
  ASSERT_NE(hora, nullptr);
  EXPECT_TRUE(torch::allclose(hora->factors().first, A, 1e-6, 1e-6));
  // q and v share A's seed but not W2_A: different A factors, same seed tensor.
  auto* hv = dynamic_cast<adapters::HoraImpl*>(m->blocks[0]->attn->v->adapter().get());
  EXPECT_FALSE(torch::allclose(hv->factors().first, A));
}

TEST(Hora, ZeroInitLeavesOutputUnchangedMergeAndExport) {
  torch::manual_seed(6);
  auto m = tiny_vit();
  auto x = torch::randn({4, 1, 8, 8});
  auto before = m(x);
  adapters::attach_adapters(*m, from_recipe::attach_options(cfg_of(AdapterKind::Hora, {"blocks.*.attn.*"})));
  EXPECT_TRUE(torch::equal(before, m(x)));  // W2_B = 0 -> B = 0
  perturb(*m);
  m->eval();
  auto unmerged = m(x);
  EXPECT_FALSE(torch::allclose(before, unmerged, 0, 1e-3));
  adapters::merge_adapters(*m);
  EXPECT_TRUE(torch::allclose(unmerged, m(x), 1e-5, 1e-5));
  adapters::unmerge_adapters(*m);
  testkit::TempDir dir;
  ExportResult r = export_torchscript(*m, x, dir / "model.pt");
  EXPECT_LE(r.max_abs_diff, kExportTolerance);
}

TEST(Hora, GradientsThroughTheGeneratorMatchFiniteDifferences) {
  torch::manual_seed(7);
  auto m = tiny_vit(8, 2, 1);
  adapters::attach_adapters(*m, from_recipe::attach_options(cfg_of(AdapterKind::Hora)));
  m->to(torch::kDouble);
  perturb(*m);
  auto q = m->blocks[0]->attn->q;
  std::vector<torch::Tensor> inputs{torch::randn({2, 8}, torch::kDouble)};
  for (auto& p : m->named_parameters())
    if (p.key().rfind("hypernets.", 0) == 0 && p.key().find("_v_") == std::string::npos) inputs.push_back(p.value());
  EXPECT_EQ(inputs.size(), 7u);  // x, W1_A, W1_B, seed_A, seed_B, q's W2_A, q's W2_B
  double worst = testkit::gradcheck([&](const std::vector<torch::Tensor>& in) { return q->forward(in[0]); }, inputs);
  EXPECT_LT(worst, 1e-7);
}

TEST(Hora, HeadRowsOfBComeFromThatHeadsSeedRows) {
  // Perturbing head 1's seed rows of E_B changes only head 1's rows of ΔW_q.
  torch::manual_seed(8);
  auto m = tiny_vit(16, 2, 1);  // d_h = 8
  adapters::attach_adapters(*m, from_recipe::attach_options(cfg_of(AdapterKind::Hora)));
  perturb(*m);
  auto q = m->blocks[0]->attn->q;
  auto before = q->effective_weight();
  {
    torch::NoGradGuard g;
    m->named_parameters()["hypernets.blocks_0_attn.seed_B"].slice(0, 8, 16).add_(0.3);
  }
  auto diff = (q->effective_weight() - before).abs().sum(1);  // per output row
  EXPECT_EQ(diff.slice(0, 0, 8).max().item<double>(), 0.0);
  EXPECT_GT(diff.slice(0, 8, 16).min().item<double>(), 0.0);
}

TEST(Hora, ShareOptionsChangeWhatIsShared) {
  auto count = [](HypernetShare share, bool seeds) {
    auto m = tiny_vit(16, 2, 2);
    auto c = cfg_of(AdapterKind::Hora);
    c.hypernet.share = share;
    c.hypernet.share_seeds = seeds;
    return adapters::attach_adapters(*m, from_recipe::attach_options(c)).trainable;
  };
  const int64_t d = 16, r = 2, e = 3, z = 5, per_target_w2 = d * z + r * z, seeds = r * e + d * e;
  // per target: own W1 and seeds; 4 targets
  EXPECT_EQ(count(HypernetShare::Target, false), 4 * (2 * z * e + seeds + per_target_w2));
  // per block, seeds per target
  EXPECT_EQ(count(HypernetShare::Parent, false), 2 * (2 * z * e + 2 * seeds + 2 * per_target_w2));
  // model-wide, one seed set
  EXPECT_EQ(count(HypernetShare::Model, true), 2 * z * e + seeds + 4 * per_target_w2);
}

// ---------------------------------------------------------------- DoRAN

TEST(Doran, ForwardMatchesTheDecompositionWithTau) {
  torch::manual_seed(9);
  auto m = tiny_vit(8, 2, 2);
  auto x = torch::randn({3, 1, 8, 8});
  auto before = m(x);
  auto cfg = cfg_of(AdapterKind::Doran);
  auto report = adapters::attach_adapters(*m, from_recipe::attach_options(cfg));
  EXPECT_TRUE(torch::allclose(before, m(x), 1e-5, 1e-6));  // m = ‖W0‖ + τ0: W' = W0 at start
  // One generator for the whole model (the issue: shared across layers), seeds per target.
  int64_t gens = 0;
  for (const auto& c : m->named_children())
    if (c.key() == "hypernets") gens = static_cast<int64_t>(c.value()->named_children().size());
  EXPECT_EQ(gens, 1);
  const int64_t d = 8, r = 2, e = 3, z = 5;
  EXPECT_EQ(report.trainable, 2 * z * e + 4 * (r * e + d * e + d * z + r * z + d + 1));

  perturb(*m);
  {
    torch::NoGradGuard g;
    for (auto& p : m->named_parameters())
      if (p.key().find("tau_rho") != std::string::npos) p.value().fill_(0.3);
  }
  auto v = m->blocks[1]->attn->v;
  auto* doran = dynamic_cast<adapters::DoranImpl*>(v->adapter().get());
  ASSERT_NE(doran, nullptr);
  auto [A, B] = doran->factors();
  auto V = v->weight + B.mm(A) * (cfg.alpha / cfg.r);
  auto tau = std::log1p(std::exp(0.3));
  auto Wp = V * (doran->magnitude / (V.pow(2).sum(1).sqrt() + tau)).unsqueeze(1);
  auto xi = torch::randn({4, d});
  EXPECT_TRUE(torch::allclose(v->forward(xi), torch::linear(xi, Wp, v->bias), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(v->effective_weight(), Wp, 1e-5, 1e-6));
}

TEST(Doran, GradientsMatchFiniteDifferencesIncludingTau) {
  torch::manual_seed(10);
  auto m = tiny_vit(8, 2, 1);
  auto cfg = cfg_of(AdapterKind::Doran, {"blocks.0.attn.q"});
  cfg.detach_norm = false;
  adapters::attach_adapters(*m, from_recipe::attach_options(cfg));
  m->to(torch::kDouble);
  perturb(*m);
  std::vector<torch::Tensor> inputs{torch::randn({2, 8}, torch::kDouble)};
  for (auto& p : m->parameters())
    if (p.requires_grad()) inputs.push_back(p);
  EXPECT_EQ(inputs.size(), 1u + 2 + 4 + 2);  // x, W1_A/B, seeds + W2 of q, magnitude, tau_rho
  auto q = m->blocks[0]->attn->q;
  double worst = testkit::gradcheck([&](const std::vector<torch::Tensor>& in) { return q->forward(in[0]); }, inputs);
  EXPECT_LT(worst, 1e-7);
}

TEST(Doran, MergedEqualsUnmergedAndExports) {
  torch::manual_seed(11);
  auto m = tiny_vit();
  adapters::attach_adapters(
      *m, from_recipe::attach_options(cfg_of(AdapterKind::Doran, {"blocks.*.attn.q", "blocks.*.attn.v", "blocks.*.mlp.*"})));
  perturb(*m);
  m->eval();
  auto x = torch::randn({4, 1, 8, 8});
  auto unmerged = m(x);
  adapters::merge_adapters(*m);
  EXPECT_TRUE(torch::allclose(unmerged, m(x), 1e-5, 1e-5));
  adapters::unmerge_adapters(*m);
  testkit::TempDir dir;
  EXPECT_LE(export_torchscript(*m, x, dir / "model.pt").max_abs_diff, kExportTolerance);
}

TEST(Adapters, GateAndMlpLayersAreTargets) {
  models::AttentionVariant gated;
  gated.gate = models::Gate::SdpaElementwise;
  auto opts = models::ViTOptions().image_size(8).patch(4).dim(16).depth(1).heads(2).num_classes(3).attention(gated);
  for (auto kind : {AdapterKind::Lora, AdapterKind::Dora, AdapterKind::Hora, AdapterKind::Doran}) {
    auto mm = models::ViT(opts);
    auto report =
        adapters::attach_adapters(*mm, from_recipe::attach_options(cfg_of(kind, {"blocks.0.attn.gate", "blocks.0.mlp.fc2"})));
    EXPECT_EQ(report.adapted, (std::vector<std::string>{"blocks.0.attn.gate", "blocks.0.mlp.fc2"}));
  }
}

TEST(Adapters, KindTableHasOneRowPerKindInOrder) {
  const auto& rows = adapters::adapter_kinds();
  ASSERT_EQ(rows.size(), 8u);
  std::set<std::string> names;
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(static_cast<size_t>(rows[i].value), i);
    EXPECT_EQ(rows[i].name, to_string(rows[i].value));  // the recipe's spelling
    EXPECT_TRUE(names.insert(rows[i].name).second);
    EXPECT_EQ(rows[i].peft_type != nullptr, !rows[i].saves.empty()) << rows[i].name;
    EXPECT_EQ(rows[i].hosts != nullptr, !rows[i].saves.empty()) << rows[i].name;
  }
}

// ---------------------------------------------------------------- the papers' defaults

// Parsed from a recipe that names only kind, r and targets: HoRA's generator width d_z defaults to
// r and both HoRA and DoRAN share the generator within one attention (q, v and their heads), as
// the papers describe (docs/methods.md §8, §9). At those defaults HoRA stays within 1.3x LoRA's
// trainable parameters on the demo ViT and on a ViT-B-width attention (d 768, 12 heads, r 8);
// d_z 32 (tunekit's earlier default) cost 2.6-2.9x.
TEST(HypernetDefaults, PapersSharingAndABudgetNearLoRAs) {
  auto adapter_of = [](const std::string& kind, int64_t r) {
    return parse_recipe("adapter: {kind: " + kind + ", r: " + std::to_string(r) +
                            ", targets: [blocks.*.attn.q, blocks.*.attn.v]}\n",
                        "r.yaml")
        .adapter;
  };
  for (const char* kind : {"hora", "doran"}) {
    SCOPED_TRACE(kind);
    auto c = adapter_of(kind, 8);
    EXPECT_EQ(c.hypernet.hidden, 8);
    EXPECT_EQ(c.hypernet.share, HypernetShare::Parent);
    EXPECT_EQ(c.hypernet.share_seeds, std::string(kind) == "hora");
  }
  EXPECT_EQ(adapter_of("hora", 16).hypernet.hidden, 16);
  EXPECT_EQ(parse_recipe("adapter: {kind: hora, targets: [q], hypernet: {hidden: 32}}\n", "r.yaml").adapter.hypernet.hidden,
            32);
  auto trainable = [](const AdapterConfig& c, int64_t dim, int64_t heads) {
    models::ViT m(models::ViTOptions().image_size(8).patch(4).dim(dim).depth(1).heads(heads).num_classes(3));
    int64_t head = 0;
    for (auto& p : m->named_parameters())
      if (p.key().rfind("head.", 0) == 0) head += p.value().numel();
    return adapters::attach_adapters(*m, from_recipe::attach_options(c)).trainable - (c.modules_to_save.empty() ? 0 : head);
  };
  for (auto [dim, heads] : {std::pair<int64_t, int64_t>{128, 4}, {768, 12}}) {
    SCOPED_TRACE(dim);
    const int64_t lora = trainable(adapter_of("lora", 8), dim, heads);
    EXPECT_EQ(lora, 2 * 8 * (dim + dim));  // q and v of one block
    const int64_t hora = trainable(adapter_of("hora", 8), dim, heads);
    EXPECT_LE(double(hora), 1.3 * double(lora));
    EXPECT_GE(double(hora), 0.7 * double(lora));
    // The old width: well over LoRA's budget.
    auto wide = adapter_of("hora", 8);
    wide.hypernet.hidden = 32;
    EXPECT_GT(double(trainable(wide, dim, heads)), 2.5 * double(lora));
  }
}
