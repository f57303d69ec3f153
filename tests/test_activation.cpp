// models/activation.h: GPT-2's gelu_new on tunekit's row loop against ATen's gelu(x, "tanh") and
// against the published formula evaluated in double.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <iostream>

#include "models/activation.h"
#include "models/hf/families.h"
#include "tests/helpers.h"
#include "tests/tiny_hf.h"

using namespace tunekit;

namespace {

// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) and its derivative, in double, from the formula.
std::pair<torch::Tensor, torch::Tensor> formula(const torch::Tensor& x_in) {
  const auto x = x_in.to(torch::kDouble);
  const double k = std::sqrt(2.0 / M_PI);
  const auto u = k * (x + 0.044715 * x.pow(3));
  const auto t = torch::tanh(u);
  const auto y = 0.5 * x * (1 + t);
  const auto dy = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x);
  return {y, dy};
}

// Values across the range, the points where the approximation bends, and far tails.
torch::Tensor sample_inputs(torch::ScalarType dtype) {
  torch::manual_seed(11);
  auto x = torch::cat({torch::randn({4096}, torch::kDouble) * 3, torch::linspace(-12, 12, 2001, torch::kDouble),
                       torch::tensor({0.0, 1e-6, -1e-6, 1e-3, -1e-3, 30.0, -30.0, 80.0, -80.0, 1e4, -1e4}, torch::kDouble)});
  return x.to(dtype);
}

// |a - b| <= atol + rtol |b|, elementwise; returns the worst ratio of the two sides.
double worst(const torch::Tensor& a, const torch::Tensor& b, double rtol, double atol) {
  const auto bd = b.to(torch::kDouble);
  return ((a.to(torch::kDouble) - bd).abs() / (atol + rtol * bd.abs())).max().item<double>();
}

}  // namespace

TEST(Activation, GeluTanhFollowsTheFormulaInFloat) {
  const auto x0 = sample_inputs(torch::kFloat);
  auto x = x0.clone().requires_grad_(true);
  auto y = models::gelu_tanh(x);
  ASSERT_TRUE(y.grad_fn() != nullptr);
  const auto g = torch::randn_like(x0);
  y.backward(g);
  const auto [ref_y, ref_dy] = formula(x0);
  // Forward and input gradient within float rounding of the formula...
  EXPECT_LE(worst(y.detach(), ref_y, 1e-5, 1e-6), 1.0);
  EXPECT_LE(worst(x.grad(), ref_dy * g.to(torch::kDouble), 1e-5, 1e-6), 1.0);
  // ...and at least as close as ATen's float gelu, whose 1 + tanh and 1 - tanh^2 cancel in the
  // tails (its gradient is off by up to 2.3e-6 here). Against ATen: within both errors.
  auto xa = x0.clone().requires_grad_(true);
  auto ya = torch::gelu(xa, "tanh");
  ya.backward(g);
  const auto exact_dx = ref_dy * g.to(torch::kDouble);
  const auto err = [](const torch::Tensor& a, const torch::Tensor& b) {
    return (a.to(torch::kDouble) - b).abs().max().item<double>();
  };
  EXPECT_LE(err(y.detach(), ref_y), err(ya.detach(), ref_y) + 1e-7);
  EXPECT_LE(err(x.grad(), exact_dx), err(xa.grad(), exact_dx) + 1e-7);
  EXPECT_LE(worst(y.detach(), ya.detach(), 1e-5, 1e-6), 1.0);
  EXPECT_LE(worst(x.grad(), xa.grad(), 1e-5, 5e-6), 1.0);
  std::cout << "max abs error against the formula: forward " << err(y.detach(), ref_y) << " (ATen "
            << err(ya.detach(), ref_y) << "), gradient " << err(x.grad(), exact_dx) << " (ATen "
            << err(xa.grad(), exact_dx) << ")\n";
  EXPECT_FALSE(y.isnan().any().item<bool>());
}

