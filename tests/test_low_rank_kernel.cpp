// The hand-written low-rank node (adapters/lowrank.cpp, LowRankLinear) against the composed ATen
// ops it replaces (set_fused_low_rank_enabled(false)) and against finite differences: LoRA's
// forward and every gradient, with and without dropout's separate input, a frozen or trained
// bias, a weight stored in bf16 or packed int8, DoRA's use of it, and a short training curve.
#include <gtest/gtest.h>

#include <ATen/autocast_mode.h>

#include "adapters/attach.h"
#include "adapters/dora.h"
#include "adapters/lora.h"
#include "adapters/lowrank.h"
#include "models/linear.h"
#include "src/from_recipe/adapters.h"
#include "tests/helpers.h"
#include "tests/tiny_hf.h"

using namespace tunekit;

namespace {

struct Composed {  // the composed ATen ops while alive
  Composed() { adapters::set_fused_low_rank_enabled(false); }
  ~Composed() { adapters::set_fused_low_rank_enabled(true); }
};

bool fused_node(const torch::Tensor& y) {
  return y.grad_fn() && y.grad_fn()->name().find("LowRankLinear") != std::string::npos;
}

double rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  auto scale = std::max(b.abs().max().item<double>(), 1e-30);
  return (a - b).abs().max().item<double>() / scale;
}

struct Case {
  torch::ScalarType dtype;
  bool separate_dropped;  // drop(x) is its own tensor (dropout on)
  int bias;               // 0: none, 1: frozen, 2: trained
  bool three_d;
  torch::ScalarType weight_storage;  // the stored W: dtype itself, bf16 or packed int8 (kChar)
};

// Output and the gradients of x, drop(x), b, A, B for a random projection of the output.
std::vector<torch::Tensor> run(const Case& c, bool fused) {
  torch::manual_seed(11);
  const int64_t d_in = 24, d_out = 20, r = 3;
  auto opts = torch::TensorOptions().dtype(c.dtype);
  auto x = torch::randn(c.three_d ? std::vector<int64_t>{2, 5, d_in} : std::vector<int64_t>{7, d_in}, opts)
               .requires_grad_();
  auto d = c.separate_dropped ? torch::randn(x.sizes(), opts).requires_grad_() : x;
  auto W = torch::randn({d_out, d_in}, opts);
  if (c.weight_storage == torch::kChar) W = models::pack_int8_rows(W);
  else if (c.weight_storage != c.dtype) W = W.to(c.weight_storage);
  torch::Tensor b;
  if (c.bias > 0) b = torch::randn({d_out}, opts).requires_grad_(c.bias == 2);
  auto A = torch::randn({r, d_in}, opts).requires_grad_();
  auto B = torch::randn({d_out, r}, opts).requires_grad_();
  auto proj = torch::randn({c.three_d ? 10 : 7, d_out}, opts);
  adapters::set_fused_low_rank_enabled(fused);
  auto y = adapters::low_rank_forward(x, d, W, b, A, B, 1.75);
  adapters::set_fused_low_rank_enabled(true);
  EXPECT_EQ(fused_node(y), fused);
  (y.reshape({-1, d_out}) * proj).sum().backward();
  std::vector<torch::Tensor> out{y.detach(), x.grad(), A.grad(), B.grad()};
  if (c.separate_dropped) out.push_back(d.grad());
  if (c.bias == 2) out.push_back(b.grad());
  return out;
}

}  // namespace

TEST(FusedLowRank, SameValuesAndGradientsAsTheComposedOps) {
  int cases = 0;
  for (auto dtype : {torch::kFloat, torch::kDouble})
    for (bool separate : {false, true})
      for (int bias : {0, 1, 2})
        for (bool three_d : {false, true})
          for (auto storage : {dtype, torch::kBFloat16, torch::kChar}) {
            Case c{dtype, separate, bias, three_d, storage};
            auto fast = run(c, true), slow = run(c, false);
            ASSERT_EQ(fast.size(), slow.size());
            const double tol = dtype == torch::kDouble ? 1e-12 : 1e-5;
            for (size_t i = 0; i < fast.size(); ++i) {
              ASSERT_TRUE(fast[i].defined() && slow[i].defined()) << i;
              EXPECT_EQ(fast[i].sizes(), slow[i].sizes()) << i;
              EXPECT_LE(rel_diff(fast[i], slow[i]), tol)
                  << "tensor " << i << " dtype " << dtype << " dropped " << separate << " bias " << bias << " 3d "
                  << three_d << " storage " << storage;
            }
            ++cases;
          }
  EXPECT_EQ(cases, 72);
}

