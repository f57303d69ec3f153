// Adapters on their own, in Hugging Face PEFT's layout: adapter_config.json and
// adapter_model.safetensors with PEFT's key scheme (base_model.model.<path>.lora_A.weight,
// .lora_B.weight, .lora_magnitude_vector; modules_to_save as base_model.model.<path>.<param>).
// LoRA and DoRA files are PEFT LORA files (use_dora for DoRA). HoRA and DoRAN have no PEFT type:
// their files use the same layout with peft_type "HORA"/"DORAN", the generators under
// base_model.model.hypernets.<group>.<param> and DoRAN's τ as <path>.tau_rho; prompt experts use
// peft_type "PROMPT_EXPERT" with base_model.model.<host>.prompt.<param> (README, "Adapter files").
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "src/recipe/recipe.h"

namespace tunekit::io {

inline constexpr const char* kAdapterConfigFile = "adapter_config.json";
inline constexpr const char* kAdapterWeightsFile = "adapter_model.safetensors";

// The adapter's tensors under PEFT names, in the model's parameter order.
std::vector<std::pair<std::string, torch::Tensor>> adapter_state(torch::nn::Module& model, const AdapterConfig& cfg);

// Writes adapter_config.json and adapter_model.safetensors into `dir` (created if needed).
// `adapted` lists the adapted module names; `base_model` names what the adapter was trained on.
void save_adapter(const std::string& dir, torch::nn::Module& model, const AdapterConfig& cfg,
                  const std::vector<std::string>& adapted, const std::string& base_model);

// The adapter directory `path` stands for: itself if it holds adapter_model.safetensors, else a
// run directory's checkpoints/best (or last). Throws a clear error otherwise.
std::string resolve_adapter_dir(const std::string& path);

// Loads a saved adapter into a model that already has the same adapter attached (checks kind,
// r and alpha against `cfg`, then every tensor name and shape). Returns the tensors loaded.
int64_t load_adapter(const std::string& path, torch::nn::Module& model, const AdapterConfig& cfg);

}  // namespace tunekit::io
