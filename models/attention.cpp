#include "models/attention.h"

#include <fmt/format.h>

#include <cmath>

#include "models/attention_kernel.h"
#include "src/util/error.h"

namespace tunekit::models {

AttentionImpl::AttentionImpl(AttentionOptions options_) : options(std::move(options_)) {
  reset();
}

void AttentionImpl::reset() {
  if (options.heads() <= 0 || options.dim() % options.heads() != 0)
    throw Error(fmt::format("attention: dim {} is not divisible by heads {}", options.dim(),
                            options.heads()));
  auto lin = [&] { return Linear(LinearOptions(options.dim(), options.dim()).bias(options.bias())); };
  q = register_module("q", lin());
  k = register_module("k", lin());
  v = register_module("v", lin());
  o = register_module("o", lin());
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  const int64_t B = x.size(0), N = x.size(1), C = x.size(2), H = options.heads(), Dh = C / H;
  const double scale = 1.0 / std::sqrt(double(Dh));
  auto qx = q(x), kx = k(x), vx = v(x);
  if (!mask.defined() && attention_kernel_available(qx))  // models/attention_kernel.h
    return o(softmax_attention(qx, kx, vx, H, scale));
  auto split = [&](const torch::Tensor& t) { return t.view({B, N, H, Dh}).transpose(1, 2); };
  auto scores = torch::matmul(split(qx), split(kx).transpose(-2, -1)).mul_(scale);
  if (mask.defined()) scores = scores.masked_fill(mask.logical_not(), -INFINITY);
  auto out = torch::matmul(torch::softmax(scores, -1), split(vx));
  return o(out.transpose(1, 2).reshape({B, N, C}));
}

torch::jit::Module AttentionImpl::to_script(const ScriptUnit& unit) const {
  auto m = unit.module("Attention");
  m.register_module("q", q->to_script(unit));
  m.register_module("k", k->to_script(unit));
  m.register_module("v", v->to_script(unit));
  m.register_module("o", o->to_script(unit));
  const int64_t H = options.heads(), Dh = options.dim() / H;
  m.define(fmt::format(R"(
def forward(self, x: Tensor) -> Tensor:
    B = x.size(0)
    N = x.size(1)
    q = self.q.forward(x).view(B, N, {H}, {Dh}).transpose(1, 2)
    k = self.k.forward(x).view(B, N, {H}, {Dh}).transpose(1, 2)
    v = self.v.forward(x).view(B, N, {H}, {Dh}).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(-2, -1)) * {scale}
    attn = torch.softmax(scores, -1)
    out = torch.matmul(attn, v).transpose(1, 2).reshape(B, N, {C})
    return self.o.forward(out)
)",
                       fmt::arg("H", H), fmt::arg("Dh", Dh), fmt::arg("C", options.dim()),
                       fmt::arg("scale", py_float(1.0 / std::sqrt(double(Dh))))));
  return m;
}

}  // namespace tunekit::models
