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

}  // namespace tunekit::models
