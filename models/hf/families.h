// Builders of the Hugging Face families (models/hf/hf_model.h): random-initialised modules with
// the Hugging Face names, ready for src/hf/checkpoint.cpp to load a checkpoint into.
#pragma once
#include <memory>

#include "models/hf/hf_model.h"

namespace tunekit::models::hf {

std::shared_ptr<HfModel> make_gpt2(const Gpt2Options& options);
std::shared_ptr<HfModel> make_llama(const LlamaOptions& options);  // llama, mistral, qwen2
std::shared_ptr<HfModel> make_vit(const VitOptions& options);

}  // namespace tunekit::models::hf
