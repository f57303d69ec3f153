// `tunekit merge`: folds adapters into base weights. As a run directory (the default): the
// result is a run of its own (recipe without an adapter, checkpoints/best with plain weights), so
// eval, export and init_from.run treat it like any fully trained run. As a Hugging Face
// directory (--format hf): config.json + model.safetensors in the family's own names and layout,
// that transformers and tunekit load like the original.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/model.h"
#include "src/hf/load.h"
#include "src/recipe/recipe.h"

namespace tunekit {

struct MergeResult {
  std::string out_dir;
  int64_t tensors = 0;      // tensors written
  int64_t adapted = 0;      // layers whose adapter was folded in
  double max_abs_diff = 0;  // merged model vs the adapted model, on test images / sequences
  std::string dtype;        // --format hf: the storage dtype written
  uint64_t bytes = 0;       // --format hf: tensor bytes written
  std::vector<std::string> copied;  // --format hf: tokenizer / processor files copied from the source
};

// `out_dir` empty = RUN_DIR + "_merged" beside the run.
MergeResult merge_run(const std::string& run_dir, const std::string& checkpoint, std::string out_dir);

// A model that export and merge take: a run directory's (its checkpoint) or a Hugging Face
// directory's (config.json + safetensors), with a PEFT adapter directory attached when given.
struct SourceModel {
  std::shared_ptr<models::Model> model;
  std::optional<Recipe> recipe;        // a run's recipe
  std::string checkpoint_dir;          // a run's checkpoint read
  std::optional<hf::HfConfig> hf;      // the Hugging Face config the model came from (HF dir or from_hf run)
  hf::HfLoadOptions hf_options;        // how it was built (a merged copy is reloaded the same way)
  std::vector<std::string> adapted;    // modules that carry an adapter
  AdapterKind adapter_kind = AdapterKind::None;
};
// True when `path` is a Hugging Face model directory (config.json, no recipe.yaml).
bool is_hf_dir(const std::string& path);
// `adapter_dir` (may be empty): a PEFT LoRA/DoRA adapter directory (adapter_config.json +
// adapter_model.safetensors, from PEFT or tunekit) attached to the model before anything else.
SourceModel load_source(const std::string& src, const std::string& checkpoint, const std::string& adapter_dir);
// `batch` inputs for checks when there is no data: token ids (seeded, at most 16 tokens) for a
// causal LM, images of the model's size for a ViT.
torch::Tensor synthetic_input(const SourceModel& source, int64_t batch);

// `tunekit merge SRC [--adapter DIR] --format hf --out DIR [--dtype ...]`: merges and writes a
// Hugging Face directory (src/hf/save.h), then reloads it and checks it against the adapted model.
MergeResult merge_to_hf(const std::string& src, const std::string& checkpoint, const std::string& adapter_dir,
                        const std::string& out_dir, std::optional<torch::ScalarType> dtype);

}  // namespace tunekit
