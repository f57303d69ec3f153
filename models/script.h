// Helpers for building TorchScript modules from C++: every tunekit module emits a
// torch::jit::Module that mirrors it (merged weights + forward written in TorchScript), with the
// same dotted names as the eager module's named_parameters() / named_buffers().
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

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

// TorchScript forms of LibTorch's own modules, with their eager names (weight, bias) and forward(x).
torch::jit::Module layer_norm_script(const ScriptUnit& unit, const torch::nn::LayerNorm& norm);  // last dim
torch::jit::Module linear_script(const ScriptUnit& unit, const torch::nn::Linear& linear);

// A numbered list, as the eager models hold one (a plain torch::nn::Module with children "0",
// "1", ..., e.g. blocks, experts): children registered under their index, no forward of its own.
// "0" is no identifier, so the parent reaches a child through list_item("blocks", 0), the
// TorchScript expression getattr(self.blocks, "0").
torch::jit::Module list_script(const ScriptUnit& unit, const std::string& class_name,
                               const std::vector<torch::jit::Module>& items);
std::string list_item(const std::string& list, size_t index);

}  // namespace tunekit::models
