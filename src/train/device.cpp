#include "src/train/device.h"

#include <fmt/format.h>

#include "util/error.h"

namespace tunekit {

CudaPresence CudaPresence::probe() {
  CudaPresence p;
  p.available = torch::cuda::is_available();
  p.devices = p.available ? int64_t(torch::cuda::device_count()) : 0;
  return p;
}

DeviceChoice resolve_device(const DeviceConfig& config, const std::string& source, const CudaPresence& cuda) {
  const std::string where = config.where.empty() ? source : config.where;
  switch (config.kind) {
    case DeviceKind::Cpu:
      return {torch::kCPU, "device: cpu"};
    case DeviceKind::Auto:
      if (!cuda.available) return {torch::kCPU, "device: cpu (auto: this LibTorch has no CUDA)"};
      return {torch::kCPU, fmt::format("device: cpu (auto: this LibTorch sees {} CUDA device(s), but tunekit's training "
                                       "path has not been run on a GPU yet; see README, Devices)",
                                       cuda.devices)};
    case DeviceKind::Cuda:
      break;
  }
  const std::string asked = config.text();
  if (!cuda.available)
    throw Error(fmt::format("{}: device: {}: this LibTorch was built without CUDA (Debian's libtorch-dev is CPU-only); "
                            "build tunekit against a CUDA LibTorch (cmake -DTorch_DIR=..., README: Devices) or set "
                            "device: cpu",
                            where, asked));
  if (config.index >= cuda.devices)
    throw Error(fmt::format("{}: device: {}: this machine has {} CUDA device(s) (cuda:0..cuda:{})", where, asked,
                            cuda.devices, cuda.devices - 1));
  throw Error(fmt::format("{}: device: {}: tunekit trains on the CPU only so far (its training path has not been run "
                          "on a GPU; README: Devices); set device: cpu or auto",
                          where, asked));
}

}  // namespace tunekit
