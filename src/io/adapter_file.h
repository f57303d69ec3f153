// Adapters on their own, in Hugging Face PEFT's layout: adapter_config.json and
// adapter_model.safetensors with PEFT's key scheme (base_model.model.<path>.lora_A.weight,
// .lora_B.weight, .lora_magnitude_vector; modules_to_save as base_model.model.<path>.<param>).
// LoRA and DoRA files are PEFT LORA files (use_dora for DoRA) that PEFT's
// PeftModel.from_pretrained loads as they are, and PEFT LORA adapters made elsewhere load here.
// HoRA and DoRAN have no PEFT type: their files use the same layout with peft_type
// "HORA"/"DORAN", the generators under base_model.model.hypernets.<group>.<param> and DoRAN's τ as
// <path>.tau_rho; prompt experts use peft_type "PROMPT_EXPERT" with
// base_model.model.<host>.prompt.<param> (README, "Adapter files").
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
// `adapted` lists the adapted module names: they are target_modules (exact names, which PEFT
// matches as they are); modules_to_save lists the module names cfg.modules_to_save selects.
// `base_model` becomes base_model_name_or_path: pass the name the user gave the base model (a
// Hub id such as "Qwen/Qwen2.5-0.5B") or the model directory's own name, never an absolute path
// of the training machine (an absolute path is cut to its last component: PEFT users load the
// adapter elsewhere). For the Hugging Face families (models/hf/hf_model.h) the config is PEFT's
// for that model: task_type "CAUSAL_LM" for GPT-2 and the Llama family; null for ViT (PEFT has
// no image-classification task type, and its image-classification examples leave task_type
// unset, so PeftModel wraps the ViTForImageClassification as it is); fan_in_fan_out true when
// the adapted layers are GPT-2's Conv1D ([in, out] in the checkpoint). The adapter tensors have
// nn.Linear's shapes either way: lora_A [r, in], lora_B [out, r], DoRA's magnitude [out], one
// per output row. LORA files carry no key of tunekit's own in adapter_config.json (older PEFT
// versions refuse unknown keys); tunekit's extras go in the safetensors metadata ("tunekit").
void save_adapter(const std::string& dir, torch::nn::Module& model, const AdapterConfig& cfg,
                  const std::vector<std::string>& adapted, const std::string& base_model);

// The adapter directory `path` stands for: itself if it holds adapter_model.safetensors, else a
// run directory's checkpoints/best (or last). Throws a clear error otherwise, starting "<label>: ".
std::string resolve_adapter_dir(const std::string& path, const std::string& label = "adapter.init_from");

// Loads a saved adapter into a model that already has the same adapter attached (checks kind,
// r, alpha, use_rslora and modules_to_save against `cfg`, then every tensor name and shape).
// A PEFT LORA adapter made elsewhere (no tunekit section) is a lora adapter, or dora with
// use_dora; fan_in_fan_out, use_rslora and modules_to_save are understood, and PEFT features
// tunekit does not implement are a one-line error naming the file and the key (see
// peft_adapter_config). Returns the number of tensors loaded.
int64_t load_adapter(const std::string& path, torch::nn::Module& model, const AdapterConfig& cfg);

// The adapter settings a PEFT LORA adapter directory (or a run directory's checkpoint, as
// resolve_adapter_dir) describes, for putting it on a bare model: `tunekit export SRC --adapter
// DIR`, `tunekit merge SRC --adapter DIR`. Then
//   auto cfg = io::peft_adapter_config(dir);
//   adapters::attach_adapters(model, from_recipe::attach_options(cfg));
//   io::load_adapter(cfg.init_from, model, cfg);
// Fields: kind lora, or dora with use_dora; r; alpha = lora_alpha; dropout = lora_dropout;
// rslora = use_rslora; targets = target_modules as adapters::find_targets patterns (a list's
// exact or suffix names as they are; PEFT's one-string form, a regular expression matched in
// full, as "re:<expression>"; "all-linear" as every Linear layer but lm_head, PEFT's expansion
// for these families, which PEFT itself writes out as a list when it saves); modules_to_save;
// init_from = the resolved directory.
// fan_in_fan_out needs no setting (tunekit's Linear holds [out, in] for Conv1D layers too).
// Refused with a one-line error naming adapter_config.json and the key: peft_type other than
// LORA (tunekit's own HORA/DORAN/PROMPT_EXPERT/PREFIX files: pass the run directory, whose
// recipe rebuilds them), non-empty rank_pattern / alpha_pattern, layers_to_transform,
// layer_replication, exclude_modules, bias other than "none", lora_bias, use_qalora,
// trainable_token_indices, target_parameters, alora_invocation_tokens, and an
// init_lora_weights that changed the base weights (pissa*, olora, corda, loftq): the adapter
// alone would then compute something else on the original base.
AdapterConfig peft_adapter_config(const std::string& path);

}  // namespace tunekit::io
