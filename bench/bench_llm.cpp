// tunekit side of `make bench-llm` (issue 17): one row (a shape and a mode) of the 100M-500M-
// parameter benchmark, timed as bench/torch_llm.py times the same row in PyTorch eager. The model
// is built from Options and initialised as transformers does (src/hf/scratch.h), adapters are
// attached as a recipe attaches them, the loss is the trainer's (models::causal_lm_loss: the fused,
// chunked LM head), generation is prefill + one cached forward_lm step per token.
//   bench_llm --shape gpt2|gpt2-32k|qwen --mode full|lora|dora|infer [--steps 2] [--warmup 1]
//             [--compute fp32|bf16|auto] [--frozen fp32|bf16|int8] [--checkpointing] [--loss-chunk 1024]
//             [--r 16] [--alpha 32] [--new 64] [--torch-threads N] [--blas-threads N]
//             [--sgemm-gflops G] [--seed 0] [--tiny] [--json] [--optimizer fused|torch]
//             [--low-rank fused|aten] [--profile FILE]
//   bench_llm --sgemm [--compute fp32|bf16|auto] [--torch-threads N] [--blas-threads N] [--json]
//   bench_llm --print-core
// Every mode first lets util/threads.h's select_blas_core pick OpenBLAS's kernels (on a CPU the
// installed OpenBLAS does not know it re-executes with OPENBLAS_CORETYPE set); --print-core prints
// the core in use, which run_llm.sh exports as OPENBLAS_CORETYPE so PyTorch eager gets the same.
// --sgemm measures the peak the MFU is counted against (run_llm.sh runs it once and passes it to
// both sides): the median over [1024,768]x[768,768], [1024,768]x[768,3072] and 1024^3 of each
// shape's best of 3 tries (20 products each); with a --compute that resolves to bf16, the bf16
// GEMM peak too (the bf16 rows' MFU is counted against it). --tiny: a 2-layer model of the shape's family.
// --optimizer: the trainer's AdamW (fused: src/train/fused_adamw.h, gradients freed between steps;
// the default) or torch::optim::AdamW (gradients zeroed in place, as before issue 17).
// --low-rank: LoRA's and DoRA's branch as one hand-written autograd node (adapters/lowrank.h; the
// default) or as the composed ATen ops.
// --profile FILE: the last timed training step under LibTorch's profiler, written as a Chrome trace
// (chrome://tracing, Perfetto); `/usr/bin/python3 bench/profile_top.py FILE` lists the ops by self
// time. Custom kernels run outside any op appear as the gap between the step and the ops' sum.
// The allocator policy is tunekit's (util/memory.h: freed memory kept for the next step);
// TUNEKIT_MALLOC=system measures glibc's defaults.
// --json: one JSON object per line on stdout (model, step, summary; sgemm), the same keys as
// torch_llm.py; the human-readable lines go to stderr.
// FLOPs: step_flops below (the same formula as torch_llm.py's; run_llm.sh prints it).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <unistd.h>

#include "adapters/attach.h"
#include "adapters/lowrank.h"
#include "models/chunked_loss.h"
#include "models/hf/common.h"
#include "models/hf/families.h"
#include "models/linear.h"
#include "models/lm.h"
#include "models/precision.h"
#include "src/hf/scratch.h"
#include "src/train/fused_adamw.h"
#include "util/error.h"
#include "util/memory.h"
#include "util/startup.h"
#include "util/text.h"
#include "bench/common.h"
#include "util/threads.h"

using namespace tunekit;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

