#include "src/train/trainer.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "data/hf_tokenizer.h"
#include "data/text_data.h"
#include "models/precision.h"
#include "src/from_recipe/data.h"
#include "src/dist/grad_sync.h"
#include "src/dist/process_group.h"
#include "src/eval/evaluator.h"
#include "src/io/adapter_file.h"
#include "src/io/checkpoint.h"
#include "src/train/chat_objective.h"
#include "src/train/device.h"
#include "src/train/fused_adamw.h"
#include "src/train/objective.h"
#include "src/train/setup.h"
#include "util/error.h"
#include "util/file.h"
#include "util/memory.h"
#include "util/progress.h"

namespace fs = std::filesystem;

namespace tunekit {

double scheduled_lr(const ScheduleConfig& s, double base_lr, int64_t step, int64_t total) {
  if (s.warmup_steps > 0 && step < s.warmup_steps) return base_lr * double(step + 1) / double(s.warmup_steps);
  if (s.kind == ScheduleKind::Constant) return base_lr;
  int64_t span = std::max<int64_t>(1, total - s.warmup_steps);
  double t = std::min(1.0, double(step - s.warmup_steps) / double(span));
  double floor = base_lr * s.min_lr_ratio;
  if (s.kind == ScheduleKind::Linear) return floor + (base_lr - floor) * (1.0 - t);
  return floor + (base_lr - floor) * 0.5 * (1.0 + std::cos(M_PI * t));
}

namespace {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerConfig& c, std::vector<torch::Tensor> params) {
  if (params.empty()) throw Error("nothing to train: every parameter is frozen (check adapter.targets / modules_to_save)");
  if (c.name == OptimizerKind::SGD)
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(c.lr).momentum(c.momentum).weight_decay(c.weight_decay));
  const auto adamw =
      torch::optim::AdamWOptions(c.lr).betas({c.betas[0], c.betas[1]}).eps(c.eps).weight_decay(c.weight_decay);
  if (c.fused) return std::make_unique<FusedAdamW>(params, adamw);
  return std::make_unique<torch::optim::AdamW>(params, adamw);
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups()) group.options().set_lr(lr);
}

// --- metrics.jsonl ---

// A line's integer field `key` (-1 when absent or not an integer) and its "type" ("" when none).
int64_t int_field(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : -1;
}
double number_field(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
}
std::string type_of(const nlohmann::json& j) {
  auto it = j.find("type");
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// metrics.jsonl's lines, parsed; a line that is not a JSON object is skipped. Empty when absent.
std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::vector<nlohmann::json> lines;
  if (!fs::exists(path)) return lines;
  std::istringstream in(read_file(path, int64_t(1) << 32));
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object()) lines.push_back(std::move(j));
  }
  return lines;
}

// Keeps only the metrics lines at or before `step`, without a summary (a resumed run rewrites
// what follows and ends with a summary of its own).
void truncate_metrics(const std::string& path, const std::vector<nlohmann::json>& lines, int64_t step) {
  std::string kept;
  for (const auto& j : lines)
    if (type_of(j) != "summary" && int_field(j, "step") <= step) kept += j.dump() + "\n";
  write_file_atomic(path, kept);
}

// metrics.jsonl, appended line by line (each line whole and on disk, or an Error naming the
// file). The file is created by the first line; when that line cannot be written the file it
// created is removed, so a run that could not log leaves no empty metrics.jsonl behind.
class MetricsLog {
 public:
  explicit MetricsLog(std::string path) : path_(std::move(path)) {}
  void write(const nlohmann::json& j) {
    if (!out_) {
      created_ = !fs::exists(path_);
      out_ = std::make_unique<AppendFile>(path_);
    }
    try {
      out_->append(j.dump() + "\n");
    } catch (const Error&) {
      if (created_ && !wrote_) {
        out_.reset();
        std::error_code ec;
        fs::remove(path_, ec);
      }
      throw;
    }
    wrote_ = true;
  }

 private:
  std::string path_;
  std::unique_ptr<AppendFile> out_;
  bool created_ = false, wrote_ = false;
};

// --- the run's state, shared by the phases below ---

// What set-up builds and each phase of training reads and advances.
struct Run {
  Run(const Recipe& r, const TrainOptions& o)
      : recipe(r),
        opts(o),
        run_dir(r.run_dir()),
        ckpt_dir(run_dir + "/checkpoints"),
        metrics_path(run_dir + "/metrics.jsonl"),
        last_dir(ckpt_dir + "/last"),
        best_dir(ckpt_dir + "/best"),
        objective(make_objective(r)) {}

