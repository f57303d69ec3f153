// The recipe's `device:` resolved on this machine, when training starts.
//
// tunekit trains on the CPU. `auto` picks it (and says why, also when this LibTorch sees a GPU);
// `cuda` / `cuda:N` is refused with one line naming the recipe's `device:` value and what to do:
// on a LibTorch without CUDA (Debian's libtorch-dev), build against a CUDA LibTorch (README,
// "Building against another LibTorch"); with one, the training path has not been run on a GPU yet
// (issue 18), so it is refused rather than tried.
#pragma once
#include <torch/torch.h>

#include <string>

#include "src/recipe/recipe.h"

namespace tunekit {

// What this LibTorch can see: CUDA built in and the number of devices it reports.
struct CudaPresence {
  bool available = false;  // torch::cuda::is_available()
  int64_t devices = 0;     // torch::cuda::device_count()
  static CudaPresence probe();
};

struct DeviceChoice {
  torch::Device device = torch::kCPU;
  std::string line;  // "device: cpu (auto: this LibTorch has no CUDA)"
};

// Resolves `config` for the recipe `source` given what CUDA this machine has (probe() in training;
// tests pass their own). Throws Error "<where>: device: ..." when the device cannot be used.
DeviceChoice resolve_device(const DeviceConfig& config, const std::string& source, const CudaPresence& cuda);

}  // namespace tunekit
