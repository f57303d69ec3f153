// Pre-training a Hugging Face family from its config.json alone (model.from_config): the config
// read with read_hf_config's rules, the model initialised at random as transformers initialises
// it, and what a Hugging Face directory of such a model needs beyond its weights (its tokenizer).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "models/hf/hf_model.h"
#include "src/hf/config.h"
#include "src/hf/load.h"

namespace tunekit::hf {

// The config.json `path` names: a directory holding one, or the file itself (it must be named
// config.json). Read as read_hf_config reads it, at `context` (0: the model's maximum). The
// returned config's `dir` is the directory it is in (no weights are read from it).
HfConfig read_config_source(const std::string& path, int64_t context = 0);

// config.json's initializer_range (transformers' default 0.02 when absent); a value that is not
// a positive number is an error naming the file.
double initializer_range(const HfConfig& config);

// Every Hugging Face tensor of `model` initialised as transformers' _init_weights does for the
// family: Linear and Embedding weights normal(0, initializer_range), biases zero, norm weights
// one; GPT-2's attn.c_proj / mlp.c_proj weights with std initializer_range / sqrt(2 n_layer); a
// Llama-family embedding's pad_token_id row zero (nn.Embedding's padding_idx). tunekit-only
// parameters (gates, a learnable sigmoid bias) keep their own initialisation.
void init_weights_as_transformers(models::hf::HfModel& model, const HfConfig& config);

// Weights a random build stores narrow from the start (bench_llm's frozen base): the 2-D tensors
// `select` picks from the built model, in `dtype`.
struct NarrowBuild {
  models::FrozenDtype dtype = models::FrozenDtype::Fp32;
  std::function<std::vector<torch::Tensor>(torch::nn::Module&)> select;
};

// The model of `config`, initialised at random (init_weights_as_transformers); seeded by the
// caller (torch::manual_seed). With `narrow`, the weights it picks are drawn from the same
// normal, 4 MiB of float32 rows at a time, straight into their narrow storage
// (models::narrow_frozen) and frozen: their float32 tensors are never written, so the build peaks
// near the narrow size, as a load with HfLoadOptions::frozen_dtype does. (Those draws, and the
// ones after them, are not the float32 build's values.)
std::shared_ptr<models::hf::HfModel> build_from_config(const HfConfig& config, const HfBuildOptions& options = {},
                                                       const NarrowBuild& narrow = {});

// The tokenizer's special ids written into config.json's bos_token_id / eos_token_id /
// pad_token_id (null where the tokenizer has none).
void set_special_token_ids(HfConfig& config, const data::Tokenizer& tok);

// Writes the tokenizer files a Hugging Face directory carries for a sentencepiece tokenizer (the
// Llama 2 format): tokenizer.model (the run's file, copied), tokenizer_config.json
// (LlamaTokenizer, bos/eos/pad/unk tokens, add_bos_token true, model_max_length `context`),
// special_tokens_map.json and generation_config.json (bos/eos/pad ids), each atomically.
// Returns the names written. Other tokenizer kinds are an error (only sentencepiece is trained).
std::vector<std::string> write_hf_tokenizer_files(const data::Tokenizer& tok, const std::string& out_dir,
                                                  int64_t context);

}  // namespace tunekit::hf
