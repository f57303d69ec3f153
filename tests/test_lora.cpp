#include <gtest/gtest.h>

#include "adapters/attach.h"
#include "adapters/lora.h"
#include "models/linear.h"
#include "models/vit.h"
#include "src/from_recipe/adapters.h"
#include "util/error.h"
#include "tests/helpers.h"

using namespace tunekit;

namespace {
models::ViT tiny_vit() {
  return models::ViT(models::ViTOptions().image_size(8).patch(4).dim(16).depth(2).heads(2).num_classes(3));
}
AdapterConfig lora_cfg(std::vector<std::string> targets, std::vector<std::string> save = {}) {
  AdapterConfig c;
  c.kind = AdapterKind::Lora;
  c.r = 4;
  c.alpha = 8;
  c.targets = std::move(targets);
  c.modules_to_save = std::move(save);
  return c;
}
}  // namespace

TEST(Lora, HandComputedForwardAndMerge) {
  // d_in 2, d_out 2, r 1, alpha 2 -> scale 2:  h = W x + b + 2 * B (A x)
  adapters::LoraImpl lora(adapters::LoraOptions(2, 2).r(1).alpha(2));
  torch::NoGradGuard g;
  lora.lora_A.copy_(torch::tensor({{1.0f, 2.0f}}));
  lora.lora_B.copy_(torch::tensor({{3.0f}, {-1.0f}}));
  auto W = torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}}), b = torch::tensor({0.5f, 0.0f});
  auto x = torch::tensor({{1.0f, 1.0f}});
  // A x = 3; B A x = [9, -3]; * 2 = [18, -6]; + W x + b = [19.5, -5]
  EXPECT_TRUE(torch::allclose(lora.forward(x, W, b), torch::tensor({{19.5f, -5.0f}})));
  EXPECT_TRUE(torch::allclose(lora.merged_weight(W), torch::tensor({{7.0f, 12.0f}, {-2.0f, -3.0f}})));
}

TEST(Lora, RsLoraScalesByAlphaOverSqrtR) {
  // d_in 2, d_out 2, r 4, alpha 4 -> rsLoRA scale 4 / sqrt(4) = 2 (plain LoRA: 1).
  adapters::LoraImpl lora(adapters::LoraOptions(2, 2).r(4).alpha(4).rslora(true));
  EXPECT_DOUBLE_EQ(lora.options.scale(), 2.0);
  EXPECT_DOUBLE_EQ(adapters::LoraOptions(2, 2).r(4).alpha(4).scale(), 1.0);
  torch::NoGradGuard g;
  lora.lora_A.copy_(torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}, {1.0f, 1.0f}, {0.0f, 0.0f}}));
  lora.lora_B.copy_(torch::tensor({{1.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 1.0f, 0.0f}}));
  auto W = torch::zeros({2, 2}), b = torch::zeros({2});
  auto x = torch::tensor({{1.0f, 2.0f}});
  // A x = [1, 2, 3, 0]; B A x = [1, 3]; * 2 = [2, 6]
  EXPECT_TRUE(torch::allclose(lora.forward(x, W, b), torch::tensor({{2.0f, 6.0f}})));
  EXPECT_TRUE(torch::allclose(lora.merged_weight(W), torch::tensor({{2.0f, 0.0f}, {2.0f, 2.0f}})));
}

TEST(Lora, ZeroInitLeavesOutputUnchanged) {
  torch::manual_seed(0);
  auto m = tiny_vit();
  auto x = torch::randn({4, 1, 8, 8});
  auto before = m(x);
  auto report = adapters::attach_adapters(
      *m, from_recipe::attach_options(lora_cfg({"blocks.*.attn.q", "blocks.*.attn.v", "blocks.*.mlp.fc1"})));
  EXPECT_EQ(report.adapted.size(), 6u);
  EXPECT_TRUE(torch::equal(before, m(x)));
}

TEST(Lora, MergedEqualsUnmergedAndUnmergeRestores) {
  torch::manual_seed(1);
  auto m = tiny_vit();
  adapters::attach_adapters(*m, from_recipe::attach_options(lora_cfg({"blocks.*.attn.*"})));
  {
    torch::NoGradGuard g;
    for (auto& p : m->named_parameters())
      if (p.key().find("lora_B") != std::string::npos) p.value().normal_(0, 0.5);
  }
  auto x = torch::randn({4, 1, 8, 8});
  auto base_q = m->blocks[0]->attn->q->weight.clone();
  auto unmerged = m(x);
  adapters::merge_adapters(*m);
  EXPECT_FALSE(torch::equal(base_q, m->blocks[0]->attn->q->weight));
  EXPECT_LT((m(x) - unmerged).abs().max().item<double>(), 1e-5);
  adapters::unmerge_adapters(*m);
  EXPECT_TRUE(torch::equal(base_q, m->blocks[0]->attn->q->weight));
  EXPECT_LT((m(x) - unmerged).abs().max().item<double>(), 1e-6);
}

TEST(Lora, OnlyAdapterAndSavedModulesGetGradients) {
  torch::manual_seed(2);
  auto m = tiny_vit();
  auto report =
      adapters::attach_adapters(*m, from_recipe::attach_options(lora_cfg({"blocks.*.attn.q", "blocks.*.attn.v"}, {"head"})));
  // r (d_in + d_out) per adapted layer, plus the head.
  EXPECT_EQ(report.trainable, 4 * 4 * (16 + 16) + (16 * 3 + 3));
  {
    torch::NoGradGuard g;
    for (auto& p : m->named_parameters())
      if (p.key().find("lora_B") != std::string::npos) p.value().normal_();
  }
  m(torch::randn({2, 1, 8, 8})).sum().backward();
  for (auto& p : m->named_parameters()) {
    const auto& name = p.key();
    bool should = name.find(".adapter.") != std::string::npos || name.rfind("head.", 0) == 0;
    EXPECT_EQ(p.value().requires_grad(), should) << name;
    EXPECT_EQ(p.value().grad().defined(), should) << name;
  }
}

TEST(Lora, GradcheckDouble) {
  torch::manual_seed(3);
  adapters::LoraImpl lora(adapters::LoraOptions(5, 3).r(2).alpha(4));
  lora.to(torch::kDouble);
  {
    torch::NoGradGuard g;
    lora.lora_B.normal_();
  }
  auto W = torch::randn({3, 5}, torch::kDouble), b = torch::randn({3}, torch::kDouble);
  auto x = torch::randn({4, 5}, torch::kDouble);
  double err = testkit::gradcheck(
      [&](const std::vector<torch::Tensor>& in) { return lora.forward(in[0], W, b); }, {x, lora.lora_A, lora.lora_B});
  EXPECT_LT(err, 1e-6);
}

TEST(Lora, UnmatchedTargetIsAnError) {
  auto m = tiny_vit();
  try {
    adapters::attach_adapters(*m, from_recipe::attach_options(lora_cfg({"blocks.*.atn.q"})));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("pattern 'blocks.*.atn.q' matches no Linear layer"), std::string::npos);
  }
  EXPECT_THROW(adapters::attach_adapters(*tiny_vit(), from_recipe::attach_options(lora_cfg({"blocks.*.attn.q"}, {"haed"}))),
               Error);
}

TEST(LinearProbe, OnlyHeadTrains) {
  auto m = tiny_vit();
  AdapterConfig c;
  c.kind = AdapterKind::LinearProbe;
  c.modules_to_save = {"head"};
  auto report = adapters::attach_adapters(*m, from_recipe::attach_options(c));
  EXPECT_EQ(report.trainable, 16 * 3 + 3);
}