TEST(FusedLowRank, GradcheckDoubleForEveryInput) {
  torch::manual_seed(5);
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  auto W = torch::randn({4, 6}, opts);
  auto x = torch::randn({3, 2, 6}, opts), d = torch::randn({3, 2, 6}, opts);
  auto b = torch::randn({4}, opts), A = torch::randn({2, 6}, opts), B = torch::randn({4, 2}, opts);
  bool fused_taken = false;
  auto f = [&](const std::vector<torch::Tensor>& in) {
    auto y = adapters::low_rank_forward(in[0], in[1], W, in[2], in[3], in[4], 0.5);
    if (torch::GradMode::is_enabled()) fused_taken = fused_node(y);  // the differentiated call
    return y;
  };
  EXPECT_LT(testkit::gradcheck(f, {x, d, b, A, B}), 1e-6);
  EXPECT_TRUE(fused_taken);
  auto same = [&](const std::vector<torch::Tensor>& in) {  // no dropout: one input feeds both paths
    return adapters::low_rank_forward(in[0], in[0], W, in[1], in[2], in[3], 0.5);
  };
  EXPECT_LT(testkit::gradcheck(same, {x, b, A, B}), 1e-6);
}

TEST(FusedLowRank, TakenOnlyWhereItsBackwardIsRight) {
  auto x = torch::randn({4, 6}), W = torch::randn({5, 6}), A = torch::randn({2, 6}, torch::requires_grad()),
       B = torch::randn({5, 2}, torch::requires_grad());
  EXPECT_TRUE(fused_node(adapters::low_rank_forward(x, x, W, {}, A, B, 2.0)));
  // A trained base weight (full fine-tuning under an adapter) needs its own gradient: composed ops.
  auto Wt = W.clone().requires_grad_();
  EXPECT_FALSE(fused_node(adapters::low_rank_forward(x, x, Wt, {}, A, B, 2.0)));
  // Under bf16 compute the composed ops cast per op, as autocast has them.
  {
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    auto y = adapters::low_rank_forward(x, x, W, {}, A, B, 2.0);
    at::autocast::set_cpu_enabled(false);
    at::autocast::clear_cache();
    EXPECT_FALSE(fused_node(y));
  }
  {
    Composed off;
    EXPECT_FALSE(fused_node(adapters::low_rank_forward(x, x, W, {}, A, B, 2.0)));
  }
}

TEST(FusedLowRank, DoraThroughTheNodeEqualsTheComposedOps) {
  for (bool detach : {true, false}) {
    torch::manual_seed(2);
    auto W = torch::randn({6, 8});
    adapters::DoraImpl dora(adapters::LoraOptions(8, 6).r(2).alpha(4), W, detach);
    {
      torch::NoGradGuard g;
      dora.lora_B.normal_();
      dora.magnitude.mul_(1.3);
    }
    auto x = torch::randn({3, 4, 8}, torch::requires_grad());
    auto b = torch::randn({6});
    auto pass = [&] {
      dora.zero_grad();
      x.mutable_grad() = torch::Tensor();
      auto y = dora.forward(x, W, b);
      torch::manual_seed(3);
      (y * torch::randn(y.sizes())).sum().backward();
      return std::vector<torch::Tensor>{y.detach(), x.grad().clone(), dora.lora_A.grad().clone(),
                                        dora.lora_B.grad().clone(), dora.magnitude.grad().clone()};
    };
    auto fast = pass();
    std::vector<torch::Tensor> slow;
    {
      Composed off;
      slow = pass();
    }
    for (size_t i = 0; i < fast.size(); ++i) EXPECT_LE(rel_diff(fast[i], slow[i]), 1e-5) << i << " " << detach;
  }
}

TEST(FusedLowRank, LoraTrainingCurveIsTheSameWithAndWithout) {
  auto train = [](bool fused) {
    torch::manual_seed(4);
    auto m = models::hf::make_llama(testkit::tiny_llama_options(40, 64));
    AdapterConfig cfg;
    cfg.kind = AdapterKind::Lora;
    cfg.r = 4;
    cfg.alpha = 8;
    cfg.dropout = 0.1;  // a separate drop(x) on the adapter path
    cfg.targets = {"q_proj", "v_proj", "down_proj"};
    adapters::attach_adapters(*m, from_recipe::attach_options(cfg));
    std::vector<torch::Tensor> params;
    for (auto& p : m->parameters())
      if (p.requires_grad()) params.push_back(p);
    adapters::set_fused_low_rank_enabled(fused);
    auto losses = testkit::lm_loss_curve([&](const torch::Tensor& ids) { return m->forward(ids); }, params, 40, 2,
                                         32, 10, 1e-2);
    adapters::set_fused_low_rank_enabled(true);
    return losses;
  };
  auto fast = train(true), slow = train(false);
  ASSERT_EQ(fast.size(), slow.size());
  EXPECT_LT(fast.back(), fast.front() - 0.05);  // it learns
  for (size_t i = 0; i < fast.size(); ++i) EXPECT_NEAR(fast[i], slow[i], 1e-5 * slow[i]) << "step " << i;
}
