// Generation benchmark (issue 16): a randomly initialised Llama-family model of a few million
// parameters, a prompt of --prompt random tokens, --new greedy tokens generated with the key/value
// cache (prefill once, one token per step) and without it (the whole context re-run each step),
// and --new single-token steps over a cache already at the final context. With the cache, the
// generation should cost about the single-token steps (ratio near 1); without it the cost grows
// with the square of the length, so no-cache / cache grows with --new (printed for --new/8,
// --new/4, --new/2 and --new).
//   bench_generate [--layers 4] [--hidden 256] [--heads 8] [--kv-heads 2] [--intermediate 688]
//                  [--vocab 4096] [--prompt 32] [--new 256] [--repeats 3] [--seed 0]
//                  [--torch-threads N] [--blas-threads N] [--json]
// Times are the median of --repeats runs. Random weights: speed only (the text means nothing).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "models/hf/families.h"
#include "models/hf/llama.h"
#include "models/lm.h"
#include "src/eval/generate.h"
#include "util/error.h"
#include "util/memory.h"
#include "util/startup.h"
#include "util/text.h"
#include "util/threads.h"

using namespace tunekit;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  int64_t layers = 4, hidden = 256, heads = 8, kv_heads = 2, intermediate = 688, vocab = 4096;
  int64_t prompt = 32, new_tokens = 256, repeats = 3, seed = 0;
  int torch_threads = 0, blas_threads = 0;
  bool json = false;
};

const char* kUsage =
    "usage: bench_generate [--layers 4] [--hidden 256] [--heads 8] [--kv-heads 2] [--intermediate 688]\n"
    "                      [--vocab 4096] [--prompt 32] [--new 256] [--repeats 3] [--seed 0]\n"
    "                      [--torch-threads N] [--blas-threads N] [--json]\n";

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto integer = [&]() -> int64_t {
      if (i + 1 >= argc) throw Error(fmt::format("bench_generate: {} needs a value\n{}", f, kUsage));
      return std::stoll(argv[++i]);
    };
    if (f == "--layers") a.layers = integer();
    else if (f == "--hidden") a.hidden = integer();
    else if (f == "--heads") a.heads = integer();
    else if (f == "--kv-heads") a.kv_heads = integer();
    else if (f == "--intermediate") a.intermediate = integer();
    else if (f == "--vocab") a.vocab = integer();
    else if (f == "--prompt") a.prompt = integer();
    else if (f == "--new") a.new_tokens = integer();
    else if (f == "--repeats") a.repeats = integer();
    else if (f == "--seed") a.seed = integer();
    else if (f == "--torch-threads") a.torch_threads = int(integer());
    else if (f == "--blas-threads") a.blas_threads = int(integer());
    else if (f == "--json") a.json = true;
    else throw Error(fmt::format("bench_generate: unknown flag {}\n{}", f, kUsage));
  }
  if (a.prompt < 1 || a.new_tokens < 8 || a.repeats < 1)
    throw Error("bench_generate: --prompt >= 1, --new >= 8 and --repeats >= 1");
  return a;
}

// Ids as text "<id> " (the benchmark never reads the text; generate() decodes it).
class IdBackend : public data::TokenizerBackend {
 public:
  explicit IdBackend(int64_t vocab) : vocab_(vocab) {}
  std::vector<int64_t> encode(const std::string&) const override { return {}; }
  std::string decode(const std::vector<int64_t>& ids, bool) const override {
    std::string out;
    for (int64_t id : ids) out += std::to_string(id) + " ";
    return out;
  }
  std::string piece(int64_t id) const override { return std::to_string(id); }
  int64_t token_id(const std::string&) const override { return -1; }
  int64_t vocab_size() const override { return vocab_; }
  bool is_special(int64_t) const override { return false; }

 private:
  int64_t vocab_;
};

double median_seconds(int64_t repeats, const std::function<void()>& f) {
  std::vector<double> t;
  for (int64_t r = 0; r < repeats; ++r) {
    auto start = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Generation {
  double seconds = 0;  // the whole generate_ids call: prefill + decode
  GenerateResult result;
};

Generation time_generation(models::Model& model, const data::Tokenizer& tok, const std::vector<int64_t>& prompt,
                           int64_t n, bool cache, int64_t repeats) {
  GenerateOptions o;
  o.temperature = 0;
  o.max_new_tokens = n;
  o.use_cache = cache;
  Generation g;
  g.seconds = median_seconds(repeats, [&] { g.result = generate_ids(model, tok, 0, prompt, o); });
  if (int64_t(g.result.new_ids.size()) != n)
    throw Error(fmt::format("bench_generate: {} tokens generated, {} asked", g.result.new_ids.size(), n));
  return g;
}

// `n` single-token forward_lm steps, each over the same cache of `ids` (the final context).
double time_single_steps(models::CausalLm& lm, const std::vector<int64_t>& ids, int64_t n, int64_t repeats) {
  torch::NoGradGuard no_grad;
  models::KvCache cache;
  models::LmInputs in;
  in.ids = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end() - 1), torch::kLong).unsqueeze(0);
  in.cache = &cache;
  in.last_only = true;
  lm.forward_lm(in);
  const int64_t length = cache.length;
  in.ids = torch::tensor({ids.back()}, torch::kLong).unsqueeze(0);
  return median_seconds(repeats, [&] {
    for (int64_t i = 0; i < n; ++i) {
      cache.length = length;  // the step's key/value lands in the same slot each time
      lm.forward_lm(in).select(0, 0).select(0, -1).argmax().item<int64_t>();
    }
  });
}

}  // namespace