  const Recipe& recipe;
  const TrainOptions& opts;
  const std::string run_dir, ckpt_dir, metrics_path, last_dir, best_dir;
  const std::unique_ptr<Objective> objective;
  RunModel rm;
  data::ImageSplits splits;
  int64_t seq_len = 1;  // tokens per sample (1 for images)
  std::vector<torch::Tensor> params;  // the trainable ones
  std::vector<std::string> param_names;  // their names, in the same order
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  io::TrainState state;
  std::unique_ptr<MetricsLog> metrics;
  std::unique_ptr<Progress> progress;
  int64_t batch_size = 0, accum = 1, batches_per_epoch = 0, total_steps = 0;
  // Files a checkpoint carries beside the weights (adapter file, tokenizer); empty when none.
  std::function<void(const std::string&)> write_extra;
  double train_seconds = 0;  // over the whole run, resumed calls included
  int64_t samples_this_call = 0;
  double seconds_this_call = 0;
  int64_t last_saved_step = -1;   // the step of checkpoints/last as it is on disk (-1: none)
  bool finished_before = false;   // --resume of a run that had finished
  models::ComputeChoice compute;  // train.compute_dtype, resolved (models/precision.h)
  std::string precision_line;     // what set-up chose for compute, frozen storage and checkpointing
  std::string device_line;        // recipe `device:` as resolved ("device: cpu (auto: ...)")
  nlohmann::json previous_summary;  // its summary line
  TrainResult result;
  // Data parallel (WORLD_SIZE > 1): this process's rank, the group and the gradient sync. Rank 0
  // alone writes the run directory; every rank takes its slice of each global batch.
  int rank = 0, world = 1;
  dist::ProcessGroup* group = nullptr;
  std::unique_ptr<dist::GradSync> sync;
  bool writer() const { return rank == 0; }

  models::Model& model() { return *rm.model; }
  void say(const std::string& s) const {
    if (!opts.quiet) std::fprintf(stderr, "%s\n", s.c_str());
  }
};

// --- divergence: stopped before anything non-finite is written ---

// What most likely made the run diverge, and what to change.
std::string divergence_hint(const Recipe& r) {
  if (r.train.clip_grad_norm > 0)
    return fmt::format("lower optimizer.lr (now {}) or check the data (clipping at {} is already on)", r.optimizer.lr,
                       r.train.clip_grad_norm);
  return fmt::format("set train.clip_grad_norm (e.g. 1.0) or lower optimizer.lr (now {})", r.optimizer.lr);
}

// A non-finite number as the messages write it ("NaN", "inf", "-inf").
std::string number_text(double v) { return std::isnan(v) ? "NaN" : fmt::format("{}", v); }

// Stops the run: one line naming the step, what was non-finite, the likely fix (`hint`, else
// divergence_hint) and the last checkpoint, which stays as it was.
[[noreturn]] void diverged(const Run& run, int64_t step, const std::string& what, const std::string& hint = "") {
  const std::string kept =
      run.last_saved_step >= 0 ? fmt::format("; {} (step {}) is as it was", run.last_dir, run.last_saved_step) : "";
  throw Error(fmt::format("training diverged at step {}: {}; {}. Nothing non-finite was written{}", step, what,
                          hint.empty() ? divergence_hint(run.recipe) : hint, kept));
}

// optimizer.step(), whose LibTorch overflow error (a learning rate beyond float32 once the
// optimizer scales it: std::runtime_error from c10::checked_convert) stops the run like any
// divergence; other errors pass through.
void optimizer_step(Run& run) {
  try {
    run.optimizer->step();
  } catch (const std::runtime_error& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    if (what.find("overflow") == std::string::npos) throw;
    diverged(run, run.state.step + 1, fmt::format("the optimizer step failed ({})", what),
             fmt::format("lower optimizer.lr (now {}): the step it makes overflows float32", run.recipe.optimizer.lr));
  }
}

// Stops the run when a trainable parameter holds NaN or inf (`when`: "after the optimizer step").
void check_parameters(const Run& run, const std::string& when) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> finite;
  finite.reserve(run.params.size());
  for (const auto& p : run.params) finite.push_back(torch::isfinite(p).all());
  if (finite.empty() || torch::stack(finite).all().item<bool>()) return;
  for (size_t i = 0; i < finite.size(); ++i)
    if (!finite[i].item<bool>())
      diverged(run, run.state.step,
               fmt::format("parameter {} holds {} {}", run.param_names[i],
                           torch::isnan(run.params[i]).any().item<bool>() ? "NaN" : "inf", when));
}

// The global L2 norm of the gradients, clipped to train.clip_grad_norm when that is on (the norm
// returned is the one before clipping; under FusedAdamW the factor is applied inside its step).
double gradient_norm(Run& run) {
  const double clip = run.recipe.train.clip_grad_norm;
  if (clip > 0) return clip_grad_norm(run.params, clip, run.optimizer.get());  // src/train/fused_adamw.h
  const torch::Tensor norm = global_grad_norm(run.params);
  return norm.defined() ? norm.item<double>() : 0.0;
}

// Data parallel: every rank's RNG state (the default CPU generator's, uint8), [r] for rank r, through
// one allreduce in which each rank fills its own row. Every rank must call it.
std::vector<torch::Tensor> gather_rng_states(Run& run) {
  const torch::Tensor mine = at::detail::getDefaultCPUGenerator().get_state();
  auto all = torch::zeros({run.world, mine.numel()}, torch::kLong);
  all[run.rank].copy_(mine.to(torch::kLong));
  run.group->allreduce_sum(all, fmt::format("gathering the ranks' RNG states (step {})", run.state.step));
  std::vector<torch::Tensor> states;
  for (int r = 0; r < run.world; ++r) states.push_back(all[r].to(torch::kUInt8).contiguous());
  return states;
}