namespace {

struct Shape {
  bool gpt2 = true;
  int64_t vocab = 50257, d = 768, layers = 12, heads = 12, kv_heads = 12, head_dim = 64, ff = 3072, seq = 256,
          batch = 4, positions = 1024;  // positions: GPT-2's learned positions (n_positions)
  double rope_theta = 1e4;
};

Shape shape_named(const std::string& name, bool tiny) {
  Shape s;
  if (name == "gpt2-32k") {
    s.vocab = 32000;
  } else if (name == "qwen") {
    s.gpt2 = false;
    s.vocab = 151936, s.d = 896, s.layers = 24, s.heads = 14, s.kv_heads = 2, s.head_dim = 64, s.ff = 4864;
    s.batch = 1, s.rope_theta = 1e6;
  } else if (name != "gpt2") {
    throw Error(fmt::format("--shape: '{}' is not one of gpt2, gpt2-32k, qwen", name));
  }
  if (tiny) {  // torch_llm.py's --tiny
    s.vocab = 512, s.d = 64, s.layers = 2, s.heads = 4, s.head_dim = 16, s.seq = 32, s.positions = 160;
    s.kv_heads = s.gpt2 ? 4 : 2;
    s.ff = s.gpt2 ? 256 : 160;
  }
  return s;
}

struct Args {
  bool sgemm = false, print_core = false, checkpointing = false, tiny = false, json = false;
  bool fused_adamw = true;  // --optimizer fused|torch
  bool fused_low_rank = true;  // --low-rank fused|aten
  std::string shape = "gpt2", mode = "lora";
  int64_t steps = 2, warmup = 1, r = 16, fresh = 64, loss_chunk = 1024, seed = 0;
  double alpha = 32.0, sgemm_gflops = 0;
  models::ComputeDtype compute = models::ComputeDtype::Fp32;
  models::FrozenDtype frozen = models::FrozenDtype::Fp32;
  int torch_threads = 0, blas_threads = 0;  // 0: tunekit's default policy
  std::string profile;  // --profile FILE: the last timed step as a Chrome trace
};

const char* kUsage =
    "usage: bench_llm --shape gpt2|gpt2-32k|qwen --mode full|lora|dora|infer [--steps 2] [--warmup 1]\n"
    "                 [--compute fp32|bf16|auto] [--frozen fp32|bf16|int8] [--checkpointing] [--loss-chunk 1024]\n"
    "                 [--r 16] [--alpha 32] [--new 64] [--torch-threads N] [--blas-threads N]\n"
    "                 [--sgemm-gflops G] [--seed 0] [--tiny] [--json] [--optimizer fused|torch]\n"
    "                 [--low-rank fused|aten] [--profile FILE]\n"
    "       bench_llm --sgemm [--compute fp32|bf16|auto] [--torch-threads N] [--blas-threads N] [--json]\n"
    "       bench_llm --print-core\n";

template <typename E>
E choice(const std::string& flag, const std::string& v) {
  if (auto e = enum_from_name<E>(v)) return *e;
  throw Error(fmt::format("{}: '{}' is not one of {}", flag, v, join(enum_names<E>(), ", ")));
}

Args parse_args(int argc, char** argv) {
  Args a;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw Error(fmt::format("{} needs a value\n{}", argv[i], kUsage));
    return argv[++i];
  };
  auto number = [&](int& i, bool integer) -> double {
    std::string flag = argv[i], v = value(i);
    try {
      size_t used = 0;
      double x = integer ? double(std::stoll(v, &used)) : std::stod(v, &used);
      if (used == v.size()) return x;
    } catch (const std::exception&) {
    }
    throw Error(fmt::format("{}: '{}' is not {}", flag, v, integer ? "an integer" : "a number"));
  };
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "--sgemm") a.sgemm = true;
    else if (f == "--print-core") a.print_core = true;
    else if (f == "--shape") a.shape = value(i);
    else if (f == "--mode") a.mode = value(i);
    else if (f == "--steps") a.steps = int64_t(number(i, true));
    else if (f == "--warmup") a.warmup = int64_t(number(i, true));
    else if (f == "--compute") a.compute = choice<models::ComputeDtype>(f, value(i));
    else if (f == "--frozen") a.frozen = choice<models::FrozenDtype>(f, value(i));
    else if (f == "--checkpointing") a.checkpointing = true;
    else if (f == "--loss-chunk") a.loss_chunk = int64_t(number(i, true));
    else if (f == "--r") a.r = int64_t(number(i, true));
    else if (f == "--alpha") a.alpha = number(i, false);
    else if (f == "--new") a.fresh = int64_t(number(i, true));
    else if (f == "--torch-threads") a.torch_threads = int(number(i, true));
    else if (f == "--blas-threads") a.blas_threads = int(number(i, true));
    else if (f == "--sgemm-gflops") a.sgemm_gflops = number(i, false);
    else if (f == "--seed") a.seed = int64_t(number(i, true));
    else if (f == "--tiny") a.tiny = true;
    else if (f == "--json") a.json = true;
    else if (f == "--profile") a.profile = value(i);
    else if (f == "--optimizer") {
      const std::string v = value(i);
      if (v != "fused" && v != "torch") throw Error(fmt::format("--optimizer: '{}' is not one of fused, torch", v));
      a.fused_adamw = v == "fused";
    } else if (f == "--low-rank") {
      const auto v = value(i);
      if (v != "fused" && v != "aten") throw Error(fmt::format("--low-rank: '{}' is not one of fused, aten", v));
      a.fused_low_rank = v == "fused";
    } else throw Error(fmt::format("unknown argument '{}'\n{}", f, kUsage));
  }
  if (a.mode != "full" && a.mode != "lora" && a.mode != "dora" && a.mode != "infer")
    throw Error(fmt::format("--mode: '{}' is not one of full, lora, dora, infer", a.mode));
  if (!a.profile.empty() && (a.mode == "infer" || a.sgemm))
    throw Error("--profile: only with a training mode (--mode full, lora or dora)");
  if (a.steps < 1 || a.warmup < 0 || a.r < 1 || a.fresh < 1 || a.loss_chunk < 0 || a.sgemm_gflops < 0)
    throw Error("--steps, --r and --new must be at least 1; --warmup, --loss-chunk and --sgemm-gflops at least 0");
  return a;
}