int main(int argc, char** argv) try {
  if (!start_up(argv, "bench_generate")) return 2;  // as tunekit's main (util/startup.h)
  const Args a = parse_args(argc, argv);
  ThreadPolicy policy;
  if (a.torch_threads > 0) policy.torch = a.torch_threads;
  if (a.blas_threads > 0) policy.blas = a.blas_threads;
  const std::string threads = apply_thread_policy(policy);
  const int64_t context = a.prompt + a.new_tokens;
  auto model = models::hf::make_llama(models::hf::LlamaOptions()
                                          .vocab_size(a.vocab)
                                          .hidden_size(a.hidden)
                                          .intermediate_size(a.intermediate)
                                          .num_hidden_layers(a.layers)
                                          .num_attention_heads(a.heads)
                                          .num_key_value_heads(a.kv_heads)
                                          .max_position_embeddings(context));
  model->eval();
  auto& lm = *models::as_causal_lm(*model);
  data::Tokenizer tok(std::make_shared<IdBackend>(a.vocab), data::SpecialTokens{}, "ids", "", {});
  torch::manual_seed(a.seed);
  auto prompt_t = torch::randint(0, a.vocab, {a.prompt}, torch::kLong);
  std::vector<int64_t> prompt(prompt_t.data_ptr<int64_t>(), prompt_t.data_ptr<int64_t>() + a.prompt);
  std::cerr << model->describe() << "\n" << "threads: " << threads << "\n" << allocator_policy() << "\n";

  time_generation(*model, tok, prompt, 8, true, 1);  // warm-up
  nlohmann::json lengths = nlohmann::json::array();
  Generation cached_full, plain_full;
  for (int64_t n : {a.new_tokens / 8, a.new_tokens / 4, a.new_tokens / 2, a.new_tokens}) {
    auto cached = time_generation(*model, tok, prompt, n, true, a.repeats);
    auto plain = time_generation(*model, tok, prompt, n, false, std::min<int64_t>(a.repeats, n == a.new_tokens ? 1 : 3));
    if (cached.result.new_ids != plain.result.new_ids)  // a near-tie in float32 can flip one; say so
      std::cerr << fmt::format("note: greedy with and without the cache differ at {} new tokens\n", n);
    lengths.push_back({{"new_tokens", n}, {"cache_s", cached.seconds}, {"no_cache_s", plain.seconds},
                       {"cache_tokens_per_s", n / cached.seconds}, {"no_cache_tokens_per_s", n / plain.seconds},
                       {"no_cache_over_cache", plain.seconds / cached.seconds},
                       {"same_tokens", cached.result.new_ids == plain.result.new_ids}});
    std::cerr << fmt::format("{:4d} new tokens: cache {:.3f} s ({:.1f} tokens/s), no cache {:.3f} s ({:.1f} tokens/s), "
                             "no-cache / cache {:.2f}\n",
                             n, cached.seconds, n / cached.seconds, plain.seconds, n / plain.seconds,
                             plain.seconds / cached.seconds);
    if (n == a.new_tokens) cached_full = cached, plain_full = plain;
  }
  std::vector<int64_t> final_ids = prompt;
  final_ids.insert(final_ids.end(), cached_full.result.new_ids.begin(), cached_full.result.new_ids.end() - 1);
  const double steps = time_single_steps(lm, final_ids, a.new_tokens, a.repeats);
  const auto& r = cached_full.result;
  nlohmann::json out{{"what", "summary"},
                     {"model", model->describe()},
                     {"threads", threads}, {"allocator", allocator_policy()},
                     {"prompt_tokens", a.prompt},
                     {"new_tokens", a.new_tokens},
                     {"cache_s", cached_full.seconds},
                     {"cache_prefill_s", r.prefill_seconds},
                     {"cache_decode_s", r.decode_seconds},
                     {"cache_decode_tokens_per_s", r.tokens_per_second},
                     {"no_cache_s", plain_full.seconds},
                     {"single_steps_s", steps},
                     {"final_context", int64_t(final_ids.size())},
                     {"cache_over_single_steps", cached_full.seconds / steps},
                     {"no_cache_over_cache", plain_full.seconds / cached_full.seconds},
                     {"lengths", lengths}};
  std::cerr << fmt::format(
      "{} new tokens after a {}-token prompt (greedy; the same tokens both ways):\n"
      "  with the cache: {:.3f} s ({:.1f} tokens/s; prefill {:.4f} s, decode {:.1f} tokens/s)\n"
      "  without:        {:.3f} s ({:.1f} tokens/s)\n"
      "  {} single-token steps at the final context of {} tokens: {:.3f} s\n"
      "  cached generation / single-token steps: {:.2f}; no-cache / cache: {:.2f}\n",
      a.new_tokens, a.prompt, cached_full.seconds, a.new_tokens / cached_full.seconds, r.prefill_seconds,
      r.tokens_per_second, plain_full.seconds, a.new_tokens / plain_full.seconds, a.new_tokens, final_ids.size(), steps,
      cached_full.seconds / steps, plain_full.seconds / cached_full.seconds);
  if (a.json) std::cout << out.dump() << "\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << e.what() << "\n";
  return 1;
}
