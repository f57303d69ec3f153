#include <gtest/gtest.h>

#include <cmath>

#include "models/attention.h"
#include "models/vit.h"
#include "tests/helpers.h"

using namespace tunekit;
using namespace tunekit::models;

namespace {
// Naive reference: loops over heads, explicit softmax.
torch::Tensor naive_attention(AttentionImpl& a, const torch::Tensor& x) {
  const int64_t B = x.size(0), N = x.size(1), C = x.size(2), H = a.options.heads(), Dh = C / H;
  auto q = torch::matmul(x, a.q->weight.t()) + a.q->bias;
  auto k = torch::matmul(x, a.k->weight.t()) + a.k->bias;
  auto v = torch::matmul(x, a.v->weight.t()) + a.v->bias;
  std::vector<torch::Tensor> heads;
  for (int64_t h = 0; h < H; ++h) {
    auto qh = q.slice(2, h * Dh, (h + 1) * Dh), kh = k.slice(2, h * Dh, (h + 1) * Dh), vh = v.slice(2, h * Dh, (h + 1) * Dh);
    auto s = torch::bmm(qh, kh.transpose(1, 2)) / std::sqrt(double(Dh));
    auto e = (s - std::get<0>(s.max(-1, true))).exp();
    heads.push_back(torch::bmm(e / e.sum(-1, true), vh));
  }
  return torch::matmul(torch::cat(heads, 2), a.o->weight.t()) + a.o->bias;
  (void)B, (void)N;
}
}  // namespace

TEST(Attention, MatchesNaiveReference) {
  torch::manual_seed(0);
  Attention a(AttentionOptions(12, 3));
  a->to(torch::kDouble);
  auto x = torch::randn({2, 5, 12}, torch::kDouble);
  EXPECT_LT((a(x) - naive_attention(*a, x)).abs().max().item<double>(), 1e-12);
}

TEST(Attention, GradcheckInputAndWeightsDouble) {
  torch::manual_seed(1);
  Attention a(AttentionOptions(8, 2));
  a->to(torch::kDouble);
  auto x = torch::randn({2, 4, 8}, torch::kDouble);
  double err = testkit::gradcheck([&](const std::vector<torch::Tensor>& in) { return a(in[0]); }, {x});
  EXPECT_LT(err, 1e-6);
  double werr = testkit::gradcheck([&](const std::vector<torch::Tensor>& in) { return a(in[0]); },
                                   {x, a->q->weight, a->k->weight, a->v->bias, a->o->weight});
  EXPECT_LT(werr, 1e-6);
}

TEST(Attention, MaskBlocksKeys) {
  torch::manual_seed(2);
  Attention a(AttentionOptions(8, 2));
  auto x = torch::randn({1, 4, 8});
  auto causal = torch::ones({4, 4}, torch::kBool).tril();
  auto y = a(x, causal);
  auto x2 = x.clone();
  x2.select(1, 3).add_(5.0);  // changing the last token must not change earlier outputs
  auto y2 = a(x2, causal);
  EXPECT_TRUE(torch::allclose(y.slice(1, 0, 3), y2.slice(1, 0, 3)));
  EXPECT_FALSE(torch::allclose(y.select(1, 3), y2.select(1, 3)));
}

TEST(ViT, ShapesNamesAndParameterCount) {
  ViT m(ViTOptions().dim(128).depth(4).heads(4).mlp_ratio(2.0).num_classes(5));
  auto y = m(torch::randn({3, 1, 28, 28}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{3, 5}));
  int64_t n = 0;
  for (auto& p : m->parameters()) n += p.numel();
  EXPECT_EQ(n, 539525);  // same as the PyTorch reference model in bench/torch_vit_lora.py
  auto names = m->named_modules("", false).keys();
  EXPECT_NE(std::find(names.begin(), names.end(), "blocks.3.attn.v"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "blocks.0.mlp.fc2"), names.end());
  EXPECT_THROW(m(torch::randn({1, 3, 28, 28})), std::exception);
}

TEST(ViT, GradcheckSmallModelDouble) {
  torch::manual_seed(3);
  ViT m(ViTOptions().image_size(8).patch(4).dim(8).depth(1).heads(2).num_classes(3));
  m->to(torch::kDouble);
  auto x = torch::randn({2, 1, 8, 8}, torch::kDouble);
  double err = testkit::gradcheck([&](const std::vector<torch::Tensor>& in) { return m(in[0]); },
                                  {x, m->pos_embed, m->blocks[0]->fc1->weight, m->head->weight});
  EXPECT_LT(err, 1e-6);
}

TEST(Attention, DirectBlasKernelMatchesATenPathWithGradients) {
  torch::manual_seed(5);
  Attention a(AttentionOptions(12, 3));
  a->to(torch::kDouble);
  auto x = torch::randn({3, 7, 12}, torch::kDouble).requires_grad_(true);
  auto all = torch::ones({7, 7}, torch::kBool);  // a mask that masks nothing takes the ATen path
  auto w = torch::randn({3, 7, 12}, torch::kDouble);
  auto fast = a(x), slow = a(x, all);
  EXPECT_LT((fast - slow).abs().max().item<double>(), 1e-12);
  auto gf = torch::autograd::grad({(fast * w).sum()}, {x, a->q->weight, a->k->weight, a->v->weight});
  auto gs = torch::autograd::grad({(slow * w).sum()}, {x, a->q->weight, a->k->weight, a->v->weight});
  for (size_t i = 0; i < gf.size(); ++i) EXPECT_LT((gf[i] - gs[i]).abs().max().item<double>(), 1e-12) << i;
}
