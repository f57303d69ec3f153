// Hugging Face checkpoint benchmark (issue 14's performance item): how long a causal-LM
// checkpoint takes to load and how much memory the load needs against the model's own float32
// size N, then the LoRA training step a recipe runs on it (forward, next-token cross-entropy,
// backward, gradient-norm clipping, AdamW step, zero_grad), timed as bench/torch_hf_lora.py
// times the same step in PyTorch eager. bench/run_hf.sh writes a Qwen2.5-0.5B-shaped checkpoint
// and runs both.
//   bench_hf --model DIR [--steps 3] [--warmup 1] [--batch 1] [--seq 256] [--r 16] [--alpha 32]
//            [--targets q_proj,k_proj,v_proj,o_proj] [--threads N] [--torch-threads N]
//            [--blas-threads N] [--seed 0] [--json]
// --threads N gives N threads to LibTorch's pool and N to OpenBLAS (as the Python side runs with
// torch.set_num_threads(N) and OPENBLAS_NUM_THREADS=N); without it, tunekit's default policy.
// --json: one JSON object per line on stdout ("what": load, model, step, summary, as the Python
// script), the human-readable lines on stderr.
//
// FLOPs. "mfu" counts 3x the forward FLOPs (model->flops_per_sample() at --seq tokens), the
// convention bench_train uses. With LoRA the frozen base weights get no weight gradient, so the
// backward of the base is about one forward (input gradients only), and "mfu_executed" counts
// what runs: 2x the forward, plus one more attention core (its backward has two products per
// forward product, none of them weights), plus 3x the LoRA products.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "adapters/attach.h"
#include "models/hf/common.h"
#include "models/init_guard.h"
#include "src/hf/load.h"
#include "util/error.h"
#include "util/memory.h"
#include "util/startup.h"
#include "util/text.h"
#include "bench/common.h"
#include "util/threads.h"

using namespace tunekit;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  std::string model;
  int64_t steps = 3, warmup = 1, batch = 1, seq = 256, r = 16, seed = 0;
  double alpha = 32.0;
  std::string targets = "q_proj,k_proj,v_proj,o_proj";
  int torch_threads = 0, blas_threads = 0;  // 0: tunekit's default policy
  bool json = false;
};

const char* kUsage =
    "usage: bench_hf --model DIR [--steps 3] [--warmup 1] [--batch 1] [--seq 256] [--r 16] [--alpha 32]\n"
    "                [--targets q_proj,k_proj,v_proj,o_proj] [--threads N] [--torch-threads N] [--blas-threads N]\n"
    "                [--seed 0] [--json]\n";

Args parse_args(int argc, char** argv) {
  Args a;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw Error(fmt::format("{} needs a value\n{}", argv[i], kUsage));
    return argv[++i];
  };
  auto integer = [&](int& i) -> int64_t {
    std::string flag = argv[i], v = value(i);
    try {
      size_t used = 0;
      int64_t n = std::stoll(v, &used);
      if (used == v.size()) return n;
    } catch (const std::exception&) {
    }
    throw Error(fmt::format("{}: '{}' is not an integer", flag, v));
  };
  auto number = [&](int& i) -> double {
    std::string flag = argv[i], v = value(i);
    try {
      size_t used = 0;
      double x = std::stod(v, &used);
      if (used == v.size()) return x;
    } catch (const std::exception&) {
    }
    throw Error(fmt::format("{}: '{}' is not a number", flag, v));
  };
  for (int i = 1; i < argc; ++i) {
    std::string f = argv[i];
    if (f == "--model") a.model = value(i);
    else if (f == "--steps") a.steps = integer(i);
    else if (f == "--warmup") a.warmup = integer(i);
    else if (f == "--batch") a.batch = integer(i);
    else if (f == "--seq") a.seq = integer(i);
    else if (f == "--r") a.r = integer(i);
    else if (f == "--alpha") a.alpha = number(i);
    else if (f == "--targets") a.targets = value(i);
    else if (f == "--threads") a.torch_threads = a.blas_threads = int(integer(i));
    else if (f == "--torch-threads") a.torch_threads = int(integer(i));
    else if (f == "--blas-threads") a.blas_threads = int(integer(i));
    else if (f == "--seed") a.seed = integer(i);
    else if (f == "--json") a.json = true;
    else throw Error(fmt::format("unknown argument '{}'\n{}", f, kUsage));
  }
  if (a.model.empty()) throw Error(fmt::format("--model DIR is required\n{}", kUsage));
  if (a.steps < 1 || a.warmup < 0 || a.batch < 1 || a.seq < 2 || a.r < 1)
    throw Error("--steps, --batch and --r must be at least 1, --seq at least 2, --warmup at least 0");
  return a;
}