// Writes a checkpoint of the model (with the optimizer for `last`, to resume from), once its
// trainable parameters are known to be finite.
void save(Run& run, const std::string& dir, torch::optim::Optimizer* with_optimizer) {
  // Data parallel: a checkpoint to resume from holds every rank's dropout stream (a collective).
  const std::vector<torch::Tensor> rngs =
      run.group && with_optimizer ? gather_rng_states(run) : std::vector<torch::Tensor>{};
  if (!run.writer()) return;  // data parallel: every rank holds the same model; rank 0 writes it
  check_parameters(run, "before writing " + dir);
  run.state.train_seconds = run.train_seconds;
  std::function<void(const std::string&)> extra = run.write_extra;
  if (!rngs.empty())
    extra = [&run, &rngs](const std::string& tmp) {
      if (run.write_extra) run.write_extra(tmp);
      io::save_rank_rngs(tmp, rngs);
    };
  io::save_checkpoint(dir, run.model(), with_optimizer, run.state, extra,
                      /*trainable_only=*/run.recipe.model.is_hf());
  if (dir == run.last_dir) run.last_saved_step = run.state.step;
}
void checkpoint_last(Run& run) { save(run, run.last_dir, run.optimizer.get()); }

// --- set-up and resume ---

// "step N of M[, finished]" for the run `run`'s directory already holds (a checkpoint or a
// metrics line), or nullopt when it holds none.
std::optional<std::string> previous_run(const Run& run) {
  const auto lines = read_metrics(run.metrics_path);
  if (lines.empty() && !io::checkpoint_exists(run.last_dir) && !io::checkpoint_exists(run.best_dir)) return std::nullopt;
  int64_t step = -1, total = -1;
  bool finished = false;
  for (const auto& j : lines) {
    step = std::max(step, int_field(j, "step"));
    if (type_of(j) == "train" && int_field(j, "total_steps") > 0) total = int_field(j, "total_steps");
    finished = finished || type_of(j) == "summary";
  }
  if (io::checkpoint_exists(run.last_dir)) {
    try {  // where --resume would continue from
      step = io::load_train_state(run.last_dir).step;
    } catch (const std::exception&) {  // an unreadable state.json: the refusal names no step
    }
  }
  std::string at = step >= 0 ? fmt::format("step {}", step) : "a checkpoint";
  if (step >= 0 && total > 0) at += fmt::format(" of {}", total);
  return finished ? at + ", finished" : at;
}

// Removes what a previous run left in the directory: checkpoints, metrics, evaluations, export.
void clear_previous_run(const Run& run) {
  std::vector<fs::path> doomed{run.ckpt_dir, run.metrics_path, fs::path(run.run_dir) / "export",
                               fs::path(run.run_dir) / "result.json"};
  for (const auto& e : fs::directory_iterator(run.run_dir))
    if (e.path().filename().string().rfind("eval_", 0) == 0 && e.path().extension() == ".json") doomed.push_back(e.path());
  for (const auto& p : doomed) {
    std::error_code ec;
    fs::remove_all(p, ec);
    if (ec) throw Error(fmt::format("{}: cannot remove ({})", p.string(), ec.message()));
  }
  std::error_code ec;
  fs::create_directories(run.ckpt_dir, ec);
  if (ec) throw Error(fmt::format("{}: cannot create directory ({})", run.ckpt_dir, ec.message()));
}

// Decides between resuming and starting over, and writes the run's recipe.yaml. True to resume.
// A directory that already holds a run is refused unless the run is resumed or overwritten.
bool open_run_dir(const Run& run) {
  bool resuming = run.opts.resume && io::checkpoint_exists(run.last_dir);
  if (run.opts.resume && !resuming) run.say(fmt::format("no checkpoint in {} to resume from; starting fresh", run.last_dir));
  if (!run.opts.resume) {
    if (auto previous = previous_run(run)) {
      if (!run.opts.overwrite)
        throw Error(fmt::format("{} already holds a run ({}); use --resume to continue it, --overwrite to start over, "
                                "or another output.name",
                                run.run_dir, *previous));
      run.say(fmt::format("--overwrite: starting over in {} (it held a run at {})", run.run_dir, *previous));
    }
  }
  std::error_code ec;
  fs::create_directories(run.ckpt_dir, ec);
  if (ec) throw Error(fmt::format("{}: cannot create directory ({})", run.ckpt_dir, ec.message()));
  write_file_atomic(run.run_dir + "/recipe.yaml", run.recipe.resolved_yaml);
  return resuming;
}

// The run's data through the one path every verb reads it by (load_data). A text run first makes
// its tokenizer: a fresh run anew (the recipe's tokenizer settings may have changed), a resumed
// one keeps the ids its checkpoint was trained with.
data::ImageSplits load_training_data(const Run& run, bool resuming, std::string* tokenizer_message) {
  if (!run.recipe.data.is_text()) return load_data(run.recipe, run.run_dir);
  if (!resuming) fs::remove(fs::path(run.run_dir) / data::kTokenizerFile);
  const data::Tokenizer tok = from_recipe::prepare_tokenizer(run.recipe, run.run_dir, tokenizer_message);
  if (auto* response = dynamic_cast<ResponseObjective*>(run.objective.get())) response->set_tokenizer(tok);
  return load_data(run.recipe, run.run_dir, &tok, tokenizer_message);  // the tokenizer just made, not read again
}

