#include "models/attention.h"

#include <fmt/format.h>

#include <cmath>

#include "models/attention_kernel.h"
#include "util/error.h"

namespace tunekit::models {

double default_sigmoid_bias(int64_t max_seq_len) { return -std::log(static_cast<double>(max_seq_len)); }

torch::Tensor register_sigmoid_bias(torch::nn::Module& module, const AttentionVariant& var) {
  if (var.score != Score::Sigmoid) return {};
  if (var.bias_mode != SigmoidBias::Fixed && var.max_seq_len <= 0)
    throw Error("attention: sigmoid bias -log(n) needs the maximum sequence length n");
  double b = var.bias_mode == SigmoidBias::Fixed ? var.bias_value : default_sigmoid_bias(var.max_seq_len);
  auto t = torch::full({}, b);
  return var.bias_mode == SigmoidBias::Learnable ? module.register_parameter("sigmoid_bias", t)
                                                 : module.register_buffer("sigmoid_bias", t);
}

AttentionImpl::AttentionImpl(AttentionOptions options_) : options(std::move(options_)) { reset(); }

void AttentionImpl::reset() {
  const auto& var = options.variant();
  if (options.heads() <= 0 || options.dim() % options.heads() != 0)
    throw Error(fmt::format("attention: dim {} is not divisible by heads {}", options.dim(), options.heads()));
  const int64_t d = options.dim(), H = options.heads(), Dh = d / H;
  auto lin = [&](int64_t out) { return Linear(LinearOptions(d, out).bias(options.bias())); };
  q = register_module("q", lin(d));
  k = register_module("k", lin(d));
  v = register_module("v", lin(d));
  o = register_module("o", lin(d));
  if (var.gate != Gate::None) {
    // W_g as a normal Linear without a bias, as the paper's code; `gate_bias` adds tunekit's b_g,
    // 0 at the start (docs/methods.md §2).
    gate = register_module("gate", Linear(LinearOptions(d, var.gate == Gate::SdpaHeadwise ? H : d).bias(var.gate_bias)));
    torch::NoGradGuard no_grad;
    if (gate->bias.defined()) gate->bias.zero_();
  }
  if (var.qk_norm) {
    q_norm = register_module("q_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({Dh})));
    k_norm = register_module("k_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({Dh})));
  }
  sigmoid_bias_ = register_sigmoid_bias(*this, var);
}

void AttentionImpl::attach_prefix(std::shared_ptr<adapters::KeyValuePrefix> prefix) {
  if (prefix_) throw Error("this attention layer already has a prefix attached");
  prefix_ = register_module("prefix", std::move(prefix));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& mask_in) {
  const auto& var = options.variant();
  const int64_t B = x.size(0), N = x.size(1), C = x.size(2), H = options.heads(), Dh = C / H;
  torch::Tensor mask = mask_in;
  const double scale = 1.0 / std::sqrt(double(Dh));
  const bool sigmoid = var.score == Score::Sigmoid;
  auto qx = q(x), kx = k(x), vx = v(x);
  torch::Tensor g;
  if (var.gate != Gate::None) g = torch::sigmoid(gate(x));  // G = sigma(X_n W_g (+ b_g))
  if (var.gate == Gate::Value) vx = vx * g;                  // V <- V (.) G
  int64_t Nk = N;
  if (prefix_) {  // [P_K; K], [P_V; V]; prefix keys are visible to every query (adapters/prefix.h)
    auto [pk, pv] = prefix_->keys_values();
    const int64_t L = pk.size(0);
    kx = torch::cat({pk.unsqueeze(0).expand({B, L, C}).to(kx.scalar_type()), kx}, 1);
    vx = torch::cat({pv.unsqueeze(0).expand({B, L, C}).to(vx.scalar_type()), vx}, 1);
    Nk = N + L;
    if (mask.defined()) {
      auto shape = mask.sizes().vec();
      shape.back() = L;
      mask = torch::cat({torch::ones(shape, mask.options()), mask}, -1);
    }
  }
  if (var.qk_norm) {
    qx = q_norm(qx.view({B, N, H, Dh})).view({B, N, C});
    kx = k_norm(kx.view({B, Nk, H, Dh})).view({B, Nk, C});
  }
  torch::Tensor out;  // [B, N, C], heads concatenated
  if (!mask.defined() && !prefix_ && attention_kernel_available(qx)) {  // models/attention_kernel.h
    out = sigmoid ? sigmoid_attention(qx, kx, vx, sigmoid_bias_, H, scale) : softmax_attention(qx, kx, vx, H, scale);
  } else {
    auto split = [&](const torch::Tensor& t) { return t.view({B, t.size(1), H, Dh}).transpose(1, 2); };
    auto scores = torch::matmul(split(qx), split(kx).transpose(-2, -1)).mul_(scale);
    if (mask.defined()) scores = scores.masked_fill(mask.logical_not(), -INFINITY);
    auto probs = sigmoid ? torch::sigmoid(scores + sigmoid_bias_) : torch::softmax(scores, -1);
    out = torch::matmul(probs, split(vx)).transpose(1, 2).reshape({B, N, C});
  }
  if (var.gate == Gate::SdpaElementwise) out = out * g;
  if (var.gate == Gate::SdpaHeadwise) out = (out.view({B, N, H, Dh}) * g.unsqueeze(-1)).view({B, N, C});
  return o(out);
}

torch::jit::Module AttentionImpl::to_script(const ScriptUnit& unit) const {
  const auto& var = options.variant();
  auto m = unit.module("Attention");
  m.register_module("q", q->to_script(unit));
  m.register_module("k", k->to_script(unit));
  m.register_module("v", v->to_script(unit));
  m.register_module("o", o->to_script(unit));
  const int64_t H = options.heads(), Dh = options.dim() / H, C = options.dim();
  std::string src = R"(
def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    B = x.size(0)
    N = x.size(1)
    q = self.q.forward(x)
    k = self.k.forward(x)
    v = self.v.forward(x)
)";
  if (var.gate != Gate::None) {
    m.register_module("gate", gate->to_script(unit));
    src += "    g = torch.sigmoid(self.gate.forward(x))\n";
  }
  if (var.gate == Gate::Value) src += "    v = v * g\n";
  if (prefix_) {  // folded: the prefixes as they are now (a reparameterisation network is dropped)
    torch::NoGradGuard no_grad;
    auto [pk, pv] = prefix_->keys_values();
    auto prefix = unit.module("Prefix");  // prefix.prefix_k / prefix.prefix_v, as the direct prefix's names
    prefix.register_parameter("prefix_k", pk.detach().clone(), false);
    prefix.register_parameter("prefix_v", pv.detach().clone(), false);
    m.register_module("prefix", prefix);
    src += fmt::format(
        "    k = torch.cat([self.prefix.prefix_k.unsqueeze(0).expand(B, {L}, {C}), k], 1)\n"
        "    v = torch.cat([self.prefix.prefix_v.unsqueeze(0).expand(B, {L}, {C}), v], 1)\n"
        "    if mask is not None:\n"
        "        shape = mask.size()\n"
        "        mask = torch.cat([torch.ones(shape[:-1] + [{L}]).to(mask.dtype), mask], -1)\n",
        fmt::arg("L", pk.size(0)), fmt::arg("C", C));
  }
  src += fmt::format("    q = q.view(B, N, {H}, {Dh})\n    k = k.view(B, k.size(1), {H}, {Dh})\n", fmt::arg("H", H),
                     fmt::arg("Dh", Dh));
  if (var.qk_norm) {
    m.register_module("q_norm", layer_norm_script(unit, q_norm));
    m.register_module("k_norm", layer_norm_script(unit, k_norm));
    src += "    q = self.q_norm.forward(q)\n    k = self.k_norm.forward(k)\n";
  }
  src += fmt::format(
      "    q = q.transpose(1, 2)\n    k = k.transpose(1, 2)\n"
      "    v = v.view(B, v.size(1), {H}, {Dh}).transpose(1, 2)\n"
      "    scores = torch.matmul(q, k.transpose(-2, -1)) * {scale}\n",
      fmt::arg("H", H), fmt::arg("Dh", Dh), fmt::arg("scale", py_float(1.0 / std::sqrt(double(Dh)))));
  src += "    if mask is not None:\n        scores = scores.masked_fill(mask.logical_not(), float('-inf'))\n";
  if (var.score == Score::Sigmoid) {
    m.register_buffer("sigmoid_bias", sigmoid_bias_.detach().clone());
    src += "    probs = torch.sigmoid(scores + self.sigmoid_bias)\n";
  } else {
    src += "    probs = torch.softmax(scores, -1)\n";
  }
  src += "    out = torch.matmul(probs, v).transpose(1, 2)\n";
  if (var.gate == Gate::SdpaElementwise) src += fmt::format("    out = out * g.view(B, N, {}, {})\n", H, Dh);
  if (var.gate == Gate::SdpaHeadwise) src += fmt::format("    out = out * g.view(B, N, {}, 1)\n", H);
  src += fmt::format("    return self.o.forward(out.reshape(B, N, {}))\n", C);
  m.define(src);
  return m;
}

}  // namespace tunekit::models
