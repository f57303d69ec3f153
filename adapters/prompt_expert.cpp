#include "adapters/prompt_expert.h"

#include <fmt/format.h>

#include <cmath>

namespace tunekit::adapters {

PromptExpertImpl::PromptExpertImpl(PromptExpertOptions options_) : options(std::move(options_)) {
  auto g = options.gate();
  g.in_features(options.in_features()).reference(true);
  gate = register_module("gate", Gate(g));
  auto experts = register_module("experts", std::make_shared<torch::nn::Module>());
  for (int64_t i = 0; i < g.experts(); ++i) {
    auto e = experts->register_module(std::to_string(i), std::make_shared<torch::nn::Module>());
    const int64_t mid = options.hidden() > 0 ? options.hidden() : options.out_features();
    fc1.push_back(e->register_module("fc1", torch::nn::Linear(options.in_features(), mid)));
    if (options.hidden() > 0) fc2.push_back(e->register_module("fc2", torch::nn::Linear(mid, options.out_features())));
  }
}

torch::Tensor PromptExpertImpl::expert_forward(int64_t i, const torch::Tensor& x) {
  auto h = fc1[static_cast<size_t>(i)](x);
  return options.hidden() > 0 ? fc2[static_cast<size_t>(i)](torch::gelu(h)) : h;
}

torch::Tensor PromptExpertImpl::gate_weights(const torch::Tensor& x) {
  if (options.gate_input() == GateInput::Mean && x.dim() == 3) return gate(x.mean(1)).unsqueeze(1);  // [B, 1, K+1]
  return gate(x);
}

torch::Tensor PromptExpertImpl::forward(const torch::Tensor& x, const torch::Tensor& frozen_out) {
  auto w = gate_weights(x);  // [..., K+1]
  auto out = w.select(-1, 0).unsqueeze(-1) * frozen_out;
  for (int64_t i = 0; i < options.gate().experts(); ++i)
    out = out + w.select(-1, i + 1).unsqueeze(-1) * expert_forward(i, x);
  if (!is_training()) {  // per gate decision: per token, or per sequence with gate_input mean
    torch::NoGradGuard no_grad;
    usage_sum_ += (1 - w.select(-1, 0)).sum().item<double>();
    usage_n_ += w.numel() / w.size(-1);
  }
  return out;
}

torch::jit::Module PromptExpertImpl::to_script(const models::ScriptUnit& unit) const {
  auto m = unit.module("PromptExpert");
  m.register_module("gate", gate->to_script(unit));
  std::string src = "def forward(self, x: Tensor, frozen_out: Tensor) -> Tensor:\n";
  src += options.gate_input() == GateInput::Mean
             ? "    if x.dim() == 3:\n        w = self.gate.forward(x.mean(1)).unsqueeze(1)\n"
               "    else:\n        w = self.gate.forward(x)\n"
             : "    w = self.gate.forward(x)\n";
  src += "    out = w[..., 0:1] * frozen_out\n";
  std::vector<torch::jit::Module> experts;  // experts.<i>.fc1 / .fc2, as the eager names
  for (size_t i = 0; i < fc1.size(); ++i) {
    auto e = unit.module("Expert");
    e.register_module("fc1", models::linear_script(unit, fc1[i]));
    std::string y = "self.fc1.forward(x)";
    if (options.hidden() > 0) {
      e.register_module("fc2", models::linear_script(unit, fc2[i]));
      y = "self.fc2.forward(torch.gelu(" + y + "))";
    }
    e.define("def forward(self, x: Tensor) -> Tensor:\n    return " + y + "\n");
    experts.push_back(e);
    src += fmt::format("    out = out + w[..., {}:{}] * {}.forward(x)\n", i + 1, i + 2, models::list_item("experts", i));
  }
  m.register_module("experts", models::list_script(unit, "Experts", experts));
  src += "    return out\n";
  m.define(src);
  return m;
}

}  // namespace tunekit::adapters
