#include "models/script.h"

#include <fmt/format.h>

namespace tunekit::models {

ScriptUnit::ScriptUnit() : cu_(std::make_shared<torch::jit::CompilationUnit>()) {}

torch::jit::Module ScriptUnit::module(const std::string& class_name) const {
  return torch::jit::Module(c10::QualifiedName("__torch__.tunekit." + class_name), cu_,
                            /*shouldMangle=*/true);
}

std::string py_float(double v) {
  std::string s = fmt::format("{}", v);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
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

torch::jit::Module linear_script(const ScriptUnit& unit, const torch::nn::Linear& linear) {
  auto m = unit.module("TorchLinear");
  m.register_parameter("weight", linear->weight.detach().clone(), false);
  if (linear->bias.defined()) {
    m.register_parameter("bias", linear->bias.detach().clone(), false);
    m.define("def forward(self, x: Tensor) -> Tensor:\n    return torch.linear(x, self.weight, self.bias)\n");
  } else {
    m.define("def forward(self, x: Tensor) -> Tensor:\n    return torch.linear(x, self.weight)\n");
  }
  return m;
}

torch::jit::Module list_script(const ScriptUnit& unit, const std::string& class_name,
                               const std::vector<torch::jit::Module>& items) {
  auto m = unit.module(class_name);
  for (size_t i = 0; i < items.size(); ++i) m.register_module(std::to_string(i), items[i]);
  return m;
}

std::string list_item(const std::string& list, size_t index) {
  return fmt::format("getattr(self.{}, \"{}\")", list, index);
}

}  // namespace tunekit::models
