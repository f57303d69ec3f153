// safetensors (Hugging Face's tensor file format): an 8-byte little-endian header length, a
// JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}} and the raw
// little-endian tensor bytes. The reader checks every size and offset against the file before
// it touches tensor data, so a truncated or malformed file is an error, never a bad read.
#pragma once
#include <torch/torch.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace tunekit::io {

struct SafetensorsFile {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;  // in file-offset order
  std::map<std::string, std::string> metadata;
  const torch::Tensor* find(const std::string& name) const;
};

// Writes `tensors` (CPU, any supported dtype) atomically (temp file + rename).
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

SafetensorsFile read_safetensors(const std::string& path);
// Same, from bytes already in memory (`source` names them in errors).
SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& source);

}  // namespace tunekit::io