// FLOPs a step must do; torch_llm.py's step_flops is the same formula (run_llm.sh prints it).
//   linear: 2 * tokens * (every projection's in*out, the head's d*V included)
//   core:   the attention core at causal cost: Q K^T and P V, 4 * H * Dh FLOPs per (query, key)
//           pair with key <= query, N(N+1)/2 pairs per sequence and layer
//   full:   3 * (linear + core)
//   lora, dora: (linear + core) + (linear - layer 0's q/k/v products: the input gradients)
//           + 2 * core (its backward) + 3 * adapter products (2 * tokens * r * (in + out) each)
//   infer:  prefill = linear without the head + the head at each row's last position + core
double step_flops(const Shape& s, const std::string& mode, int64_t r) {
  const double d = double(s.d), T = double(s.batch * s.seq), N = double(s.seq), L = double(s.layers);
  double qkv, proj, mlp, adapters_io;
  if (s.gpt2) {
    qkv = d * 3 * d, proj = d * d, mlp = 2 * d * double(s.ff);
    adapters_io = d + 3 * d;  // c_attn
  } else {
    const double q = double(s.heads * s.head_dim), kv = double(s.kv_heads * s.head_dim);
    qkv = d * (q + 2 * kv), proj = q * d, mlp = 3 * d * double(s.ff);
    adapters_io = (d + q) + (d + kv);  // q_proj, v_proj
  }
  const double layer_lin = 2 * T * (qkv + proj + mlp);
  const double linear = L * layer_lin + 2 * T * d * double(s.vocab);
  const double core = L * double(s.batch) * 4.0 * double(s.heads * s.head_dim) * N * (N + 1) / 2;
  const double forward = linear + core;
  if (mode == "full") return 3 * forward;
  if (mode == "infer") return L * layer_lin + 2 * double(s.batch) * d * double(s.vocab) + core;
  const double adapters = L * 2 * T * double(r) * adapters_io;
  return forward + (linear - 2 * T * qkv) + 2 * core + 3 * adapters;
}

