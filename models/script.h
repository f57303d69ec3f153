// Helpers for building TorchScript modules from C++: every tunekit module emits a
// torch::jit::Module that mirrors it (merged weights + forward written in TorchScript).
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>

namespace tunekit::models {

// One compilation unit per export; class names are mangled so repeated parts can coexist.
class ScriptUnit {
 public:
  ScriptUnit();
  torch::jit::Module module(const std::string& class_name) const;

 private:
  std::shared_ptr<torch::jit::CompilationUnit> cu_;
};

// A double as a TorchScript float literal (always with '.' or exponent, round-trip precise).
std::string py_float(double v);

}  // namespace tunekit::models