TEST(Activation, GeluTanhInDoubleAndGradcheck) {
  const auto x0 = sample_inputs(torch::kDouble).slice(0, 4096, 6097);  // the linspace
  auto x = x0.clone().requires_grad_(true);
  auto y = models::gelu_tanh(x);
  y.sum().backward();
  const auto [ref_y, ref_dy] = formula(x0);
  EXPECT_LE(worst(y.detach(), ref_y, 1e-12, 1e-14), 1.0);
  EXPECT_LE(worst(x.grad(), ref_dy, 1e-12, 1e-13), 1.0);
  torch::manual_seed(2);
  const double err = testkit::gradcheck([](const std::vector<torch::Tensor>& in) { return models::gelu_tanh(in[0]); },
                                        {torch::randn({3, 7}, torch::kDouble) * 2});
  EXPECT_LT(err, 1e-7);
}

// A graph of the backward (create_graph) goes through ATen's differentiable gelu_backward, so
// second derivatives are ATen's.
TEST(Activation, GeluTanhSecondDerivativeIsAtens) {
  torch::manual_seed(4);
  const auto x0 = torch::randn({5, 6}, torch::kDouble) * 2;
  auto second = [&](bool fused) {
    models::set_fused_activation_enabled(fused);
    auto x = x0.clone().requires_grad_(true);
    auto y = models::gelu_tanh(x).pow(2).sum();
    auto gx = torch::autograd::grad({y}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/true)[0];
    auto gg = torch::autograd::grad({gx.sum()}, {x})[0];
    models::set_fused_activation_enabled(true);
    return std::make_pair(gx.detach(), gg);
  };
  const auto [gx_f, gg_f] = second(true);
  const auto [gx_a, gg_a] = second(false);
  EXPECT_LE(worst(gx_f, gx_a, 1e-12, 1e-14), 1.0);
  EXPECT_LE(worst(gg_f, gg_a, 1e-10, 1e-12), 1.0);
}

// Shapes, strides and the tensors the loop does not take: the result is ATen's.
TEST(Activation, GeluTanhShapesAndFallbacks) {
  torch::manual_seed(5);
  const auto x = torch::randn({4, 6, 10});
  const auto t = x.transpose(0, 2);  // not contiguous
  auto y = models::gelu_tanh(t);
  EXPECT_EQ(y.sizes(), t.sizes());
  EXPECT_LE(worst(y, torch::gelu(t, "tanh"), 1e-5, 1e-6), 1.0);
  const auto b = x.to(torch::kBFloat16);
  EXPECT_TRUE(models::gelu_tanh(b).equal(torch::gelu(b, "tanh")));
  EXPECT_EQ(models::gelu_tanh(torch::empty({0, 3})).numel(), 0);
  models::set_fused_activation_enabled(false);
  EXPECT_FALSE(models::fused_activation_enabled());
  EXPECT_TRUE(models::gelu_tanh(x).equal(torch::gelu(x, "tanh")));
  models::set_fused_activation_enabled(true);
}

// silu(gate) * up (Llama / Mistral / Qwen2's SwiGLU) against the formula in double and ATen's ops.
TEST(Activation, SiluMulFollowsTheFormulaAndAten) {
  torch::manual_seed(6);
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    SCOPED_TRACE(dtype == torch::kFloat ? "float" : "double");
    const auto g0 = sample_inputs(dtype), u0 = torch::randn(g0.sizes(), torch::kDouble).to(dtype) * 2;
    const auto go = torch::randn(g0.sizes(), torch::kDouble).to(dtype);
    auto g = g0.clone().requires_grad_(true), u = u0.clone().requires_grad_(true);
    auto y = models::silu_mul(g, u);
    ASSERT_TRUE(y.grad_fn() != nullptr);
    y.backward(go);
    // The formula in double: silu(g) = g / (1 + exp(-g)).
    const auto gd = g0.to(torch::kDouble), ud = u0.to(torch::kDouble), god = go.to(torch::kDouble);
    const auto s = torch::sigmoid(gd);
    const auto ref_y = gd * s * ud, ref_dg = god * ud * (s + gd * s * (1 - s)), ref_du = god * gd * s;
    const double rtol = dtype == torch::kFloat ? 1e-5 : 1e-12, atol = dtype == torch::kFloat ? 1e-6 : 1e-13;
    EXPECT_LE(worst(y.detach(), ref_y, rtol, atol), 1.0);
    EXPECT_LE(worst(g.grad(), ref_dg, rtol, atol), 1.0);
    EXPECT_LE(worst(u.grad(), ref_du, rtol, atol), 1.0);
    auto ga = g0.clone().requires_grad_(true), ua = u0.clone().requires_grad_(true);
    auto ya = torch::silu(ga) * ua;
    ya.backward(go);
    EXPECT_LE(worst(y.detach(), ya.detach(), 2 * rtol, 2 * atol), 1.0);
    EXPECT_LE(worst(g.grad(), ga.grad(), 2 * rtol, 2 * atol), 1.0);
    EXPECT_LE(worst(u.grad(), ua.grad(), 2 * rtol, 2 * atol), 1.0);
  }
  const double err = testkit::gradcheck(
      [](const std::vector<torch::Tensor>& in) { return models::silu_mul(in[0], in[1]); },
      {torch::randn({3, 7}, torch::kDouble) * 2, torch::randn({3, 7}, torch::kDouble)});
  EXPECT_LT(err, 1e-7);
}

