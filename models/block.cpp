#include "models/block.h"

#include <fmt/format.h>

#include "util/error.h"

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
  mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
  fc1 = mlp->register_module("fc1", Linear(d, hidden));
  fc2 = mlp->register_module("fc2", Linear(hidden, d));
  drop = register_module("drop", torch::nn::Dropout(options.dropout()));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  auto a = attn(norm1(x), mask);
  auto h = x + drop(options.post_attn_norm() ? post_norm(a) : a);
  auto n = norm2(h);
  auto f = fc2(torch::gelu(fc1(n)));
  if (mlp_prompt) f = mlp_prompt->forward(n, f);
  auto out = h + drop(f);
  return prompt ? prompt->forward(x, out) : out;
}

void BlockImpl::attach_mlp_output(std::shared_ptr<adapters::OutputAdapter> p) {
  if (mlp_prompt) throw Error("this block's MLP already has an output adapter attached");
  mlp_prompt = mlp->register_module("prompt", std::move(p));
}

void BlockImpl::attach_output(std::shared_ptr<adapters::OutputAdapter> p) {
  if (prompt) throw Error("this block already has an output adapter attached");
  prompt = register_module("prompt", std::move(p));
}

std::string register_block_scripts(torch::jit::Module& m, const std::vector<Block>& blocks, const ScriptUnit& unit,
                                   const std::string& extra_args) {
  std::vector<torch::jit::Module> scripts;
  std::string calls;
  for (size_t i = 0; i < blocks.size(); ++i) {
    scripts.push_back(blocks[i]->to_script(unit));
    calls += fmt::format("    h = {}.forward(h{})\n", list_item("blocks", i), extra_args);
  }
  m.register_module("blocks", list_script(unit, "Blocks", scripts));
  return calls;
}

double block_flops(const BlockOptions& o, double n) {
  const double d = o.dim();
  const double hidden = static_cast<double>(static_cast<int64_t>(d * o.mlp_ratio()));
  double f = 2 * n * (4 * d * d)     // q, k, v, o
             + 2 * 2 * n * n * d     // QK^T and AV
             + 2 * n * (2 * d * hidden);  // MLP
  const Gate gate = o.attention().gate;
  if (gate != Gate::None) f += 2 * n * d * (gate == Gate::SdpaHeadwise ? o.heads() : d);
  return f;
}

std::string describe_attention(const AttentionVariant& a, bool post_attn_norm) {
  std::string attn = to_string(a.score);
  if (a.gate != Gate::None) attn += ", gate " + to_string(a.gate) + (a.gate_bias ? " with bias" : "");
  if (a.qk_norm) attn += ", qk_norm";
  if (post_attn_norm) attn += ", post_attn_norm";
  return attn;
}

// The MLP as the eager model nests it: mlp.fc1, mlp.fc2 and an output adapter at mlp.prompt.
static torch::jit::Module mlp_script(const BlockImpl& block, const ScriptUnit& unit) {
  auto m = unit.module("Mlp");
  m.register_module("fc1", block.fc1->to_script(unit));
  m.register_module("fc2", block.fc2->to_script(unit));
  std::string src =
      "def forward(self, n: Tensor) -> Tensor:\n"
      "    f = self.fc2.forward(torch.gelu(self.fc1.forward(n)))\n";
  if (block.mlp_prompt) {
    m.register_module("prompt", block.mlp_prompt->to_script(unit));
    src += "    return self.prompt.forward(n, f)\n";
  } else {
    src += "    return f\n";
  }
  m.define(src);
  return m;
}

torch::jit::Module BlockImpl::to_script(const ScriptUnit& unit) const {
  auto m = unit.module("Block");
  m.register_module("norm1", layer_norm_script(unit, norm1));
  m.register_module("attn", attn->to_script(unit));
  if (options.post_attn_norm()) m.register_module("post_norm", layer_norm_script(unit, post_norm));
  m.register_module("norm2", layer_norm_script(unit, norm2));
  m.register_module("mlp", mlp_script(*this, unit));
  std::string src = fmt::format(R"(
def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    h = x + {}
    f = self.mlp.forward(self.norm2.forward(h))
)",
                                options.post_attn_norm()
                                    ? "self.post_norm.forward(self.attn.forward(self.norm1.forward(x), mask))"
                                    : "self.attn.forward(self.norm1.forward(x), mask)");
  if (prompt) {
    m.register_module("prompt", prompt->to_script(unit));
    src += "    return self.prompt.forward(x, h + f)\n";
  } else {
    src += "    return h + f\n";
  }
  m.define(src);
  return m;
}

}  // namespace tunekit::models