// A resumed run's metrics.jsonl: the lines after its checkpoint go (they are written again), and
// so does the summary; a run that had finished keeps its file as it is (see train()).
void continue_metrics(Run& run) {
  const auto lines = read_metrics(run.metrics_path);
  for (const auto& j : lines)
    if (type_of(j) == "summary" && int_field(j, "step") == run.state.step && run.state.step >= run.total_steps) {
      run.finished_before = true;
      run.previous_summary = j;
    }
  if (!run.finished_before && fs::exists(run.metrics_path)) truncate_metrics(run.metrics_path, lines, run.state.step);
}

// Data parallel: rank `rank`'s own RNG stream (dropout, adapter dropout) when the run's does not
// hold one: rank 0 keeps the recipe's seed (a one-rank run is unchanged), the others take a seed
// mixed from the seed, the rank and the step it starts at (splitmix64).
uint64_t rank_stream_seed(uint64_t seed, int rank, int64_t step) {
  uint64_t z = seed ^ (0x9E3779B97F4A7C15ull * (uint64_t(rank) + 1)) ^ (0xBF58476D1CE4E5B9ull * uint64_t(step));
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Data parallel: rank `run.rank`'s RNG from the checkpoint `from`, else (a checkpoint of fewer
// ranks) a fresh stream of its own, which rank 0 announces.
void resume_rank_rng(const Run& run, const io::Checkpoint& from) {
  std::vector<int> fresh;
  for (int r = 1; r < run.world; ++r)
    if (!from.has_rng(r)) fresh.push_back(r);
  if (!fresh.empty())
    run.say(fmt::format("{} holds no RNG stream for rank(s) {}: they start fresh ones (the resumed curve differs "
                        "from an uninterrupted run's when they use dropout)",
                        from.dir(), fmt::join(fresh, ", ")));
  if (!from.load_rng(run.rank)) torch::manual_seed(rank_stream_seed(uint64_t(run.recipe.seed), run.rank, from.state().step));
}

// Restores model, optimizer, RNG and position from the last checkpoint, or clears what a
// previous run left; then opens metrics.jsonl. Data parallel: each rank restores its own RNG
// stream, or (a fresh run) the ranks after 0 seed their own.
void resume_or_start(Run& run, bool resuming) {
  if (resuming) {
    const io::Checkpoint from(run.last_dir);  // read once, verified: weights, optimizer, RNG and state agree
    io::check_train_state(from.state(), run.recipe.train.epochs, run.batches_per_epoch, run.total_steps, from.dir());
    from.load_weights(run.model(), {}, /*strict=*/true, false);
    from.load_optimizer(*run.optimizer);
    if (run.group)
      resume_rank_rng(run, from);
    else
      from.load_rng();
    run.state = from.state();
    run.last_saved_step = run.state.step;
    if (run.writer()) continue_metrics(run);
  } else {
    if (run.writer()) clear_previous_run(run);
    if (run.rank > 0) torch::manual_seed(rank_stream_seed(uint64_t(run.recipe.seed), run.rank, 0));
  }
  if (run.writer()) run.metrics = std::make_unique<MetricsLog>(run.metrics_path);
}

// Low-rank adapters are also written on their own (PEFT layout), and text runs' tokenizer travels
// with each checkpoint.
void set_checkpoint_extras(Run& run) {
  const Recipe& recipe = run.recipe;
  if (!recipe.adapter.saves_adapter_file() && !recipe.data.is_text()) return;
  run.write_extra = [&run](const std::string& dir) {
    const Recipe& recipe = run.recipe;
    if (recipe.adapter.saves_adapter_file())
      io::save_adapter(dir, run.model(), recipe.adapter, run.rm.report.adapted,
                       recipe.model.is_hf() ? recipe.model.base_model_name() : recipe.init_from.run);
    if (recipe.data.is_text()) {  // tokenizer.model and/or a model directory's tokenizer files
      std::vector<std::string> names{data::kTokenizerFile};
      names.insert(names.end(), std::begin(data::kHfTokenizerFiles), std::end(data::kHfTokenizerFiles));
      for (const auto& f : names)
        if (fs::exists(fs::path(run.run_dir) / f))
          fs::copy_file(fs::path(run.run_dir) / f, fs::path(dir) / f, fs::copy_options::overwrite_existing);
    }
  };
}

// train.compute_dtype, model.frozen_dtype and train.activation_checkpointing, applied once the
// model holds its weights (a resumed run's too), and the line that says what was chosen.
void set_up_precision(Run& run) {
  const Recipe& recipe = run.recipe;
  run.compute = models::choose_compute_dtype(recipe.train.compute_dtype);
  std::string line = "precision: compute " + run.compute.why;
  if (run.compute.dtype == torch::kBFloat16 && recipe.threads.torch == 1 && hardware_cores() > 1) {
    // bf16 GEMMs run in oneDNN on LibTorch's own pool, not in OpenBLAS: give that pool the cores.
    const int cores = recipe.threads.blas > 0 ? recipe.threads.blas : hardware_cores();
    torch::set_num_threads(cores);
    line += fmt::format(" (LibTorch threads raised from 1 to {}: bf16 GEMMs run on its pool)", cores);
  }
  models::store_frozen_weights(run.model(), recipe.model.frozen_dtype);  // those the load left float32
  if (recipe.model.frozen_dtype != models::FrozenDtype::Fp32)
    line += fmt::format("; frozen base stored in {} ({:.1f} MiB saved{})", to_string(recipe.model.frozen_dtype),
                        double(models::frozen_bytes_saved(run.model())) / (1 << 20),
                        run.rm.narrowed_at_load > 0 ? ", converted as it was read" : "");
  if (recipe.train.activation_checkpointing) {
    run.model().set_activation_checkpointing(true);
    line += "; activation checkpointing on";
  }
  run.precision_line = line;
}

// The run's opening lines: model, init, tokenizer, adapter, data and step budget, precision,
// resume position.
void announce(const Run& run, const std::string& threads, const std::string& tokenizer_message, bool resuming) {
  const Recipe& recipe = run.recipe;
  const auto& s = run.splits;
  run.say(fmt::format("run {}: {}", run.run_dir, run.rm.model->describe()));
  if (!run.rm.init_message.empty()) run.say("init: " + run.rm.init_message);
  if (!tokenizer_message.empty()) run.say(tokenizer_message);
  run.say(fmt::format("adapter {}: {}", to_string(recipe.adapter.kind), run.rm.report.summary()));
  run.say(fmt::format("data: {} train / {} val / {} test {}, batch {} x accum {}, {} steps; threads: {}",
                      s.train.size(), s.val.size(), s.test.size(),
                      run.objective->describe_samples(s.train, recipe.model.is_text()), run.batch_size, run.accum,
                      run.total_steps, threads));
  run.say(run.device_line + "; " + run.precision_line + "; " + allocator_policy());
  if (resuming)
    run.say(fmt::format("resuming from step {} (epoch {}, batch {})", run.state.step, run.state.epoch + 1,
                        run.state.batch_in_epoch));
}

// Data parallel: the ranks after 0 read the data through the tokenizer rank 0 put in the run
// directory (they never write there).
data::ImageSplits load_rank_data(const Run& run) {
  if (!run.recipe.data.is_text()) return load_data(run.recipe, run.run_dir);
  const data::Tokenizer tok = from_recipe::run_tokenizer(run.recipe, run.run_dir);
  if (auto* response = dynamic_cast<ResponseObjective*>(run.objective.get())) response->set_tokenizer(tok);
  return load_data(run.recipe, run.run_dir, &tok);
}

// Data parallel: the global batch split evenly over the ranks.
void check_batch_split(const Run& run) {
  if (run.recipe.data.batch_size % run.world != 0)
    throw Error(fmt::format("{}: data.batch_size {} (the global batch) is not divisible by WORLD_SIZE {}",
                            run.recipe.source, run.recipe.data.batch_size, run.world));
}

// The run directory (rank 0), the model and the data; with ranks, the others follow rank 0's
// decision to resume and read its tokenizer. True when resuming.
bool set_up_model_and_data(Run& run, std::string* tokenizer_message) {
  const Recipe& recipe = run.recipe;
  bool resuming = run.writer() && open_run_dir(run);
  if (run.group) resuming = run.group->from_rank0(resuming ? 1 : 0, "broadcast of the resume decision") != 0;
  run.rm = build_run_model(recipe, /*load_init=*/!resuming, /*store_frozen=*/true);
  if (run.writer()) run.splits = load_training_data(run, resuming, tokenizer_message);
  if (run.group) run.group->barrier("waiting for rank 0's data and tokenizer");
  if (!run.writer()) run.splits = load_rank_data(run);
  return resuming;
}

// Seeds, builds the model, loads the data, makes the optimizer and resumes or starts the run.
void set_up(Run& run) {
  const Recipe& recipe = run.recipe;
  std::string threads = apply_thread_policy(recipe.threads);
  torch::manual_seed(static_cast<uint64_t>(recipe.seed));
  if (run.group) check_batch_split(run);
  std::string tokenizer_message;
  const bool resuming = set_up_model_and_data(run, &tokenizer_message);
  const auto& train_set = run.splits.train;
  run.seq_len = recipe.model.is_text() ? train_set.inputs.size(1) : 1;
  if (train_set.size() < recipe.data.batch_size)
    throw Error(fmt::format("data: the training split has {} samples, fewer than data.batch_size {}",
                            train_set.size(), recipe.data.batch_size));

  for (auto& p : run.model().named_parameters())
    if (p.value().requires_grad()) {
      run.params.push_back(p.value());
      run.param_names.push_back(p.key());
    }
  run.optimizer = make_optimizer(recipe.optimizer, run.params);

  run.batch_size = recipe.data.batch_size;
  run.accum = recipe.train.grad_accum;
  run.batches_per_epoch = train_set.size() / run.batch_size;  // the last partial batch is dropped
  const int64_t steps_per_epoch = (run.batches_per_epoch + run.accum - 1) / run.accum;
  run.total_steps = steps_per_epoch * recipe.train.epochs;
  if (recipe.train.max_steps > 0) run.total_steps = std::min(run.total_steps, recipe.train.max_steps);
  resume_or_start(run, resuming);
  if (run.group) {  // every rank starts from rank 0's model (and agrees on whether it had finished)
    run.finished_before = run.group->from_rank0(run.finished_before ? 1 : 0, "broadcast of the run's state") != 0;
    run.sync = std::make_unique<dist::GradSync>(*run.group, run.params, dist::kDefaultBucketBytes,
                                                dist::overlap_from_env(std::getenv("TUNEKIT_DIST_OVERLAP")));
    run.sync->broadcast_model(run.model());
  }
  set_up_precision(run);
  announce(run, threads, tokenizer_message, resuming);
  if (run.group)
    run.say(fmt::format("data parallel: {} ranks (Gloo), {} per rank per batch; {} trainable gradient bytes per step in {} "
                        "bucket(s){}; timeout {} s",
                        run.world, run.batch_size / run.world, run.sync->bytes_per_step(), run.sync->buckets(),
                        run.sync->overlap() ? " overlapped with backward" : "",
                        run.group->timeout().count() / 1000.0));

  run.result.run_dir = run.run_dir;
  run.result.trainable = run.rm.report.trainable;
  run.result.total = run.rm.report.total;
  run.result.flops_per_sample = run.model().flops_per_sample();
  run.progress = std::make_unique<Progress>("train", run.total_steps, recipe.train.log_every, run.opts.quiet);
  run.train_seconds = run.state.train_seconds;
  set_checkpoint_extras(run);
}

// --- one optimizer step ---

struct Step {
  double loss = 0;         // mean over its micro-batches
  double lr = 0;
  int64_t next_batch = 0;  // the epoch's first batch not yet consumed
};

// Forward and backward of batch `b` of the epoch's order; returns its loss. Data parallel: this
// rank's contiguous slice of the global batch, its loss weighted by its share of what the global
// batch's loss averages over (rows, or counted target tokens), so that the gradients summed over
// ranks are the one-process gradient of the whole batch; the value returned is that weighted share
// (summed over ranks, the batch's loss).
double forward_backward(Run& run, const torch::Tensor& perm, int64_t b) {
  const auto& train_set = run.splits.train;
  auto idx = perm.slice(0, b * run.batch_size, (b + 1) * run.batch_size);
  double weight = 1.0;
  if (run.world > 1) {
    const int64_t global_count = run.objective->loss_count(train_set, idx);
    const int64_t per_rank = run.batch_size / run.world;
    idx = idx.slice(0, run.rank * per_rank, (run.rank + 1) * per_rank);
    weight = global_count > 0 ? double(run.objective->loss_count(train_set, idx)) / double(global_count) : 0.0;
  }
  models::ComputeScope compute(run.compute.dtype);
  auto loss = run.objective->batch_loss(run.model(), train_set, idx);
  const double loss_value = loss.item<double>();
  if (!std::isfinite(loss_value)) diverged(run, run.state.step + 1, "the loss is " + number_text(loss_value));
  const double scale = weight / double(run.accum);
  (scale != 1.0 ? loss * scale : loss).backward();
  run.state.samples += run.batch_size;
  run.samples_this_call += run.batch_size;
  return loss_value * weight;
}

// Test hook (TUNEKIT_DIST_FAULT=exit:RANK:STEP or hang:RANK:STEP): rank RANK exits with status 3,
// or stops answering, as optimizer step STEP begins, the way a crashed or stuck rank would.
void fault_hook(const Run& run) {
  const char* spec = std::getenv("TUNEKIT_DIST_FAULT");
  if (spec == nullptr || run.world == 1) return;
  char kind[8] = {0};
  int rank = -1;
  long long step = -1;
  if (std::sscanf(spec, "%7[a-z]:%d:%lld", kind, &rank, &step) != 3 || rank != run.rank || step != run.state.step + 1)
    return;
  if (std::string(kind) == "exit") std::_Exit(3);
  if (std::string(kind) == "hang")
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(60));
}

