#include "src/export/merge.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>

#include "adapters/attach.h"
#include "data/dataset.h"
#include "models/hf/hf_model.h"
#include "src/from_recipe/adapters.h"
#include "src/from_recipe/model.h"
#include "src/hf/save.h"
#include "src/hf/scratch.h"
#include "src/from_recipe/data.h"
#include "src/io/adapter_file.h"
#include "src/io/checkpoint.h"
#include "src/train/setup.h"
#include "util/error.h"
#include "util/file.h"

namespace fs = std::filesystem;

namespace tunekit {

namespace {
void check_foldable(AdapterKind kind, const std::string& src) {
  if (kind == AdapterKind::PromptExpert || kind == AdapterKind::Prefix)
    throw Error(fmt::format("merge: {} uses {}, which cannot fold into the base weights; `tunekit export` writes them "
                            "as modules",
                            src,
                            kind == AdapterKind::Prefix ? "prefixes (extra keys and values)"
                                                        : "prompt experts (an input-dependent gate)"));
}
}  // namespace

MergeResult merge_run(const std::string& run_dir, const std::string& checkpoint, std::string out_dir) {
  if (is_hf_dir(run_dir))
    throw Error(fmt::format("merge: {} is a Hugging Face directory, not a run: use --format hf (with --adapter DIR)",
                            run_dir));
  LoadedRun run = load_run(run_dir, checkpoint);
  auto& adapted = *run.run.model;
  check_foldable(run.recipe.adapter.kind, run_dir);
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
    write_file_atomic((fs::path(out_dir) / "tokenizer.model").string(), read_file(tokenizer.string(), int64_t(1) << 31));
  io::TrainState state = io::load_train_state(run.checkpoint_dir);
  io::save_checkpoint((fs::path(out_dir) / "checkpoints" / "best").string(), *plain, nullptr, state);
  return r;
}

bool is_hf_dir(const std::string& path) {
  return fs::exists(fs::path(path) / "config.json") && !fs::exists(fs::path(path) / "recipe.yaml");
}

SourceModel load_source(const std::string& src, const std::string& checkpoint, const std::string& adapter_dir) {
  SourceModel s;
  if (is_hf_dir(src)) {
    hf::HfLoaded loaded = hf::load_hf(src, s.hf_options);
    s.hf = loaded.config;
    s.model = loaded.model;
  } else {
    LoadedRun run = load_run(src, checkpoint);
    s.model = run.run.model;
    s.checkpoint_dir = run.checkpoint_dir;
    s.adapted = run.run.report.adapted;
    s.adapter_kind = run.recipe.adapter.kind;
    if (run.recipe.model.is_hf()) {
      s.hf_options = from_recipe::hf_load_options(run.recipe.model);
      s.hf = hf::read_hf_config(run.recipe.model.from_hf, s.hf_options.max_seq_len());
    } else if (!run.recipe.model.from_config.empty()) {  // pre-trained from a config.json: no files to copy
      s.hf_options = from_recipe::hf_load_options(run.recipe.model);
      s.hf = hf::read_config_source(run.recipe.model.from_config, s.hf_options.max_seq_len());
      s.hf->dir.clear();
    }
    s.recipe = std::move(run.recipe);
  }
  if (!adapter_dir.empty()) {
    if (!s.adapted.empty())
      throw Error(fmt::format("--adapter: {} already carries a {} adapter (merge it first, or give the base model)", src,
                              to_string(s.adapter_kind)));
    AdapterConfig cfg = io::peft_adapter_config(adapter_dir);
    auto report = adapters::attach_adapters(*s.model, from_recipe::attach_options(cfg));
    io::load_adapter(adapter_dir, *s.model, cfg);
    s.adapted = report.adapted;
    s.adapter_kind = cfg.kind;
  }
  s.model->eval();  // an attached adapter carries PEFT's lora_dropout
  return s;
}

torch::Tensor synthetic_input(const SourceModel& s, int64_t batch) {
  auto* m = dynamic_cast<models::hf::HfModel*>(s.model.get());
  if (!m || !s.hf) throw Error("synthetic_input: not a Hugging Face model");
  auto gen = data::seeded_generator(1234);
  if (models::hf::is_causal_lm(m->family())) {
    const int64_t vocab = m->family() == models::hf::Family::Gpt2 ? s.hf->gpt2.vocab_size() : s.hf->llama.vocab_size();
    return torch::randint(vocab, {batch, std::min<int64_t>(16, m->max_seq_len())}, gen, torch::kLong);
  }
  const auto& v = s.hf->vit;
  return torch::randn({batch, v.num_channels(), v.image_size(), v.image_size()}, gen);
}

MergeResult merge_to_hf(const std::string& src, const std::string& checkpoint, const std::string& adapter_dir,
                        const std::string& out_dir, std::optional<torch::ScalarType> dtype) {
  if (out_dir.empty()) throw Error("merge --format hf: give the output directory with --out DIR");
  SourceModel s = load_source(src, checkpoint, adapter_dir);
  auto* hf_model = dynamic_cast<models::hf::HfModel*>(s.model.get());
  if (!s.hf || !hf_model)
    throw Error(fmt::format("merge --format hf: {} was not trained from a Hugging Face model (model.from_hf or "
                            "model.from_config); "
                            "`tunekit merge {}` writes a run directory",
                            src, src));
  check_foldable(s.adapter_kind, src);
  // Check inputs: the run's own test data, or token ids / images of the model's size.
  torch::Tensor sample;
  if (s.recipe) {
    auto splits = load_data(*s.recipe, src);
    const auto& pool = splits.test.size() > 0 ? splits.test : splits.val;
    sample = pool.inputs.slice(0, 0, std::min<int64_t>(4, pool.size()));
  } else {
    sample = synthetic_input(s, 2);
  }
  torch::NoGradGuard no_grad;
  s.model->eval();
  torch::Tensor adapted = s.model->forward(sample);
  adapters::merge_adapters(*s.model);
  // A model.from_config run's directory gets its tokenizer (the run's) and the special ids.
  std::optional<data::Tokenizer> tok;
  if (s.recipe && !s.recipe->model.from_config.empty()) {
    tok = from_recipe::run_tokenizer(*s.recipe, src);
    hf::set_special_token_ids(*s.hf, *tok);
  }
  hf::HfSaveReport saved = hf::save_hf_model(*hf_model, *s.hf, out_dir, dtype);
  if (tok)
    for (const auto& name : hf::write_hf_tokenizer_files(*tok, out_dir, s.hf_options.max_seq_len()))
      saved.copied.push_back(name);
  MergeResult r;
  r.out_dir = saved.dir;
  r.tensors = saved.tensors;
  r.bytes = saved.bytes;
  r.dtype = hf::hf_dtype_name(saved.dtype);
  r.copied = saved.copied;
  r.adapted = static_cast<int64_t>(s.adapted.size());
  // Reload the written directory as a user would, built the way the source was.
  hf::HfLoadOptions reload = s.hf_options;
  reload.exclude({});
  reload.build().num_labels(0);  // the written config.json has the classes the model has
  auto again = hf::load_hf_model(out_dir, reload);
  again->eval();
  r.max_abs_diff = (again->forward(sample) - adapted).abs().max().item<double>();
  const double scale = std::max(1.0, adapted.abs().max().item<double>());
  if (saved.dtype == torch::kFloat && !(r.max_abs_diff <= 1e-4 * scale))
    throw Error(fmt::format("merge --format hf: {} reloaded differs from the adapted model by {:.3g}", out_dir,
                            r.max_abs_diff));
  return r;
}

}  // namespace tunekit
