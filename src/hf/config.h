// A Hugging Face model directory's config.json (and preprocessor_config.json) read into the
// Options of the family models (models/hf/hf_model.h). Every key the model depends on is read
// with Hugging Face's default when absent; a feature tunekit does not implement (rope scaling,
// a sliding window shorter than the context, another activation) is a one-line error naming
// the file and the key, never silently ignored.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/hf/hf_model.h"

namespace tunekit::hf {

// preprocessor_config.json of a ViT checkpoint: what its images look like on the way in.
struct HfImageInput {
  bool found = false;             // false: no preprocessor_config.json (ViTImageProcessor's defaults)
  int64_t height = 0, width = 0;  // the size images are resized to (= config.json's image_size)
  std::vector<double> mean{0.5, 0.5, 0.5},
      std{0.5, 0.5, 0.5};  // image_mean / image_std (identity without do_normalize)
};

struct HfConfig {
  std::string dir;  // the model directory (errors name its files; save copies its tokenizer)
  models::hf::Family family = models::hf::Family::Llama;
  std::string architecture;  // architectures[0]: "GPT2LMHeadModel", "GPT2Model", "ViTModel", ...; "" if absent
  bool base_model = false;   // a headless class (GPT2Model, LlamaModel, ViTModel): keys without the prefix
  torch::ScalarType dtype = torch::kFloat;  // torch_dtype: the storage dtype (float32 when absent)
  // Only the family's own Options are filled; the others keep their defaults.
  models::hf::Gpt2Options gpt2;
  models::hf::LlamaOptions llama;  // llama, mistral, qwen2
  models::hf::VitOptions vit;
  std::vector<std::string> labels;  // ViT: id2label in id order ("LABEL_i" when the file has none)
  HfImageInput image;               // ViT: preprocessor_config.json
  int64_t context = 0;              // the context the model is used at (LMs; 0 for ViT)
  nlohmann::json raw;               // config.json as read (written back by save_hf_model)

  // "<dir>/config.json", for messages.
  std::string config_path() const;
  // The family's model class with a head: GPT2LMHeadModel, LlamaForCausalLM, ..., ViTForImageClassification.
  std::string head_architecture() const;
};

// Reads `dir`/config.json (+ preprocessor_config.json for ViT). `context` is the sequence length
// the model will be used at (0: the checkpoint's maximum, n_positions / max_position_embeddings);
// it becomes the Options' max_seq_len and is checked against GPT-2's learned positions and
// Mistral's / Qwen2's sliding window. Throws tunekit::Error naming the file and the key.
HfConfig read_hf_config(const std::string& dir, int64_t context = 0);

// The storage dtypes a checkpoint may use, by config.json's name ("float32", "float16",
// "bfloat16"); anything else is an error naming `where`.
torch::ScalarType hf_dtype_from_name(const std::string& name, const std::string& where);
std::string hf_dtype_name(torch::ScalarType dtype);  // "float32", "float16", "bfloat16"

}  // namespace tunekit::hf