// Current resident set size in MiB (util/memory.h has only the peak).
double rss_mib() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}

// bench_train's measurement (a 1024^3 sgemm, 20 times, under the thread policy in force), the
// best of three tries: on a shared machine one try may catch another process's burst.
double sgemm_peak_gflops(int n = 1024, int reps = 20, int tries = 3) {
  auto a = torch::randn({n, n}), b = torch::randn({n, n});
  torch::mm(a, b);  // warm-up
  double best = 0;
  for (int t = 0; t < tries; ++t) {
    auto t0 = Clock::now();
    for (int i = 0; i < reps; ++i) torch::mm(a, b);
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * n * reps / s / 1e9);
  }
  return best;
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The comma-separated --targets as a recipe's adapter.targets list: PEFT's bare suffix names
// (`q_proj`), globs or `re:` expressions (adapters/attach.h, find_targets).
std::vector<std::string> target_list(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  for (std::string s; std::getline(in, s, ',');) {
    s.erase(0, s.find_first_not_of(" \t"));
    s.erase(s.find_last_not_of(" \t") + 1);
    if (!s.empty()) out.push_back(s);
  }
  if (out.empty()) throw Error("--targets: no target given");
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double round_to(double x, int digits) {
  double p = std::pow(10.0, digits);
  return std::round(x * p) / p;
}

class Output {
 public:
  explicit Output(bool json) : json_(json) {}
  void say(const std::string& line) const { (json_ ? std::cerr : std::cout) << line << std::endl; }
  void emit(const nlohmann::json& j) const {
    if (json_) std::cout << j.dump() << std::endl;
  }

 private:
  bool json_;
};

int run(const Args& a) {
  Output out(a.json);
  ThreadPolicy policy;  // tunekit's default unless the flags say otherwise
  if (a.torch_threads > 0) policy.torch = a.torch_threads;
  if (a.blas_threads > 0) policy.blas = a.blas_threads;
  const std::string threads = apply_thread_policy(policy);

  // 1. Load. The load is the process's first large allocation, so the peak after it is the
  // load's peak; the peak is also restarted from the current RSS to be sure.
  const double rss_before = rss_mib();
  reset_peak_rss();
  auto t0 = Clock::now();
  hf::HfLoaded loaded = hf::load_hf(a.model, hf::HfLoadOptions().max_seq_len(a.seq));
  const double load_s = seconds_since(t0);
  const double peak_load = peak_rss_mib();
  auto& model = loaded.model;
  if (!models::hf::is_causal_lm(model->family()))
    throw Error(fmt::format("{}: a {} checkpoint; bench_hf trains causal LMs (gpt2, llama, mistral, qwen2)", a.model,
                            models::hf::to_string(model->family())));
  int64_t params = 0, n_bytes = 0;
  for (const auto& p : model->parameters()) {
    params += p.numel();
    n_bytes += p.numel() * int64_t(p.element_size());
  }
  const double n_mib = double(n_bytes) / (1024.0 * 1024.0);
  uint64_t file_bytes = 0;
  for (const auto& f : loaded.report.files) file_bytes += std::filesystem::file_size(f);
  const std::string storage = join(loaded.report.dtypes, ",");
  const double ratio = (peak_load - rss_before) / n_mib;
  out.say(fmt::format("model: {} ({}; {} parameters)", a.model, models::hf::to_string(model->family()),
                      with_commas(params)));
  out.say(fmt::format("load: {:.2f} s; {} tensors, {} storage, {:.1f} MiB of tensor data read from {} file(s) of {:.1f} MiB",
                      load_s, loaded.report.tensors, storage, loaded.report.bytes / 1048576.0,
                      loaded.report.files.size(), file_bytes / 1048576.0));
  out.say(fmt::format("load memory: N = {:.1f} MiB (float32 parameters); RSS before {:.1f} MiB, peak after load {:.1f} MiB; "
                      "peak - before = {:.1f} MiB = {:.3f} N",
                      n_mib, rss_before, peak_load, peak_load - rss_before, ratio));
  out.emit({{"what", "load"}, {"impl", "tunekit"}, {"dir", a.model}, {"seconds", round_to(load_s, 3)},
            {"family", models::hf::to_string(model->family())}, {"storage_dtype", storage},
            {"tensors", loaded.report.tensors}, {"data_bytes", loaded.report.bytes}, {"file_bytes", file_bytes},
            {"model_bytes", n_bytes}, {"rss_before_mb", round_to(rss_before, 1)},
            {"peak_rss_mb", round_to(peak_load, 1)}, {"load_rss_mb", round_to(peak_load - rss_before, 1)},
            {"load_rss_over_model", round_to(ratio, 4)}});

  // 2. The sgemm peak, under the same threads, after the load so it does not count in the load's peak.
  const double peak_gflops = sgemm_peak_gflops();
  const std::string blas = bench::blas_core_label();
  out.say(fmt::format("threads: {}; OpenBLAS core {}; sgemm peak (1024^3): {:.1f} GFLOP/s", threads, blas, peak_gflops));
  out.say(allocator_policy());

  // 3. LoRA as a recipe attaches it, AdamW on the trainable parameters.
  torch::manual_seed(a.seed);
  auto targets = target_list(a.targets);
  adapters::AttachOptions attach(adapters::AdapterKind::Lora);
  attach.targets(targets).lora(adapters::LoraOptions(0, 0).r(a.r).alpha(a.alpha));
  adapters::AttachReport report = adapters::attach_adapters(*model, attach);
  std::vector<torch::Tensor> trainable;
  for (const auto& p : model->parameters())
    if (p.requires_grad()) trainable.push_back(p);
  // FLOPs of one training step (docs at the top of the file).
  const double forward = model->flops_per_sample() * double(a.batch);
  double core = 0, lora = 0;
  for (const auto& m : model->modules(/*include_self=*/false)) {
    if (auto* att = dynamic_cast<models::hf::HfAttentionBase*>(m.get())) core += att->core_flops(double(a.seq));
    if (auto* l = dynamic_cast<adapters::LoraImpl*>(m.get()))
      lora += 2.0 * double(a.seq) * double(l->options.r()) * double(l->options.in_features() + l->options.out_features());
  }
  core *= double(a.batch);
  lora *= double(a.batch);
  const double flops_conv = 3.0 * forward, flops_exec = 2.0 * forward + core + 3.0 * lora;
  out.say(fmt::format("lora: r {}, alpha {} on {} layers ({}); {}", a.r, a.alpha, report.adapted.size(),
                      join(targets, ","), report.summary()));
  out.say(fmt::format("flops per step: {:.1f} GFLOP (3x forward), {:.1f} GFLOP executed (2x forward + attention core + 3x LoRA)",
                      flops_conv / 1e9, flops_exec / 1e9));
  out.emit({{"what", "model"}, {"impl", "tunekit"}, {"family", models::hf::to_string(model->family())},
            {"describe", model->describe()}, {"source", a.model}, {"lora_modules", report.adapted.size()},
            {"r", a.r}, {"alpha", a.alpha}, {"params_total", report.total}, {"params_trainable", report.trainable},
            {"flops_forward", forward}, {"flops_step_3x", flops_conv}, {"flops_step_executed", flops_exec}});
  torch::optim::AdamW opt(trainable, torch::optim::AdamWOptions(1e-4).weight_decay(0.01));

  // 4. The timed steps: forward, loss, backward, clipping, step, zero_grad.
  torch::manual_seed(a.seed + 1);
  const int64_t vocab = loaded.config.family == models::hf::Family::Gpt2 ? loaded.config.gpt2.vocab_size()
                                                                         : loaded.config.llama.vocab_size();
  auto ids = torch::randint(vocab, {a.batch, a.seq}, torch::kLong);
  model->train();
  std::vector<double> times;
  for (int64_t step = 0; step < a.warmup + a.steps; ++step) {
    auto s0 = Clock::now();
    auto logits = model->forward(ids);
    auto loss = torch::nn::functional::cross_entropy(logits.slice(1, 0, a.seq - 1).reshape({-1, vocab}),
                                                     ids.slice(1, 1).reshape({-1}));
    loss.backward();
    torch::nn::utils::clip_grad_norm_(trainable, 1.0);
    opt.step();
    opt.zero_grad();
    const double s = seconds_since(s0);
    const bool warm = step < a.warmup;
    if (!warm) times.push_back(s);
    const double loss_value = loss.item<double>();
    out.say(fmt::format("step {}{}: {:.3f} s, loss {:.5f}", step, warm ? " (warm-up)" : "", s, loss_value));
    out.emit({{"what", "step"}, {"impl", "tunekit"}, {"step", step}, {"warmup", warm}, {"seconds", round_to(s, 4)},
              {"loss", round_to(loss_value, 5)}});
  }
  const double med = median(times);
  const double tokens_per_s = double(a.batch * a.seq) / med;
  const double mfu = flops_conv / med / 1e9 / peak_gflops, mfu_exec = flops_exec / med / 1e9 / peak_gflops;
  const double peak_train = peak_rss_mib();
  out.say(fmt::format("summary: median step {:.3f} s over {} steps; {:.1f} tokens/s; {:.1f} GFLOP/s (3x forward) = "
                      "{:.1f}% MFU, executed {:.1f} GFLOP/s = {:.1f}%; process peak RSS {:.0f} MiB",
                      med, times.size(), tokens_per_s, flops_conv / med / 1e9, 100 * mfu, flops_exec / med / 1e9,
                      100 * mfu_exec, peak_train));
  out.emit({{"what", "summary"}, {"impl", "tunekit"}, {"threads", threads}, {"allocator", allocator_policy()}, {"torch_threads", torch::get_num_threads()},
            {"batch", a.batch}, {"seq", a.seq}, {"steps", times.size()}, {"step_s_median", round_to(med, 4)},
            {"tokens_per_s", round_to(tokens_per_s, 1)}, {"peak_rss_mb", round_to(peak_train, 1)},
            {"params_total", report.total}, {"params_trainable", report.trainable},
            {"sgemm_gflops", round_to(peak_gflops, 1)}, {"blas_core", blas}, {"mfu", round_to(mfu, 4)}, {"mfu_executed", round_to(mfu_exec, 4)},
            {"load_s", round_to(load_s, 3)}, {"load_rss_over_model", round_to(ratio, 4)}});

  // 5. Where the load's time goes: build_hf_model alone as load_hf runs it (allocation, no random
  // initialisation: models/init_guard.h), timed once more after everything above has been
  // measured. A separate run of the same work, not a part of the load above: on a busy machine
  // the two need not add up.
  model.reset();  // loaded.model: the trained model is freed first
  auto b0 = Clock::now();
  std::shared_ptr<models::hf::HfModel> built;
  {
    models::SkipInit skip;
    built = hf::build_hf_model(loaded.config);
  }
  const double build_s = seconds_since(b0);
  built.reset();
  out.say(fmt::format("load breakdown: building the model (allocation, no random initialisation) takes {:.2f} s "
                      "of load_hf's {:.2f} s; the rest is reading and converting the weights",
                      build_s, load_s));
  out.emit({{"what", "load_breakdown"}, {"impl", "tunekit"}, {"build_s", round_to(build_s, 3)},
            {"load_s", round_to(load_s, 3)}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (!start_up(argv, "bench_hf")) return 2;  // as tunekit's main (util/startup.h)
  try {
    return run(parse_args(argc, argv));
  } catch (const Error& e) {
    std::cerr << "bench_hf: error: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "bench_hf: error: " << e.what_without_backtrace() << "\n";
    return 1;
  }
}
