// TorchScript export: folds adapters into the base weights, builds a torch::jit::Module that
// mirrors the model (define() with TorchScript source), saves it, reloads it and checks its
// outputs against the eager model.
#pragma once
#include <torch/torch.h>

#include <string>

#include "models/model.h"

namespace tunekit {

struct ExportResult {
  std::string path;         // the TorchScript model
  std::string sample_path;  // example input + eager output, as a TorchScript module with two buffers
  double max_abs_diff = 0;  // reloaded TorchScript vs eager, on the sample batch
  int64_t parameters = 0;
};

inline constexpr double kExportTolerance = 1e-5;  // times max(1, the largest |output|)

// Throws tunekit::Error when the reloaded module differs from eager by more than kExportTolerance.
ExportResult export_torchscript(models::Model& model, const torch::Tensor& sample_input, const std::string& out_path);

}  // namespace tunekit
