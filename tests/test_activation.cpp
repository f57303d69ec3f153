// models/activation.h: GPT-2's gelu_new on tunekit's row loop against ATen's gelu(x, "tanh") and
// against the published formula evaluated in double.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>

#include "models/activation.h"
#include "models/hf/families.h"
#include "tests/helpers.h"

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

// A tiny GPT-2 (gelu_new) trained 8 AdamW steps with the loop and with ATen's gelu: the same
// loss curve.
TEST(Activation, Gpt2LossCurveIsTheSameWithAndWithout) {
  auto train = [](bool fused) {
    torch::manual_seed(3);
    auto m = models::hf::make_gpt2(models::hf::Gpt2Options().vocab_size(40).n_positions(64).n_embd(32).n_layer(2).n_head(4));
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
