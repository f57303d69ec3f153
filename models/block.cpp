#include "models/block.h"

#include <fmt/format.h>

namespace tunekit::models {

BlockImpl::BlockImpl(BlockOptions options_) : options(std::move(options_)) { reset(); }

void BlockImpl::reset() {
  const int64_t d = options.dim();
  const int64_t hidden = static_cast<int64_t>(d * options.mlp_ratio());
  auto ln = torch::nn::LayerNormOptions({d}).eps(options.norm_eps());
  norm1 = register_module("norm1", torch::nn::LayerNorm(ln));
  attn = register_module("attn", Attention(AttentionOptions(d, options.heads()).variant(options.attention())));
  if (options.post_attn_norm()) post_norm = register_module("post_norm", torch::nn::LayerNorm(ln));
  norm2 = register_module("norm2", torch::nn::LayerNorm(ln));
  // Registered under "mlp" so their names are blocks.N.mlp.fc1 / blocks.N.mlp.fc2.
  auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
  fc1 = mlp->register_module("fc1", Linear(d, hidden));
  fc2 = mlp->register_module("fc2", Linear(hidden, d));
  drop = register_module("drop", torch::nn::Dropout(options.dropout()));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  auto a = attn(norm1(x), mask);
  auto h = x + drop(options.post_attn_norm() ? post_norm(a) : a);
  return h + drop(fc2(torch::gelu(fc1(norm2(h)))));
}

torch::jit::Module layer_norm_script(const ScriptUnit& unit, const torch::nn::LayerNorm& norm) {
  auto m = unit.module("LayerNorm");
  const auto& o = norm->options;
  m.register_parameter("weight", norm->weight.detach().clone(), false);
  m.register_parameter("bias", norm->bias.detach().clone(), false);
  m.define(fmt::format(R"(
def forward(self, x: Tensor) -> Tensor:
    return torch.layer_norm(x, [{}], self.weight, self.bias, {})
)",
                       o.normalized_shape().back(), py_float(o.eps())));
  return m;
}

torch::jit::Module BlockImpl::to_script(const ScriptUnit& unit) const {
  auto m = unit.module("Block");
  m.register_module("norm1", layer_norm_script(unit, norm1));
  m.register_module("attn", attn->to_script(unit));
  m.register_module("norm2", layer_norm_script(unit, norm2));
  if (options.post_attn_norm()) m.register_module("post_norm", layer_norm_script(unit, post_norm));
  m.register_module("fc1", fc1->to_script(unit));
  m.register_module("fc2", fc2->to_script(unit));
  m.define(fmt::format(R"(
def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    h = x + {}
    return h + self.fc2.forward(torch.gelu(self.fc1.forward(self.norm2.forward(h))))
)",
                       options.post_attn_norm() ? "self.post_norm.forward(self.attn.forward(self.norm1.forward(x), mask))"
                                                : "self.attn.forward(self.norm1.forward(x), mask)"));
  return m;
}

}  // namespace tunekit::models
