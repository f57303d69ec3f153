#include "src/export/export.h"

#include <fmt/format.h>

#include <torch/csrc/jit/serialization/import.h>

#include <filesystem>
#include <sstream>

#include "util/error.h"
#include "util/file.h"

namespace fs = std::filesystem;

namespace tunekit {

namespace {
// A TorchScript module serialised in memory, then written through an AtomicFile (every write, the
// fsync and the close checked): a full disk is one error naming the file, never a torn model.pt.
void save_script(const torch::jit::Module& module, const std::string& path) {
  std::ostringstream bytes;
  module.save(bytes);
  if (!bytes) throw Error(fmt::format("{}: cannot serialise the TorchScript module", path));
  write_file_atomic(path, bytes.str());
}
}  // namespace

ExportResult export_torchscript(models::Model& model, const torch::Tensor& sample_input, const std::string& out_path) {
  torch::NoGradGuard no_grad;
  bool was_training = model.is_training();
  model.eval();
  torch::Tensor eager = model.forward(sample_input);
  model.train(was_training);

  models::ScriptUnit unit;
  torch::jit::Module script = model.to_script(unit);
  script.eval();

  fs::path out(out_path);
  if (out.has_parent_path()) fs::create_directories(out.parent_path());
  ExportResult r;
  r.path = out.string();
  save_script(script, r.path);

  // Reload from disk, as a user would, and compare with the eager model.
  torch::jit::Module reloaded = torch::jit::load(r.path);
  reloaded.eval();
  torch::Tensor scripted = reloaded.forward({sample_input}).toTensor();
  if (scripted.sizes() != eager.sizes())
    throw Error(fmt::format("export: {}: TorchScript output shape {} differs from eager {}", r.path,
                            c10::str(scripted.sizes()), c10::str(eager.sizes())));
  r.max_abs_diff = (scripted - eager).abs().max().item<double>();
  for (const auto& p : reloaded.parameters()) r.parameters += p.numel();
  // Relative to the outputs' size: a large model's logits run into the tens.
  const double tolerance = kExportTolerance * std::max(1.0, eager.abs().max().item<double>());
  if (!(r.max_abs_diff <= tolerance))
    throw Error(fmt::format("export: {}: TorchScript output differs from eager by {:.3g} (> {:.0e})", r.path,
                            r.max_abs_diff, tolerance));

  // An example input and the eager output beside the model, for checks in other runtimes
  // (Python: m = torch.jit.load(path); m.input, m.output).
  auto sample = unit.module("Sample");
  sample.register_buffer("input", sample_input.detach().clone());
  sample.register_buffer("output", eager.detach().clone());
  r.sample_path = (out.parent_path() / (out.stem().string() + ".sample.pt")).string();
  save_script(sample, r.sample_path);
  return r;
}

}  // namespace tunekit
