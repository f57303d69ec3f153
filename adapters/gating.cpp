#include "adapters/gating.h"

#include <fmt/format.h>

#include <cmath>

#include "util/error.h"

namespace tunekit::adapters {

GateImpl::GateImpl(GateOptions options_) : options(std::move(options_)) { reset(); }

void GateImpl::reset() {
  const auto& o = options;
  if (o.experts() <= 0) throw Error("gate: needs at least one expert");
  if (!(o.temperature() > 0)) throw Error(fmt::format("gate: temperature must be positive, got {}", o.temperature()));
  const int64_t entries = o.experts() + (o.reference() ? 1 : 0);
  if (o.kind() == GateKind::TopkSoftmax && (o.top_k() < 1 || o.top_k() > entries))
    throw Error(fmt::format("gate: top_k {} is outside 1..{}", o.top_k(), entries));
  if (o.proj_dim() < 0) throw Error(fmt::format("gate: proj_dim must be >= 0, got {}", o.proj_dim()));
  if (projected()) {
    // The paper's cosine router (2405.14131): a projection P and expert embeddings e_i, both
    // N(0, 1/fan_in), and no bias.
    torch::NoGradGuard no_grad;
    proj = register_parameter("proj", torch::randn({o.proj_dim(), o.in_features()}) /
                                          std::sqrt(static_cast<double>(o.in_features())));
    weight = register_parameter("weight", torch::randn({o.experts(), o.proj_dim()}) /
                                              std::sqrt(static_cast<double>(o.proj_dim())));
    return;
  }
  // β starts at 0 for the inner-product scores (the gate starts input-independent, at bias_init;
  // docs/methods.md §11); the cosine router and the Euclidean centres need non-zero vectors.
  auto w = torch::zeros({o.experts(), o.in_features()});
  if (o.kind() == GateKind::Cosine || o.kind() == GateKind::EuclideanSigmoid) {
    torch::NoGradGuard no_grad;
    w.normal_(0, 1.0 / std::sqrt(static_cast<double>(o.in_features())));
  }
  weight = register_parameter("weight", w);
  bias = register_parameter("bias", torch::full({o.experts()}, o.bias_init()));
}

torch::Tensor GateImpl::scores(const torch::Tensor& x) {
  const auto& o = options;
  const double T = o.temperature();
  switch (o.kind()) {
    case GateKind::Softmax:
    case GateKind::Sigmoid:
    case GateKind::NormalizedSigmoid:
    case GateKind::TopkSoftmax: return torch::linear(x, weight, bias);
    case GateKind::DenseToSparse: {
      auto s = torch::linear(x, weight);
      if (o.act() == GateActivation::Tanh) s = torch::tanh(s);
      if (o.act() == GateActivation::Sigmoid) s = torch::sigmoid(s);
      return s / T + bias;
    }
    case GateKind::Cosine: {
      auto z = projected() ? torch::linear(x, proj) : x;
      auto zn = z.pow(2).sum(-1, true).sqrt() + o.tau1();  // [..., 1]
      if (is_training() && o.noise() > 0) zn = zn + torch::randn_like(zn).abs() * o.noise();
      auto en = weight.pow(2).sum(1).sqrt() + o.tau2();  // [K]
      auto s = torch::linear(z, weight) / (zn * en) / T;
      return projected() ? s : s + bias;
    }
    case GateKind::EuclideanSigmoid: {
      // ‖x − c‖² = ‖x‖² − 2 xᵀc + ‖c‖²
      auto d2 = x.pow(2).sum(-1, true) - 2 * torch::linear(x, weight) + weight.pow(2).sum(1);
      return -d2 / T + bias;
    }
  }
  return {};
}

torch::Tensor GateImpl::forward(const torch::Tensor& x) {
  const auto& o = options;
  auto s = scores(x);
  const bool sigmoid_like = o.kind() == GateKind::Sigmoid || o.kind() == GateKind::EuclideanSigmoid;
  if (sigmoid_like) {
    auto w = torch::sigmoid(s);
    if (!o.reference()) return w;
    return torch::cat({1 - w.sum(-1, true), w}, -1);
  }
  if (o.reference()) {
    auto shape = s.sizes().vec();
    shape.back() = 1;
    s = torch::cat({torch::zeros(shape, s.options()), s}, -1);
  }
  if (o.kind() == GateKind::NormalizedSigmoid) {
    auto w = torch::sigmoid(s);
    return w / w.sum(-1, true);
  }
  if (o.kind() == GateKind::TopkSoftmax && o.top_k() < s.size(-1)) {
    auto kth = std::get<0>(s.topk(o.top_k(), -1)).narrow(-1, o.top_k() - 1, 1);  // the k-th largest
    s = s.masked_fill(s < kth, -INFINITY);
  }
  return torch::softmax(s, -1);
}

torch::jit::Module GateImpl::to_script(const models::ScriptUnit& unit) const {
  const auto& o = options;
  auto m = unit.module("Gate");
  m.register_parameter("weight", weight.detach().clone(), false);
  if (bias.defined()) m.register_parameter("bias", bias.detach().clone(), false);
  if (proj.defined()) m.register_parameter("proj", proj.detach().clone(), false);
  const std::string T = models::py_float(o.temperature());
  std::string s;
  switch (o.kind()) {
    case GateKind::Softmax:
    case GateKind::Sigmoid:
    case GateKind::NormalizedSigmoid:
    case GateKind::TopkSoftmax: s = "    s = torch.linear(x, self.weight, self.bias)\n"; break;
    case GateKind::DenseToSparse:
      s = "    s = torch.linear(x, self.weight)\n";
      if (o.act() == GateActivation::Tanh) s += "    s = torch.tanh(s)\n";
      if (o.act() == GateActivation::Sigmoid) s += "    s = torch.sigmoid(s)\n";
      s += fmt::format("    s = s / {} + self.bias\n", T);
      break;
    case GateKind::Cosine:
      s = fmt::format(
          "    z = {z}\n"
          "    zn = z.pow(2).sum(-1, True).sqrt() + {t1}\n"
          "    en = self.weight.pow(2).sum(1).sqrt() + {t2}\n"
          "    s = torch.linear(z, self.weight) / (zn * en) / {T}{b}\n",
          fmt::arg("z", projected() ? "torch.linear(x, self.proj)" : "x"), fmt::arg("t1", models::py_float(o.tau1())),
          fmt::arg("t2", models::py_float(o.tau2())), fmt::arg("T", T), fmt::arg("b", projected() ? "" : " + self.bias"));
      break;
    case GateKind::EuclideanSigmoid:
      s = fmt::format(
          "    d2 = x.pow(2).sum(-1, True) - 2.0 * torch.linear(x, self.weight) + self.weight.pow(2).sum(1)\n"
          "    s = -d2 / {} + self.bias\n",
          T);
      break;
  }
  std::string w;
  if (o.kind() == GateKind::Sigmoid || o.kind() == GateKind::EuclideanSigmoid) {
    w = o.reference() ? "    w = torch.sigmoid(s)\n    return torch.cat([1.0 - w.sum(-1, True), w], -1)\n"
                      : "    return torch.sigmoid(s)\n";
  } else {
    if (o.reference()) w = "    s = torch.cat([torch.zeros_like(s[..., :1]), s], -1)\n";
    if (o.kind() == GateKind::TopkSoftmax && o.top_k() < o.experts() + (o.reference() ? 1 : 0))
      w += fmt::format(
          "    kth = torch.topk(s, {k}, -1)[0][..., {k1}:{k}]\n"
          "    s = s.masked_fill(s < kth, float('-inf'))\n",
          fmt::arg("k", o.top_k()), fmt::arg("k1", o.top_k() - 1));
    w += o.kind() == GateKind::NormalizedSigmoid
             ? "    w = torch.sigmoid(s)\n    return w / w.sum(-1, True)\n"
             : "    return torch.softmax(s, -1)\n";
  }
  m.define("def forward(self, x: Tensor) -> Tensor:\n" + s + w);
  return m;
}

}  // namespace tunekit::adapters
