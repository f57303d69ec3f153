// The recipe parser's parts, one per YAML section and in the same shape (internal to
// src/recipe/): each takes its section, reads and checks its keys, and reports keys nobody read.
// The checks that span sections (data against model) have their own functions.
#pragma once
#include <cstdint>
#include <string>

#include "src/recipe/recipe.h"
#include "src/recipe/yaml_reader.h"

namespace tunekit::recipe {

using yaml::Section;

// Upper bounds on sizes, checked before LibTorch sees them (they are far above anything tunekit
// trains on a CPU; past them a typo like `dim: 4000000` would ask for terabytes or wrap around).
inline constexpr int64_t kMaxDim = 65536;               // model.dim, hidden widths
inline constexpr int64_t kMaxDepth = 1024;              // model.depth
inline constexpr int64_t kMaxImageSize = 4096;          // model.image_size
inline constexpr int64_t kMaxChannels = 64;             // model.channels
inline constexpr int64_t kMaxPatches = 16384;           // (image_size / patch)^2
inline constexpr int64_t kMaxVocab = 1 << 21;           // model.vocab_size
inline constexpr int64_t kMaxSeqLen = 1 << 17;          // model.max_seq_len
inline constexpr int64_t kMaxClasses = 1 << 20;         // model.num_classes
inline constexpr double kMaxMlpRatio = 64;              // model.mlp_ratio
inline constexpr int64_t kMaxParameters = 2LL << 30;    // 8 GiB of float32 parameters
inline constexpr int64_t kMaxBatch = 1 << 20;           // data.batch_size, eval_batch_size
inline constexpr int64_t kMaxThreads = 1024;            // threads.torch, threads.blas
inline constexpr int64_t kMaxExperts = 256;             // adapter.experts
inline constexpr int64_t kMaxPrefixLength = 4096;       // adapter.prefix_length

// A run name becomes a directory: [A-Za-z0-9._+-], not starting with '.' or '-', at most 255
// characters. Returns why `name` is not one ("" when it is).
std::string run_name_problem(const std::string& name);

// `threads:` is a number (BLAS threads, LibTorch at 1) or {torch: N, blas: N}; read from the top.
ThreadPolicy parse_threads(Section& top);
// `device:` (auto, cpu, cuda, cuda:N), read from the top; checked for form only (see DeviceConfig).
DeviceConfig parse_device(Section& top);
ModelConfig parse_model(Section model);        // recipe_model.cpp
InitFromConfig parse_init_from(Section init);  // recipe_model.cpp
// adapter.r is checked against the model's width (a rank above it adds nothing).
AdapterConfig parse_adapter(Section adapter, const ModelConfig& model);  // recipe_adapter.cpp
DataConfig parse_data(Section data, const ModelConfig& model);  // recipe_data.cpp
OptimizerConfig parse_optimizer(Section optimizer);             // recipe_train.cpp, with the rest
ScheduleConfig parse_schedule(Section schedule);
TrainConfig parse_train(Section train);
OutputConfig parse_output(Section output, const std::string& source);
SweepConfig parse_sweep(Section sweep);

// Cross-section checks (recipe_data.cpp).
// data.dataset must suit model.kind (reported on data.dataset).
void check_dataset_fits_model(Section& data, const DataConfig& c, const ModelConfig& model);
// tunekit's own ViT reads Fashion-MNIST's 1x28x28 images as they are: model.channels and
// model.image_size must match them (checked here, not at the first batch).
void check_images_fit_model(Section& top, const ModelConfig& model, const DataConfig& data);
// A classifier's model.num_classes must match the classes the data selects.
void check_classes_fit_model(Section& top, const ModelConfig& model, const DataConfig& data);

}  // namespace tunekit::recipe