// Accumulates gradients over up to `accum` batches from batch `b` (fewer at the epoch's end),
// then clips, sets the scheduled learning rate and steps the optimizer. A non-finite gradient
// norm stops the run before the step; a parameter the step made non-finite stops it after.
Step train_step(Run& run, const torch::Tensor& perm, int64_t b) {
  fault_hook(run);
  const int64_t end = std::min(b + run.accum, run.batches_per_epoch);
  double loss_sum = 0;
  for (int64_t i = b; i < end; ++i) {
    if (run.sync && i == end - 1) run.sync->arm();  // its backward starts the allreduces (overlap)
    loss_sum += forward_backward(run, perm, i);
  }
  if (run.sync) {  // the gradients (and the loss) summed over ranks: the one-process ones
    run.sync->reduce(1.0, run.state.step + 1);
    loss_sum = run.group->sum(loss_sum, fmt::format("allreduce of the step {} loss", run.state.step + 1));
  }

  const Recipe& recipe = run.recipe;
  const double lr = scheduled_lr(recipe.schedule, recipe.optimizer.lr, run.state.step, run.total_steps);
  set_lr(*run.optimizer, lr);
  const double norm = gradient_norm(run);
  if (!std::isfinite(norm)) diverged(run, run.state.step + 1, "the gradient norm is " + number_text(norm));
  optimizer_step(run);
  clear_gradients(*run.optimizer);
  ++run.state.step;
  check_parameters(run, "after the optimizer step");
  run.state.batch_in_epoch = end;
  return {loss_sum / double(end - b), lr, end};
}