TEST(Activation, SiluMulSecondDerivativeAndFallbacks) {
  torch::manual_seed(7);
  const auto g0 = torch::randn({5, 6}, torch::kDouble) * 2, u0 = torch::randn({5, 6}, torch::kDouble);
  auto second = [&](bool fused) {
    models::set_fused_activation_enabled(fused);
    auto g = g0.clone().requires_grad_(true), u = u0.clone().requires_grad_(true);
    auto y = models::silu_mul(g, u).pow(2).sum();
    auto grads = torch::autograd::grad({y}, {g, u}, {}, /*retain_graph=*/true, /*create_graph=*/true);
    auto gg = torch::autograd::grad({grads[0].sum() + grads[1].sum()}, {g, u});
    models::set_fused_activation_enabled(true);
    return std::vector<torch::Tensor>{grads[0].detach(), grads[1].detach(), gg[0], gg[1]};
  };
  const auto f = second(true), a = second(false);
  for (size_t i = 0; i < f.size(); ++i) EXPECT_LE(worst(f[i], a[i], 1e-10, 1e-12), 1.0) << "#" << i;
  // Broadcasting, mixed or narrow dtypes, strides: ATen's result.
  const auto x = torch::randn({4, 6}), row = torch::randn({6});
  EXPECT_TRUE(models::silu_mul(x, row).equal(torch::silu(x) * row));
  const auto xb = x.to(torch::kBFloat16);
  EXPECT_TRUE(models::silu_mul(xb, xb).equal(torch::silu(xb) * xb));
  EXPECT_TRUE(models::silu_mul(x, x.to(torch::kDouble)).equal(torch::silu(x) * x.to(torch::kDouble)));
  const auto t = torch::randn({6, 4}).t();
  EXPECT_LE(worst(models::silu_mul(t, x), torch::silu(t) * x, 1e-5, 1e-6), 1.0);
}

// A tiny GPT-2 (gelu_new) and a tiny Llama (SwiGLU), each trained 8 AdamW steps with the loops and
// with ATen's ops: the same loss curves.
TEST(Activation, LossCurvesAreTheSameWithAndWithout) {
  using Make = std::function<std::shared_ptr<models::hf::HfModel>()>;
  const std::vector<std::pair<std::string, Make>> families = {
      {"gpt2",
       [] {
         return models::hf::make_gpt2(
             models::hf::Gpt2Options().vocab_size(40).n_positions(64).n_embd(32).n_layer(2).n_head(4));
       }},
      {"llama", [] { return models::hf::make_llama(testkit::tiny_llama_options(40, 32)); }},
  };
  for (const auto& [name, make] : families) {
    SCOPED_TRACE(name);
    auto train = [&make](bool fused) {
      torch::manual_seed(3);
      auto m = make();
      models::set_fused_activation_enabled(fused);
      auto losses = testkit::lm_loss_curve([&](const torch::Tensor& ids) { return m->forward(ids); }, m->parameters(),
                                           40, 2, 24, 8, 3e-3);
      models::set_fused_activation_enabled(true);
      return losses;
    };
    const auto fast = train(true), slow = train(false);
    ASSERT_EQ(fast.size(), slow.size());
    EXPECT_LT(fast.back(), fast.front() - 0.1);  // it learns
    for (size_t i = 0; i < fast.size(); ++i) EXPECT_NEAR(fast[i], slow[i], 1e-5 * slow[i]) << "step " << i;
  }
}
