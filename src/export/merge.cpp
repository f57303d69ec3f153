#include "src/export/merge.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>

#include "adapters/attach.h"
#include "src/from_recipe/model.h"
#include "src/io/checkpoint.h"
#include "src/train/setup.h"
#include "util/error.h"
#include "util/file.h"

namespace fs = std::filesystem;

namespace tunekit {

MergeResult merge_run(const std::string& run_dir, const std::string& checkpoint, std::string out_dir) {
  LoadedRun run = load_run(run_dir, checkpoint);
  auto& adapted = *run.run.model;
  if (run.recipe.adapter.kind == AdapterKind::PromptExpert || run.recipe.adapter.kind == AdapterKind::Prefix)
    throw Error(fmt::format("merge: {} uses {}, which cannot fold into the base weights; `tunekit export` writes them "
                            "as modules",
                            run_dir,
                            run.recipe.adapter.kind == AdapterKind::Prefix ? "prefixes (extra keys and values)"
                                                                           : "prompt experts (an input-dependent gate)"));
  if (run.run.report.adapted.empty())
    throw Error(fmt::format("merge: {} has no low-rank adapter (adapter.kind {}); its checkpoint is already a full one",
                            run_dir, to_string(run.recipe.adapter.kind)));
  if (out_dir.empty()) {
    std::string base = fs::path(run_dir).lexically_normal().string();
    while (!base.empty() && base.back() == '/') base.pop_back();
    out_dir = base + "_merged";
  }
  if (fs::exists(out_dir) && !fs::exists(fs::path(out_dir) / "recipe.yaml"))
    throw Error(fmt::format("merge: {} exists and is not a run directory; choose another --out", out_dir));

  // The plain model, with every weight taken from the adapted one after merging.
  auto plain = from_recipe::build_model(run.recipe.model);
  adapted.eval();
  plain->eval();
  adapters::merge_adapters(adapted);
  MergeResult r;
  r.out_dir = out_dir;
  r.adapted = static_cast<int64_t>(run.run.report.adapted.size());
  {
    torch::NoGradGuard no_grad;
    auto src_params = adapted.named_parameters();
    auto src_buffers = adapted.named_buffers();
    for (auto& p : plain->named_parameters()) {
      p.value().copy_(src_params[p.key()]);
      ++r.tensors;
    }
    for (auto& b : plain->named_buffers()) {
      b.value().copy_(src_buffers[b.key()]);
      ++r.tensors;
    }
  }
  adapters::unmerge_adapters(adapted);

  // Check: the merged model computes what the adapted one does.
  auto splits = load_data(run.recipe, run_dir);
  auto sample = splits.test.inputs.slice(0, 0, std::min<int64_t>(16, splits.test.size()));
  {
    torch::NoGradGuard no_grad;
    r.max_abs_diff = (plain->forward(sample) - adapted.forward(sample)).abs().max().item<double>();
  }
  if (!(r.max_abs_diff <= 1e-4))
    throw Error(fmt::format("merge: merged model differs from the adapted one by {:.3g} (> 1e-4)", r.max_abs_diff));

  // The recipe of the merged run: same model and data, no adapter, no init_from.
  YAML::Node root = YAML::Load(run.recipe.resolved_yaml);
  root.remove("adapter");
  root.remove("init_from");
  root.remove("sweep");
  root["output"]["dir"] = fs::path(out_dir).parent_path().string().empty() ? "." : fs::path(out_dir).parent_path().string();
  root["output"]["name"] = fs::path(out_dir).filename().string();
  YAML::Emitter emit;
  emit << root;
  fs::create_directories(out_dir);
  write_file_atomic((fs::path(out_dir) / "recipe.yaml").string(),
                        fmt::format("# merged by `tunekit merge {}` from its '{}' checkpoint\n{}\n", run_dir,
                                    checkpoint, emit.c_str()));
  fs::path tokenizer = fs::path(run_dir) / "tokenizer.model";  // text runs: ids mean the same in the merged run
  if (fs::exists(tokenizer))
    fs::copy_file(tokenizer, fs::path(out_dir) / "tokenizer.model", fs::copy_options::overwrite_existing);
  io::TrainState state = io::load_train_state(run.checkpoint_dir);
  io::save_checkpoint((fs::path(out_dir) / "checkpoints" / "best").string(), *plain, nullptr, state);
  return r;
}

}  // namespace tunekit