// Records a step: its loss, the time it took (since `t_start`, which it advances), the progress
// line and, every log_every steps, a "train" line in metrics.jsonl with the mean loss since the
// last one (that window is part of the run's state, so a resumed run writes the same lines).
void log_step(Run& run, int64_t epoch, const Step& step, std::chrono::steady_clock::time_point& t_start) {
  auto& state = run.state;
  run.result.losses.emplace_back(state.step, step.loss);
  state.window_loss += step.loss;
  ++state.window_n;
  auto now = std::chrono::steady_clock::now();
  double dt = std::chrono::duration<double>(now - t_start).count();
  t_start = now;
  run.train_seconds += dt;
  run.seconds_this_call += dt;
  const double rate = run.seconds_this_call > 0 ? run.samples_this_call / run.seconds_this_call : 0;
  const Throughput speed = run.objective->throughput(rate, run.seq_len);
  const int64_t epochs = run.recipe.train.epochs;
  run.progress->update(state.step, fmt::format("epoch {}/{}  loss {:.4f}  lr {:.2e}  {:.0f} {}", epoch + 1, epochs,
                                               step.loss, step.lr, speed.per_second, speed.unit));
  if (state.step % run.recipe.train.log_every == 0 || state.step == run.total_steps) {
    if (run.metrics)  // rank 0's (data parallel: the loss is already the global one)
      run.metrics->write({{"type", "train"}, {"step", state.step}, {"total_steps", run.total_steps}, {"epoch", epoch + 1},
                        {"loss", state.window_loss / double(state.window_n)}, {"lr", step.lr},
                        {"samples_per_second", rate}});
    state.window_loss = 0;
    state.window_n = 0;
  }
}

