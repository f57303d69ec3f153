// Writing a tunekit model of a Hugging Face family back as a Hugging Face directory that
// transformers (and tunekit) load like the original: config.json (the source's, with the storage
// dtype and, for ViT, the classes updated), model.safetensors in the family's own names and
// layout (GPT-2's Conv1D weights [in, out], a tied head left out), streamed one tensor at a time
// in the chosen dtype, and the source's tokenizer / processor files copied.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "models/hf/hf_model.h"
#include "src/hf/config.h"

namespace tunekit::hf {

struct HfSaveReport {
  std::string dir;
  std::string weights;  // the model.safetensors written
  int64_t tensors = 0;
  uint64_t bytes = 0;  // tensor bytes written
  torch::ScalarType dtype = torch::kFloat;
  std::vector<std::string> copied;  // the source's tokenizer / processor files copied over
};

// The files save_hf_model copies from the source directory when they exist.
const std::vector<std::string>& hf_side_files();

// Writes `model` (built from `source`; adapters already merged into the weights, see
// adapters::merge_adapters) into `out_dir` (created; must not be the source directory). The
// weights are stored as `dtype` (float32, float16 or bfloat16; the source's torch_dtype when
// absent). Keys follow the source's class: GPT2Model files stay without `transformer.`;
// headless Llama-family and ViT sources are written as their *ForCausalLM /
// ViTForImageClassification class (the model tunekit trained has the head). A ViT classifier of
// another size than the source's gets num_labels / id2label / label2id of that size.
HfSaveReport save_hf_model(models::hf::HfModel& model, const HfConfig& source, const std::string& out_dir,
                           std::optional<torch::ScalarType> dtype = std::nullopt);

}  // namespace tunekit::hf
