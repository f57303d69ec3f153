// Loading a Hugging Face model directory into a tunekit model of its family: find the weights
// (model.safetensors, or model.safetensors.index.json and its shards), match the file's names to
// the model's HfModel::hf_tensors() (with and without the base-model prefix, older files'
// buffers skipped), check every tensor before reading any, and read each one with pread straight
// into the parameter it fills (float16 / bfloat16 converted through a bounded buffer), so the
// model is never held twice in memory.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/hf/hf_model.h"
#include "models/precision_kind.h"
#include "src/hf/config.h"

namespace tunekit::hf {

// Where a directory's weights are: one file, or the shards an index names.
struct HfWeightFiles {
  std::vector<std::string> files;  // paths, in the index's shard order
  std::string index;               // model.safetensors.index.json when sharded, else ""
};
// Finds the weights of `dir`. model.safetensors wins over an index (as transformers does); a
// directory with only pytorch_model.bin (or *.bin shards) is an error saying safetensors is needed.
HfWeightFiles find_hf_weights(const std::string& dir);

struct HfWeightsOptions {
  // Model tensors (by their Hugging Face names, util/text.h globs) kept as initialised: a new
  // classifier ("classifier.*"). The file's tensors of those names are ignored.
  TORCH_ARG(std::vector<std::string>, exclude) = {};
  // Read buffer for conversions and transposed destinations (bytes).
  TORCH_ARG(uint64_t, chunk_bytes) = 16ull << 20;
  // model.frozen_dtype applied while reading: these model tensors (2-D models::Linear weights,
  // matched by identity) are stored in `narrow_dtype` as they are read (models/precision.h
  // narrow_frozen), block of rows by block of rows, so no whole float32 copy of them exists.
  TORCH_ARG(std::vector<torch::Tensor>, narrow) = {};
  TORCH_ARG(models::FrozenDtype, narrow_dtype) = models::FrozenDtype::Fp32;
};

struct HfLoadReport {
  std::vector<std::string> files;    // the safetensors files read
  int64_t tensors = 0;               // model tensors filled from the files
  uint64_t bytes = 0;                // tensor bytes read
  std::vector<std::string> fresh;    // model tensors kept as initialised (excluded, or a head the file's class lacks)
  std::vector<std::string> skipped;  // file tensors not loaded: buffers, a ViTModel pooler, a tied lm_head, excluded
  std::vector<std::string> dtypes;   // the storage dtypes found ("BF16", ...)
  int64_t narrowed = 0;              // tensors stored narrow as they were read (HfWeightsOptions::narrow)
  int64_t narrowed_saved = 0;        // the bytes that saves against float32
};

// Loads the checkpoint of `config.dir` into `model` (built from `config`). Before reading any
// data every tensor is checked, each problem one line naming the file and the tensor: missing,
// unexpected (with a did-you-mean), shape (a Conv1D weight's [in, out] layout considered),
// dtype (weights are F32, F16 or BF16), a tied lm_head that differs from the embedding, shards
// that do not hold what the index says; truncated or overlapping files fail when opened.
// With `config.base_model` (GPT2Model, ViTModel, ...) the head the file cannot hold is fresh.
HfLoadReport load_hf_weights(const HfConfig& config, models::hf::HfModel& model, const HfWeightsOptions& options = {});

// The model of `config`'s family, initialised at random (the weights are loaded next).
struct HfBuildOptions {
  TORCH_ARG(models::AttentionVariant, attention) = {};
  TORCH_ARG(double, dropout) = 0.0;
  // ViT: a classifier of this many classes instead of the checkpoint's (0: the checkpoint's).
  TORCH_ARG(int64_t, num_labels) = 0;
  // ViT: feed images as the data gives them, x = (x01 - data_mean) / data_std, resized and
  // normalised as the checkpoint's preprocessor_config.json says (models::hf::ImagePreprocess).
  TORCH_ARG(bool, preprocess_images) = false;
  TORCH_ARG(std::vector<double>, data_mean) = {0.0};
  TORCH_ARG(std::vector<double>, data_std) = {1.0};
};
std::shared_ptr<models::hf::HfModel> build_hf_model(const HfConfig& config, const HfBuildOptions& options = {});

// Everything the loader's callers give: config (context), model build and weights options.
struct HfLoadOptions {
  TORCH_ARG(int64_t, max_seq_len) = 0;  // the context used (read_hf_config's `context`)
  TORCH_ARG(HfBuildOptions, build) = {};
  TORCH_ARG(std::vector<std::string>, exclude) = {};
  // Stores the tensors `frozen_select` picks from the built model in `frozen_dtype` as they are
  // read (HfWeightsOptions::narrow): training with model.frozen_dtype, whose load then peaks near
  // the narrow size instead of the float32 one. Unset or Fp32: everything read as float32.
  TORCH_ARG(models::FrozenDtype, frozen_dtype) = models::FrozenDtype::Fp32;
  TORCH_ARG(std::function<std::vector<torch::Tensor>(torch::nn::Module&)>, frozen_select) = nullptr;
};

struct HfLoaded {
  HfConfig config;
  std::shared_ptr<models::hf::HfModel> model;
  HfLoadReport report;
};
// read_hf_config + build_hf_model + load_hf_weights. The model is built without random
// initialisation (models/init_guard.h); the tensors the checkpoint does not fill are then
// initialised as Hugging Face does (biases zero, norms one, weights normal(0, 0.02)). A ViT
// num_labels other than the checkpoint's excludes "classifier.*" (a new head, initialised fresh).
HfLoaded load_hf(const std::string& dir, const HfLoadOptions& options = {});
std::shared_ptr<models::hf::HfModel> load_hf_model(const std::string& dir, const HfLoadOptions& options = {});

}  // namespace tunekit::hf
