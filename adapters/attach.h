// attach_adapters: walks a model's named_modules(), attaches one adapter to every
// models::Linear whose name matches a target pattern, freezes the base and unfreezes the
// adapters and `modules_to_save`. Also merge/unmerge and parameter counts.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "src/recipe/recipe.h"

namespace tunekit::adapters {

struct AttachReport {
  std::vector<std::string> adapted;   // module names that got an adapter
  std::vector<std::string> saved;     // modules_to_save that matched
  int64_t trainable = 0, total = 0;   // parameter counts after attaching
  std::string summary() const;
};

AttachReport attach_adapters(torch::nn::Module& model, const AdapterConfig& cfg);

// Names of every models::Linear in the model (valid adapter targets).
std::vector<std::string> adaptable_modules(torch::nn::Module& model);

void merge_adapters(torch::nn::Module& model);
void unmerge_adapters(torch::nn::Module& model);

int64_t count_parameters(const torch::nn::Module& model, bool trainable_only);

}  // namespace tunekit::adapters