enum class EpochEnd { Done, BudgetSpent, Stopped };

// The optimizer steps of one epoch, from the run's position in it.
EpochEnd run_epoch(Run& run, int64_t epoch) {
  auto& state = run.state;
  state.epoch = epoch;
  auto perm = data::epoch_permutation(run.splits.train.size(), static_cast<uint64_t>(run.recipe.seed), epoch);
  auto t_start = std::chrono::steady_clock::now();
  for (int64_t b = state.batch_in_epoch; b < run.batches_per_epoch;) {
    const Step step = train_step(run, perm, b);
    b = step.next_batch;
    log_step(run, epoch, step, t_start);
    if (run.opts.stop_after_steps > 0 && state.step >= run.opts.stop_after_steps) {
      run.progress->clear();
      run.say(fmt::format("stopping after step {} (as asked)", state.step));
      return EpochEnd::Stopped;
    }
    const int64_t every = run.recipe.train.checkpoint_every;
    if (every > 0 && state.step % every == 0 && b < run.batches_per_epoch) checkpoint_last(run);
    if (state.step >= run.total_steps) return EpochEnd::BudgetSpent;
  }
  return EpochEnd::Done;
}

// --- end of epoch ---

// The validation rows an evaluation reads: the first train.val_batches batches (0: all of them).
data::LabelledDataset validation_rows(const Run& run) {
  const auto& val = run.splits.val;
  const int64_t limit = run.recipe.train.val_batches * run.recipe.data.eval_batch_size;
  if (limit <= 0 || limit >= val.size()) return val;
  return val.subset(torch::arange(limit, torch::kLong));
}

// Evaluates the validation split, logs it, and remembers the epoch when its score is the best.
// A non-finite validation loss or score stops the run (it is never logged, nor "best").
void validate(Run& run, int64_t epoch) {
  auto& state = run.state;
  const Objective& objective = *run.objective;
  EvalResult ev;
  {
    models::ComputeScope compute(run.compute.dtype);
    // Data parallel: each rank its part of the rows, the parts' counts summed (one part: the split).
    ev = objective.evaluate_part(run.model(), validation_rows(run), run.recipe.data.eval_batch_size, run.rank,
                                 run.world);
    if (run.group) {
      torch::Tensor counts = eval_counts(ev);
      run.group->allreduce_sum(counts, fmt::format("allreduce of the epoch {} validation", epoch + 1));
      ev = eval_from_counts(ev, counts);
    }
  }
  run.model().train();
  run.result.final_val_accuracy = ev.accuracy;
  const double score = objective.score(ev);
  if (!std::isfinite(ev.loss) || !std::isfinite(score))
    diverged(run, state.step,
             fmt::format("the validation {} is {} (epoch {})", std::isfinite(ev.loss) ? "score" : "loss",
                         number_text(std::isfinite(ev.loss) ? score : ev.loss), epoch + 1));
  const bool better =
      std::isfinite(score) && (state.best_epoch < 0 || !std::isfinite(state.best_metric) || score > state.best_metric);
  nlohmann::json line = objective.eval_fields(ev);
  line["type"] = "eval";
  line["split"] = "val";
  line["step"] = state.step;
  line["epoch"] = epoch + 1;
  if (run.metrics) run.metrics->write(line);  // rank 0's
  run.say(fmt::format("epoch {}/{}: {}{}", epoch + 1, run.recipe.train.epochs, objective.eval_text(ev),
                      better ? "  (best)" : ""));
  if (better) {
    state.best_metric = score;
    state.best_epoch = epoch + 1;
  }
}