double round_to(double x, int digits) {
  const double p = std::pow(10.0, digits);
  return std::round(x * p) / p;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

class Output {
 public:
  explicit Output(bool json) : json_(json) {}
  void say(const std::string& line) const { (json_ ? std::cerr : std::cout) << line << std::endl; }
  void emit(const json& j) const {
    if (json_) std::cout << j.dump() << std::endl;
  }

 private:
  bool json_;
};

std::string apply_threads(const Args& a) {
  ThreadPolicy policy;  // tunekit's default unless the flags say otherwise
  if (a.torch_threads > 0) policy.torch = a.torch_threads;
  if (a.blas_threads > 0) policy.blas = a.blas_threads;
  return apply_thread_policy(policy);
}

// The GEMM peak in `dtype` at the shapes that matter: the median over the shapes of each one's
// best of 3 tries (20 products each); `per` gets each shape's figure.
double gemm_peak(torch::ScalarType dtype, json& per) {
  const int64_t shapes[3][3] = {{1024, 768, 768}, {1024, 768, 3072}, {1024, 1024, 1024}};
  std::vector<double> best;
  for (const auto& mkn : shapes) {
    auto x = torch::randn({mkn[0], mkn[1]}).to(dtype), w = torch::randn({mkn[1], mkn[2]}).to(dtype);
    torch::mm(x, w);  // warm-up
    double top = 0;
    for (int t = 0; t < 3; ++t) {
      const auto t0 = Clock::now();
      for (int i = 0; i < 20; ++i) torch::mm(x, w);
      top = std::max(top, 2.0 * double(mkn[0] * mkn[1] * mkn[2]) * 20 / seconds_since(t0) / 1e9);
    }
    best.push_back(top);
    per[fmt::format("{}x{}x{}", mkn[0], mkn[1], mkn[2])] = round_to(top, 1);
  }
  return median(best);
}

// The sgemm peak and, when --compute resolves to bf16, the bf16 GEMM peak the bf16 rows' MFU is
// counted against ("gflops_compute"; the sgemm peak otherwise).
int run_sgemm(const Args& a, const Output& out) {
  const std::string threads = apply_threads(a);
  json per = json::object(), per_compute = json::object();
  const double peak = gemm_peak(torch::kFloat, per);
  const auto choice = models::choose_compute_dtype(a.compute);
  const double peak_compute = choice.dtype == torch::kFloat ? peak : gemm_peak(choice.dtype, per_compute);
  out.say(fmt::format("sgemm peak (median of the 3 shapes' best of 3): {:.1f} GFLOP/s; threads {}; OpenBLAS core {}",
                      peak, threads, bench::blas_core_label()));
  if (choice.dtype != torch::kFloat)
    out.say(fmt::format("{} GEMM peak: {:.1f} GFLOP/s ({})", c10::toString(choice.dtype), peak_compute, choice.why));
  out.emit({{"what", "sgemm"}, {"gflops", round_to(peak, 1)}, {"shapes", per}, {"threads", threads},
            {"blas_core", bench::blas_core_label()}, {"blas_core_description", blas_core_description()},
            {"bf16_features", models::cpu_bf16_features()}, {"compute_dtype", std::string(c10::toString(choice.dtype))},
            {"compute_why", choice.why}, {"gflops_compute", round_to(peak_compute, 1)}, {"shapes_compute", per_compute}});
  return 0;
}

// The model of the shape, initialised as transformers initialises it (seeded). With a frozen base
// stored narrow (`frozen`, every mode but full), every Linear weight is drawn straight into its
// narrow storage (hf::NarrowBuild), as `tunekit train` reads a checkpoint's frozen base: the row's
// peak RSS is then training's, not that of a float32 model narrowed after it was built.
std::shared_ptr<models::hf::HfModel> build_model(const Shape& s, int64_t context, int64_t seed,
                                                 models::FrozenDtype frozen = models::FrozenDtype::Fp32) {
  hf::HfConfig config;
  config.raw = json::object();  // initializer_range 0.02, no pad id: transformers' defaults
  config.context = context;
  if (s.gpt2) {
    config.family = models::hf::Family::Gpt2;
    config.gpt2 = models::hf::Gpt2Options().vocab_size(s.vocab).n_positions(s.positions)
                      .n_embd(s.d).n_layer(s.layers).n_head(s.heads).n_inner(s.ff).max_seq_len(context);
  } else {
    config.family = models::hf::Family::Qwen2;
    config.llama = models::hf::LlamaOptions().family(models::hf::Family::Qwen2).vocab_size(s.vocab)
                       .hidden_size(s.d).intermediate_size(s.ff).num_hidden_layers(s.layers)
                       .num_attention_heads(s.heads).num_key_value_heads(s.kv_heads).head_dim(s.head_dim)
                       .rope_theta(s.rope_theta).max_position_embeddings(32768).qkv_bias(true)
                       .tie_word_embeddings(true).max_seq_len(context);
  }
  torch::manual_seed(seed);
  hf::NarrowBuild narrow;
  narrow.dtype = frozen;
  narrow.select = [](torch::nn::Module& m) {
    std::vector<torch::Tensor> weights;
    for (const auto& item : m.named_modules("", /*include_self=*/false))
      if (auto* lin = dynamic_cast<models::LinearImpl*>(item.value().get())) weights.push_back(lin->weight);
    return weights;
  };
  return hf::build_from_config(config, {}, narrow);
}

struct Timing {
  double seconds = 0;  // the median step (infer: the prefill)
  json extra = json::object();
};

Timing run_training(const Args& a, const Shape& s, models::hf::HfModel& model, std::vector<torch::Tensor> trainable,
                    torch::ScalarType compute, const Output& out) {
  // The trainer's optimizer (make_optimizer: FusedAdamW for optimizer.name adamw) and its zero_grad.
  const auto adamw = torch::optim::AdamWOptions(1e-4).weight_decay(0.01);
  std::unique_ptr<torch::optim::Optimizer> opt;
  if (a.fused_adamw) opt = std::make_unique<FusedAdamW>(trainable, adamw);
  else opt = std::make_unique<torch::optim::AdamW>(trainable, adamw);
  torch::manual_seed(a.seed + 1);
  auto ids = torch::randint(s.vocab, {s.batch, s.seq}, torch::kLong);
  auto targets = models::next_token_targets(ids, -1);
  models::LmInputs in;
  in.ids = ids;
  model.train();
  std::vector<double> times, opt_times, faults;
  for (int64_t step = 0; step < a.warmup + a.steps; ++step) {
    const auto t0 = Clock::now();
    const int64_t f0 = minor_page_faults();
    torch::Tensor loss;
    std::optional<torch::autograd::profiler::RecordProfile> profiling;
    if (!a.profile.empty() && step + 1 == a.warmup + a.steps) profiling.emplace(a.profile);
    {
      models::ComputeScope scope(compute);
      loss = models::causal_lm_loss(model, in, targets, a.loss_chunk);
      loss.backward();
    }
    clip_grad_norm(trainable, 1.0, opt.get());  // the trainer's clipping (src/train/fused_adamw.h)
    const auto t_opt = Clock::now();
    opt->step();
    clear_gradients(*opt);
    const double opt_sec = seconds_since(t_opt), sec = seconds_since(t0);
    if (profiling) {
      profiling.reset();  // writes the trace
      std::ifstream written(a.profile);
      if (!written || written.peek() == std::ifstream::traits_type::eof())
        throw Error(fmt::format("--profile: could not write the trace to {}", a.profile));
      out.say(fmt::format("profile of step {}: {} (bench/profile_top.py lists its ops)", step, a.profile));
    }
    const int64_t step_faults = minor_page_faults() - f0;
    const bool warm = step < a.warmup;
    if (!warm) {
      times.push_back(sec);
      opt_times.push_back(opt_sec);
      faults.push_back(double(step_faults));
    }
    const double loss_value = loss.item<double>();
    out.say(fmt::format("step {}{}: {:.3f} s (optimizer {:.3f} s; {} page faults, {:.0f} MiB), loss {:.5f}", step,
                        warm ? " (warm-up)" : "", sec, opt_sec, step_faults, double(step_faults) * double(sysconf(_SC_PAGESIZE)) / (1 << 20), loss_value));
    out.emit({{"what", "step"}, {"step", step}, {"warmup", warm}, {"seconds", round_to(sec, 4)},
              {"optimizer_seconds", round_to(opt_sec, 4)}, {"minor_faults", step_faults},
              {"loss", round_to(loss_value, 5)}});
  }
  Timing t;
  t.seconds = median(times);
  t.extra = {{"steps", a.steps}, {"step_s_median", round_to(t.seconds, 4)},
             {"tokens_per_s", round_to(double(s.batch * s.seq) / t.seconds, 1)},
             {"optimizer", a.fused_adamw ? "fused" : "torch"}, {"optimizer_s_median", round_to(median(opt_times), 4)},
             {"minor_faults_median", median(faults)},
             {"low_rank", a.fused_low_rank ? "fused" : "aten"}};
  return t;
}

// Prefill of the prompt (the head at the last position), then fresh - 1 cached greedy steps.
std::pair<double, double> generate_once(models::CausalLm& lm, const torch::Tensor& prompt, int64_t fresh) {
  models::KvCache cache;
  models::LmInputs in;
  in.ids = prompt;
  in.cache = &cache;
  in.last_only = true;
  const auto t0 = Clock::now();
  auto next = lm.forward_lm(in).select(1, -1).argmax(-1, /*keepdim=*/true);
  const double prefill = seconds_since(t0);
  const auto t1 = Clock::now();
  for (int64_t i = 1; i < fresh; ++i) {
    in.ids = next;
    next = lm.forward_lm(in).select(1, -1).argmax(-1, true);
  }
  return {prefill, seconds_since(t1)};
}

Timing run_inference(const Args& a, const Shape& s, models::hf::HfModel& model, torch::ScalarType compute,
                     const Output& out) {
  auto* lm = models::as_causal_lm(model);
  if (!lm) throw Error("bench_llm: the model offers no key/value cache (models::CausalLm)");
  torch::manual_seed(a.seed + 1);
  auto ids = torch::randint(s.vocab, {s.batch, s.seq}, torch::kLong);
  model.eval();
  torch::NoGradGuard no_grad;
  models::ComputeScope scope(compute);
  std::vector<double> pre, dec;
  for (int64_t rep = 0; rep < a.warmup + a.steps; ++rep) {
    auto [tp, td] = generate_once(*lm, ids, a.fresh);
    const bool warm = rep < a.warmup;
    out.say(fmt::format("generation {}{}: prefill {:.3f} s, {} cached steps {:.3f} s", rep, warm ? " (warm-up)" : "",
                        tp, a.fresh - 1, td));
    out.emit({{"what", "step"}, {"step", rep}, {"warmup", warm}, {"prefill_s", round_to(tp, 4)},
              {"decode_s", round_to(td, 4)}});
    if (!warm) pre.push_back(tp), dec.push_back(td);
  }
  Timing t;
  t.seconds = median(pre);
  const double td = median(dec), tokens = double(s.batch * s.seq);
  t.extra = {{"prefill_s_median", round_to(t.seconds, 4)}, {"decode_s_median", round_to(td, 4)},
             {"prefill_tokens_per_s", round_to(tokens / t.seconds, 1)},
             {"decode_tokens_per_s", round_to(double(s.batch * (a.fresh - 1)) / td, 2)}, {"new_tokens", a.fresh},
             {"step_s_median", round_to(t.seconds, 4)}, {"tokens_per_s", round_to(tokens / t.seconds, 1)}};
  return t;
}

// Adapters (lora, dora) on q and v as the recipe attaches them; GPT-2's q, k and v are the one
// fused c_attn (PEFT's default target for GPT-2). Returns the trainable parameters.
std::vector<torch::Tensor> prepare(const Args& a, const Shape& s, models::hf::HfModel& model, const Output& out,
                                   json& info) {
  if (a.mode == "lora" || a.mode == "dora") {
    adapters::AttachOptions attach(a.mode == "lora" ? adapters::AdapterKind::Lora : adapters::AdapterKind::Dora);
    attach.targets(s.gpt2 ? std::vector<std::string>{"c_attn"} : std::vector<std::string>{"q_proj", "v_proj"});
    attach.lora(adapters::LoraOptions(0, 0).r(a.r).alpha(a.alpha));
    const auto report = adapters::attach_adapters(model, attach);
    out.say(fmt::format("{}: r {}, alpha {} on {} layers; {}", a.mode, a.r, a.alpha, report.adapted.size(),
                        report.summary()));
    info["adapted"] = report.adapted.size();
  } else if (a.mode == "infer") {
    for (auto& p : model.parameters()) p.set_requires_grad(false);
  }
  models::store_frozen_weights(model, a.frozen);  // what the build left float32 (nothing, when it drew them narrow)
  const int64_t saved = models::frozen_bytes_saved(model);
  info["frozen"] = enum_name(a.frozen);
  info["frozen_bytes_saved"] = saved;
  if (a.frozen != models::FrozenDtype::Fp32)
    out.say(fmt::format("frozen weights stored as {}: {:.1f} MiB saved", enum_name(a.frozen), saved / 1048576.0));
  if (a.checkpointing) model.set_activation_checkpointing(true);
  std::vector<torch::Tensor> trainable;
  for (const auto& p : model.parameters())
    if (p.requires_grad()) trainable.push_back(p);
  return trainable;
}

int run_row(const Args& a, const Output& out) {
  const std::string threads = apply_threads(a);
  const Shape s = shape_named(a.shape, a.tiny);
  const auto choice = models::choose_compute_dtype(a.compute);
  out.say(fmt::format("compute: {}", choice.why));
  auto model = build_model(s, s.seq + a.fresh, a.seed, a.mode == "full" ? models::FrozenDtype::Fp32 : a.frozen);
  json info = {{"what", "model"}, {"impl", "tunekit"}, {"shape", a.shape}, {"mode", a.mode},
               {"describe", model->describe()}};
  auto trainable = prepare(a, s, *model, out, info);
  info["peak_rss_mb_model"] = round_to(peak_rss_mib(), 1);  // built and adapted, before any step
  const int64_t total = models::hf::parameter_count(*model);  // packed int8 rows counted without their scales
  int64_t n_trainable = 0;
  for (const auto& p : trainable) n_trainable += p.numel();
  const double flops = step_flops(s, a.mode, a.r);
  info.update({{"params_total", total}, {"params_trainable", n_trainable}, {"flops_step", flops},
               {"batch", s.batch}, {"seq", s.seq}});
  out.say(fmt::format("model: {}; {} parameters, {} trainable; {:.1f} GFLOP per step; peak RSS {:.0f} MiB before the first step",
                      model->describe(), with_commas(total), with_commas(n_trainable), flops / 1e9,
                      info["peak_rss_mb_model"].get<double>()));
  out.emit(info);
  Timing t = a.mode == "infer" ? run_inference(a, s, *model, choice.dtype, out)
                               : run_training(a, s, *model, trainable, choice.dtype, out);
  json summary = {{"what", "summary"}, {"impl", "tunekit"}, {"shape", a.shape}, {"mode", a.mode},
                  {"compute", enum_name(a.compute)}, {"compute_dtype", std::string(c10::toString(choice.dtype))},
                  {"compute_why", choice.why}, {"frozen", enum_name(a.frozen)}, {"checkpointing", a.checkpointing},
                  {"loss_chunk", a.loss_chunk}, {"threads", threads}, {"allocator", allocator_policy()}, {"batch", s.batch}, {"seq", s.seq},
                  {"params_total", total}, {"params_trainable", n_trainable}, {"flops_step", flops},
                  {"peak_rss_mb", round_to(peak_rss_mib(), 1)}, {"gflops", round_to(flops / t.seconds / 1e9, 2)},
                  {"sgemm_gflops", a.sgemm_gflops}, {"blas_core", bench::blas_core_label()}};
  summary["mfu"] = a.sgemm_gflops > 0 ? json(round_to(flops / t.seconds / 1e9 / a.sgemm_gflops, 4)) : json(nullptr);
  summary.update(t.extra);
  out.say(fmt::format("summary: {:.3f} s per {}; {} tokens/s; {:.1f} GFLOP/s; peak RSS {:.0f} MiB",
                      t.seconds, a.mode == "infer" ? "prefill" : "step", summary["tokens_per_s"].dump(),
                      flops / t.seconds / 1e9, peak_rss_mib()));
  out.emit(summary);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (!start_up(argv, "bench_llm")) return 2;  // as tunekit's main (util/startup.h); TUNEKIT_MALLOC=system for glibc's
  try {
    const Args a = parse_args(argc, argv);
    const Output out(a.json);
    if (a.print_core) {
      std::cout << bench::blas_core_label() << std::endl;
      return 0;
    }
    adapters::set_fused_low_rank_enabled(a.fused_low_rank);
    return a.sgemm ? run_sgemm(a, out) : run_row(a, out);
  } catch (const Error& e) {
    std::cerr << "bench_llm: error: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "bench_llm: error: " << e.what_without_backtrace() << "\n";
    return 1;
  }
}