// Validates, keeps the best checkpoint, and checkpoints the position. `budget_spent`: the step
// budget ended the epoch (mid-epoch, the position stays at its last batch).
void end_epoch(Run& run, int64_t epoch, bool budget_spent) {
  run.progress->clear();
  const bool has_val = run.splits.val.size() > 0;
  if (has_val) validate(run, epoch);  // data parallel: every rank its part; all agree on the best epoch
  if (!budget_spent) {
    run.state.epoch = epoch + 1;
    run.state.batch_in_epoch = 0;
  }
  if (!has_val || run.state.best_epoch == epoch + 1) save(run, run.best_dir, nullptr);
  checkpoint_last(run);
}

// --- the summary ---

TrainResult summarise(Run& run, std::chrono::steady_clock::time_point wall0) {
  auto& r = run.result;
  r.steps = run.state.step;
  r.train_seconds = run.train_seconds;
  r.samples_per_second = run.seconds_this_call > 0 ? run.samples_this_call / run.seconds_this_call : 0;
  r.tokens_per_second = run.recipe.model.is_text() ? r.samples_per_second * run.seq_len : 0;
  r.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  run.objective->report_best(run.state, r);
  if (!io::checkpoint_exists(run.best_dir)) save(run, run.best_dir, nullptr);
  nlohmann::json line{{"type", "summary"},
                      {"step", run.state.step},
                      {"samples_per_second", r.samples_per_second},
                      {"wall_seconds", r.wall_seconds},
                      {"flops_per_sample", r.flops_per_sample},
                      {"tokens_per_second", r.tokens_per_second},
                      {"train_seconds", run.train_seconds},
                      {"trainable_params", r.trainable},
                      {"total_params", r.total}};
  run.objective->add_summary_fields(r, line);
  if (run.metrics) run.metrics->write(line);
  run.progress->finish(run.objective->summary_text(r));
  return r;
}

// --resume of a run that had finished: its files stay as they are (no second summary); the
// result is the one its summary and last checkpoint hold.
TrainResult already_finished(Run& run) {
  auto& r = run.result;
  r.steps = run.state.step;
  r.train_seconds = run.state.train_seconds;
  run.objective->report_best(run.state, r);
  const auto& s = run.previous_summary;
  r.samples_per_second = number_field(s, "samples_per_second");
  r.tokens_per_second = number_field(s, "tokens_per_second");
  r.wall_seconds = number_field(s, "wall_seconds");
  run.say(fmt::format("{} finished before (step {} of {}); nothing to do", run.run_dir, run.state.step,
                      run.total_steps));
  return r;
}

}  // namespace

TrainResult train(const Recipe& recipe, const TrainOptions& options) {
  const auto wall0 = std::chrono::steady_clock::now();
  // A device this machine cannot train on is refused before anything is joined, locked or written.
  const std::string device_line = resolve_device(recipe.device, recipe.source, CudaPresence::probe()).line;
  // WORLD_SIZE > 1 (torchrun, tunekit launch): join the process group first; the ranks after 0
  // print nothing but errors and write nothing.
  const dist::DistEnv env = dist::dist_env_from_process();
  std::unique_ptr<dist::ProcessGroup> group;
  if (env.distributed())
    group = std::make_unique<dist::ProcessGroup>(
        env, dist::dist_timeout([](const char* name) { return static_cast<const char*>(std::getenv(name)); }));
  TrainOptions opts = options;
  if (env.rank > 0) opts.quiet = true;
  // Held (by rank 0) until the run ends: a second train/--resume on this directory is refused at once.
  std::optional<DirLock> lock;
  if (env.rank == 0) lock.emplace(recipe.run_dir(), opts.resume ? "train --resume" : "train");
  Run run(recipe, opts);
  run.rank = env.rank;
  run.world = env.world_size;
  run.group = group.get();
  run.device_line = device_line;
  set_up(run);
  if (run.finished_before) return already_finished(run);
  run.model().train();
  clear_gradients(*run.optimizer);
  bool stop = run.state.step >= run.total_steps;
  for (int64_t epoch = run.state.epoch; epoch < recipe.train.epochs && !stop; ++epoch) {
    const EpochEnd end = run_epoch(run, epoch);
    if (end == EpochEnd::Stopped) {  // abrupt: no checkpoint, as if the process had been killed
      run.result.steps = run.state.step;
      return run.result;
    }
    stop = end == EpochEnd::BudgetSpent;
    end_epoch(run, epoch, stop);
  }
  return summarise(run, wall0);
}

}  // namespace tunekit
