// Generation (src/eval/generate.h, sampling.h) and the CausalLm side of the Hugging Face
// families (models/lm.h): forward_lm over a key/value cache, token by token, against forward()
// over the whole sequence; packed segments against each example alone; greedy generation with
// the cache against the context re-run every step (with LoRA attached unmerged); top-k, top-p,
// temperature and the repetition penalty on distributions computed here; stop ids and strings.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "adapters/attach.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "models/hf/families.h"
#include "models/hf/gpt2.h"
#include "models/hf/llama.h"
#include "models/lm.h"
#include "src/eval/generate.h"
#include "src/eval/sampling.h"
#include "tests/helpers.h"
#include "tests/tiny_hf.h"
#include "util/error.h"

using namespace tunekit;
using namespace tunekit::models::hf;

namespace {

constexpr int64_t kVocab = 50;

// Weights at a scale where attention is far from uniform and logits far from ties: matrices
// N(0, 1/fan_in), norm weights 1 + N(0, 0.1^2), other vectors N(0, 0.1^2).
void randomise(torch::nn::Module& m, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard g;
  for (auto& p : m.named_parameters()) {
    auto& t = p.value();
    const std::string& n = p.key();
    const bool norm = n.find("norm") != std::string::npos || n.find("ln_") != std::string::npos;
    if (t.dim() == 1 && norm && n.size() > 6 && n.compare(n.size() - 6, 6, "weight") == 0)
      t.copy_(1 + 0.1 * torch::randn_like(t));
    else if (t.dim() <= 1)
      t.copy_(0.1 * torch::randn_like(t));
    else
      t.copy_(torch::randn_like(t) / std::sqrt(double(t.numel() / t.size(0))));
  }
}

Gpt2Options tiny_gpt2(int64_t positions = 64) {
  return Gpt2Options().vocab_size(kVocab).n_positions(positions).n_embd(32).n_layer(2).n_head(4);
}
// Grouped-query attention: 4 query heads on 2 key/value heads, head_dim 12 != 32 / 4.
LlamaOptions tiny_llama(int64_t positions = 64) {
  return testkit::tiny_llama_options(kVocab, positions).head_dim(12).rope_theta(500.0);
}
// Qwen2: q/k/v biases, one key/value head, tied head.
LlamaOptions tiny_qwen2(int64_t positions = 64) {
  return LlamaOptions()
      .family(Family::Qwen2)
      .vocab_size(kVocab)
      .hidden_size(32)
      .intermediate_size(40)
      .num_hidden_layers(2)
      .num_attention_heads(4)
      .num_key_value_heads(1)
      .rope_theta(1000000.0)
      .max_position_embeddings(positions)
      .qkv_bias(true)
      .tie_word_embeddings(true);
}

struct Case {
  std::string name;
  std::shared_ptr<HfModel> model;
};

std::vector<Case> families(uint64_t seed = 3) {
  std::vector<Case> out{{"llama-gqa", make_llama(tiny_llama())}, {"qwen2", make_llama(tiny_qwen2())},
                        {"gpt2", make_gpt2(tiny_gpt2())}};
  for (auto& c : out) {
    randomise(*c.model, seed);
    c.model->eval();
  }
  return out;
}

models::CausalLm& lm_of(HfModel& m) {
  auto* lm = models::as_causal_lm(m);
  if (!lm) throw std::runtime_error("not a CausalLm");
  return *lm;
}

torch::Tensor sample_ids(int64_t B, int64_t N, uint64_t seed = 11) {
  torch::manual_seed(seed);
  return torch::randint(0, kVocab, {B, N}, torch::kLong);
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// Logits of `ids` fed through forward_lm over a cache in chunks of the given sizes (summing to N).
torch::Tensor cached_logits(models::CausalLm& lm, const torch::Tensor& ids, const std::vector<int64_t>& chunks) {
  models::KvCache cache;
  std::vector<torch::Tensor> parts;
  int64_t at = 0;
  for (int64_t n : chunks) {
    models::LmInputs in;
    in.ids = ids.slice(1, at, at + n);
    in.cache = &cache;
    parts.push_back(lm.forward_lm(in));
    at += n;
    EXPECT_EQ(cache.length, at);
  }
  return torch::cat(parts, 1);
}

// A character tokenizer over kVocab ids: id i is the character '0' + i ('0'..'a'); it makes the
// stop-string tests readable. `stop` are the ids generation stops at.
class CharBackend : public data::TokenizerBackend {
 public:
  std::vector<int64_t> encode(const std::string& text) const override {
    std::vector<int64_t> out;
    for (char c : text)
      if (c >= '0' && c < '0' + kVocab) out.push_back(c - '0');
    return out;
  }
  std::string decode(const std::vector<int64_t>& ids, bool) const override {
    std::string out;
    for (int64_t id : ids)
      if (id >= 0 && id < kVocab) out += char('0' + id);
    return out;
  }
  std::string piece(int64_t id) const override { return id >= 0 && id < kVocab ? std::string(1, char('0' + id)) : ""; }
  int64_t token_id(const std::string& p) const override { return p.size() == 1 ? encode(p).at(0) : -1; }
  int64_t vocab_size() const override { return kVocab; }
  bool is_special(int64_t) const override { return false; }
};

data::Tokenizer char_tokenizer(std::vector<int64_t> stop = {}) {
  data::SpecialTokens special;
  special.stop = std::move(stop);
  if (!special.stop.empty()) special.eos = special.stop.front();
  return data::Tokenizer(std::make_shared<CharBackend>(), special, "test-chars", "", {});
}

GenerateOptions greedy(int64_t n) {
  GenerateOptions o;
  o.temperature = 0;
  o.max_new_tokens = n;
  return o;
}

const std::vector<int64_t> kPrompt{7, 3, 41, 12, 30};

}  // namespace

TEST(GenerateCache, ForwardLmWithoutCacheOrSegmentsIsForward) {
  for (auto& c : families()) {
    SCOPED_TRACE(c.name);
    torch::NoGradGuard g;
    auto ids = sample_ids(2, 9);
    models::LmInputs in;
    in.ids = ids;
    EXPECT_TRUE(torch::equal(lm_of(*c.model).forward_lm(in), c.model->forward(ids)));
    in.last_only = true;
    // The head over one row per sequence: the same values up to the BLAS kernel's rounding (a
    // one-row product need not round like the same row inside a larger one).
    EXPECT_TRUE(torch::allclose(lm_of(*c.model).forward_lm(in), c.model->forward(ids).slice(1, 8), 1e-6, 1e-6));
    EXPECT_EQ(lm_of(*c.model).context_length(), 64);
  }
}

TEST(GenerateCache, TokenByTokenOverTheCacheGivesForwardsLogits) {
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    for (auto& c : families()) {
      SCOPED_TRACE(c.name + (dtype == torch::kDouble ? " double" : " float32"));
      c.model->to(dtype);
      torch::NoGradGuard g;
      auto ids = sample_ids(2, 20);
      auto full = c.model->forward(ids);
      auto& lm = lm_of(*c.model);
      auto one_by_one = cached_logits(lm, ids, std::vector<int64_t>(20, 1));
      const double tol = dtype == torch::kDouble ? 1e-12 : 1e-5;
      EXPECT_LE(max_diff(one_by_one, full), tol);
      EXPECT_LE(max_diff(cached_logits(lm, ids, {7, 1, 1, 5, 6}), full), tol);  // a prefill, steps, chunks
      EXPECT_GT(full.abs().max().item<double>(), 1.0);  // logits of a real scale, not all near 0
    }
  }
}

TEST(GenerateCache, EveryAttentionVariantGivesTheSameLogitsWithTheCache) {
  std::vector<std::pair<std::string, models::AttentionVariant>> variants;
  models::AttentionVariant v;
  v.score = models::Score::Sigmoid;
  variants.push_back({"sigmoid auto bias", v});
  v.bias_mode = models::SigmoidBias::Learnable;
  v.gate = models::Gate::Value;
  variants.push_back({"sigmoid learnable + value gate", v});
  v = {};
  v.gate = models::Gate::SdpaElementwise;
  v.qk_norm = true;
  variants.push_back({"elementwise gate + qk_norm", v});
  v = {};
  v.gate = models::Gate::SdpaHeadwise;
  variants.push_back({"headwise gate", v});
  for (const auto& [name, variant] : variants) {
    for (bool gpt2 : {false, true}) {
      SCOPED_TRACE(name + (gpt2 ? " gpt2" : " llama"));
      std::shared_ptr<HfModel> m = gpt2 ? make_gpt2(tiny_gpt2().attention(variant))
                                        : make_llama(tiny_llama().attention(variant));
      randomise(*m, 5);
      m->eval();
      torch::NoGradGuard g;
      auto ids = sample_ids(2, 16, 4);
      auto full = m->forward(ids);
      EXPECT_LE(max_diff(cached_logits(lm_of(*m), ids, std::vector<int64_t>(16, 1)), full), 1e-5);
      EXPECT_LE(max_diff(cached_logits(lm_of(*m), ids, {9, 7}), full), 1e-5);
    }
  }
}

TEST(GenerateCache, PackedSegmentsGiveEachExamplesOwnLogits) {
  for (auto& c : families()) {
    SCOPED_TRACE(c.name);
    torch::NoGradGuard g;
    // Row 0 packs examples of 4, 6 and 3 tokens, row 1 of 9 and 4 (segment ids need only be non-decreasing).
    const std::vector<std::vector<int64_t>> lengths{{4, 6, 3}, {9, 4}};
    auto ids = sample_ids(2, 13, 7);
    auto segments = torch::zeros({2, 13}, torch::kLong);
    for (int64_t b = 0; b < 2; ++b) {
      int64_t at = 0, seg = 2 * b;
      for (int64_t n : lengths[b]) segments[b].slice(0, at, at + n).fill_(seg++), at += n;
    }
    models::LmInputs in;
    in.ids = ids;
    in.segments = segments;
    auto packed = lm_of(*c.model).forward_lm(in);
    for (int64_t b = 0; b < 2; ++b) {
      int64_t at = 0;
      for (int64_t n : lengths[b]) {
        auto alone = c.model->forward(ids.slice(0, b, b + 1).slice(1, at, at + n));
        EXPECT_LE(max_diff(packed.slice(0, b, b + 1).slice(1, at, at + n), alone), 1e-5) << "row " << b << " at " << at;
        at += n;
      }
    }
    // Without the segments the later examples see the earlier ones: the logits differ.
    EXPECT_GT(max_diff(c.model->forward(ids).slice(1, 4, 10), packed.slice(1, 4, 10)), 1e-3);
  }
  auto pos = segment_positions(torch::tensor({0, 0, 0, 1, 1, 4, 4, 4, 4}, torch::kLong).unsqueeze(0));
  EXPECT_TRUE(torch::equal(pos, torch::tensor({0, 1, 2, 0, 1, 0, 1, 2, 3}, torch::kLong).unsqueeze(0)));
}

TEST(GenerateCache, ClearErrors) {
  auto m = make_llama(tiny_llama(8));
  auto& lm = lm_of(*m);
  torch::NoGradGuard g;
  models::KvCache cache;
  models::LmInputs in;
  in.ids = sample_ids(1, 6);
  in.cache = &cache;
  lm.forward_lm(in);
  in.ids = sample_ids(1, 3);
  auto full = testkit::error_of([&] { lm.forward_lm(in); });
  EXPECT_NE(full.find("context is full: 6 cached tokens + 3 new exceed the model's 8 positions"), std::string::npos) << full;
  EXPECT_EQ(cache.length, 6);
  in.ids = sample_ids(2, 1);
  EXPECT_NE(testkit::error_of([&] { lm.forward_lm(in); }).find("batch of 1"), std::string::npos);
  in.ids = sample_ids(1, 4);
  in.segments = torch::zeros({1, 4}, torch::kLong);
  EXPECT_NE(testkit::error_of([&] { lm.forward_lm(in); }).find("cannot be combined"), std::string::npos);
  in.cache = nullptr;
  in.segments = torch::tensor({0, 1, 1, 0}, torch::kLong).unsqueeze(0);
  EXPECT_NE(testkit::error_of([&] { lm.forward_lm(in); }).find("non-decreasing"), std::string::npos);
  in.segments = torch::zeros({1, 3}, torch::kLong);
  EXPECT_NE(testkit::error_of([&] { lm.forward_lm(in); }).find("segments must be int64 of the ids' shape"),
            std::string::npos);
  // A cache filled by another model.
  auto other = make_gpt2(tiny_gpt2().n_layer(3));
  in.segments = torch::Tensor();
  in.cache = &cache;
  in.ids = sample_ids(1, 1);
  EXPECT_NE(testkit::error_of([&] { lm_of(*other).forward_lm(in); }).find("the cache holds 2 layers, the model has 3"),
            std::string::npos);
  // The prompt longer than the context.
  auto tok = char_tokenizer();
  auto long_prompt = std::vector<int64_t>(9, 1);
  EXPECT_NE(testkit::error_of([&] { generate_ids(*m, tok, 0, long_prompt, greedy(3)); }).find("more than the model's context of 8"),
            std::string::npos);
  GenerateOptions bad = greedy(3);
  bad.top_p = 0;
  EXPECT_NE(testkit::error_of([&] { generate_ids(*m, tok, 0, kPrompt, bad); }).find("top-p 0 must be in (0, 1]"),
            std::string::npos);
}

TEST(Generate, GreedyWithTheCacheEqualsTheReRunTokenForToken) {
  auto tok = char_tokenizer();
  for (auto& c : families()) {
    SCOPED_TRACE(c.name);
    auto cached = generate_ids(*c.model, tok, 0, kPrompt, greedy(45));
    auto o = greedy(45);
    o.use_cache = false;
    auto rerun = generate_ids(*c.model, tok, 0, kPrompt, o);
    EXPECT_TRUE(cached.used_cache);
    EXPECT_FALSE(rerun.used_cache);
    ASSERT_EQ(cached.new_ids.size(), 45u);
    EXPECT_EQ(cached.new_ids, rerun.new_ids);
    EXPECT_EQ(cached.stop_reason, "max_new_tokens");
    EXPECT_EQ(cached.decode_steps, 44);
    EXPECT_GT(cached.tokens_per_second, 0);
    EXPECT_EQ(cached.text, tok.decode(kPrompt) + cached.continuation);
    // Greedy with the repetition penalty leaves a loop of two tokens (Qwen2's tied head falls
    // into one): many distinct tokens, the same both ways.
    auto p = greedy(45);
    p.repetition_penalty = 4.0;
    auto cached_p = generate_ids(*c.model, tok, 0, kPrompt, p);
    p.use_cache = false;
    EXPECT_EQ(cached_p.new_ids, generate_ids(*c.model, tok, 0, kPrompt, p).new_ids);
    std::set<int64_t> distinct(cached_p.new_ids.begin(), cached_p.new_ids.end());
    EXPECT_GT(distinct.size(), 8u);  // not a token or two repeated: the comparison means something
  }
}

TEST(Generate, GreedyWithLoraAttachedUnmergedEqualsTheReRun) {
  auto tok = char_tokenizer();
  for (auto& c : families()) {
    SCOPED_TRACE(c.name);
    auto base = generate_ids(*c.model, tok, 0, kPrompt, greedy(40));
    adapters::AttachOptions a(adapters::AdapterKind::Lora);
    a.targets({c.name == "gpt2" ? "c_attn" : "q_proj", c.name == "gpt2" ? "c_fc" : "v_proj"})
        .lora(adapters::LoraOptions(0, 0).r(4).alpha(8));
    adapters::attach_adapters(*c.model, a);
    {
      torch::NoGradGuard g;
      torch::manual_seed(9);
      for (auto& p : c.model->named_parameters())
        if (p.key().find("lora_B") != std::string::npos) p.value().normal_(0, 0.5);
    }
    auto cached = generate_ids(*c.model, tok, 0, kPrompt, greedy(40));
    auto o = greedy(40);
    o.use_cache = false;
    auto rerun = generate_ids(*c.model, tok, 0, kPrompt, o);
    ASSERT_EQ(cached.new_ids.size(), 40u);
    EXPECT_EQ(cached.new_ids, rerun.new_ids);
    EXPECT_NE(cached.new_ids, base.new_ids);  // the adapter is applied
    // With the repetition penalty too (the penalised context is the same both ways).
    o.repetition_penalty = 1.5;
    auto rerun_penalised = generate_ids(*c.model, tok, 0, kPrompt, o);
    o.use_cache = true;
    EXPECT_EQ(generate_ids(*c.model, tok, 0, kPrompt, o).new_ids, rerun_penalised.new_ids);
  }
}

TEST(Generate, ContextFullStopsWithItsReason) {
  auto m = make_llama(tiny_llama(12));
  randomise(*m, 2);
  auto tok = char_tokenizer();
  for (bool cache : {true, false}) {
    auto o = greedy(50);
    o.use_cache = cache;
    auto r = generate_ids(*m, tok, 0, kPrompt, o);
    EXPECT_EQ(r.stop_reason, "context");
    EXPECT_EQ(r.new_ids.size(), 7u);  // 5 + 7 = the 12 positions
  }
  auto r = generate_ids(*m, tok, 8, kPrompt, greedy(50));  // a shorter context asked for
  EXPECT_EQ(r.new_ids.size(), 3u);
}

TEST(Generate, StopIdsAndStopStrings) {
  auto m = make_llama(tiny_llama());
  randomise(*m, 4);
  auto free_run = generate_ids(*m, char_tokenizer(), 0, kPrompt, greedy(30));
  ASSERT_EQ(free_run.new_ids.size(), 30u);
  // Stop at the id generated 6th: generation ends at its first occurrence, without it.
  const int64_t stop_id = free_run.new_ids[5];
  size_t first = 0;
  while (free_run.new_ids[first] != stop_id) ++first;
  auto stopped = generate_ids(*m, char_tokenizer({99, stop_id}), 0, kPrompt, greedy(30));
  EXPECT_EQ(stopped.stop_reason, "eos");
  EXPECT_TRUE(stopped.stopped_at_eos);
  EXPECT_EQ(stopped.new_ids, std::vector<int64_t>(free_run.new_ids.begin(), free_run.new_ids.begin() + first));
  // A stop string made of generated tokens 10..11: the continuation is cut before its first occurrence.
  const std::string stop = free_run.continuation.substr(10, 2);
  auto o = greedy(30);
  o.stop = {"never-generated", stop};
  auto cut = generate_ids(*m, char_tokenizer(), 0, kPrompt, o);
  const size_t at = free_run.continuation.find(stop);
  EXPECT_EQ(cut.stop_reason, "stop string");
  EXPECT_EQ(cut.continuation, free_run.continuation.substr(0, at));
  EXPECT_EQ(cut.text, char_tokenizer().decode(kPrompt) + cut.continuation);
  EXPECT_LE(cut.new_ids.size(), at + 2);
}

TEST(Generate, SeededSamplingRepeats) {
  auto m = make_gpt2(tiny_gpt2());
  randomise(*m, 8);
  auto tok = char_tokenizer();
  GenerateOptions o;
  o.max_new_tokens = 30;
  o.temperature = 1.2;
  o.top_k = 20;
  o.top_p = 0.95;
  o.seed = 17;
  auto a = generate_ids(*m, tok, 0, kPrompt, o);
  auto b = generate_ids(*m, tok, 0, kPrompt, o);
  EXPECT_EQ(a.new_ids, b.new_ids);
  o.use_cache = false;
  EXPECT_EQ(generate_ids(*m, tok, 0, kPrompt, o).new_ids, a.new_ids);  // the same draws without the cache
  o.use_cache = true;
  o.seed = 18;
  EXPECT_NE(generate_ids(*m, tok, 0, kPrompt, o).new_ids, a.new_ids);
}

// ---- sampling rules on distributions computed here ----

namespace {
std::vector<double> softmax_of(const std::vector<double>& x) {
  double z = 0;
  for (double v : x) z += std::exp(v);
  std::vector<double> p;
  for (double v : x) p.push_back(std::exp(v) / z);
  return p;
}
void expect_probs(const torch::Tensor& got, const std::vector<double>& want) {
  ASSERT_EQ(got.numel(), int64_t(want.size()));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i].item<double>(), want[i], 1e-6) << "token " << i;
}
const std::vector<double> kLogits{2.0, 1.0, 0.5, -1.0, -3.0};
torch::Tensor logits_tensor() { return torch::tensor(kLogits, torch::kFloat); }
}  // namespace

TEST(Sampling, TemperatureScalesTheLogits) {
  SamplingOptions o;
  o.temperature = 0.5;
  expect_probs(sampling_distribution(logits_tensor(), {}, o), softmax_of({4.0, 2.0, 1.0, -2.0, -6.0}));
  o.temperature = 2.0;
  expect_probs(sampling_distribution(logits_tensor(), {}, o), softmax_of({1.0, 0.5, 0.25, -0.5, -1.5}));
}

TEST(Sampling, TopKKeepsTheKLargestAndRenormalises) {
  SamplingOptions o;
  o.top_k = 2;
  auto q = softmax_of({2.0, 1.0});
  expect_probs(sampling_distribution(logits_tensor(), {}, o), {q[0], q[1], 0, 0, 0});
  // Ties with the k-th largest survive (transformers' rule: remove only what is below it).
  auto tied = apply_top_k(torch::tensor({1.0f, 3.0f, 1.0f, 0.0f}), 2);
  EXPECT_TRUE(std::isinf(tied[3].item<float>()));
  EXPECT_EQ(tied[0].item<float>(), 1.0f);
  EXPECT_EQ(tied[2].item<float>(), 1.0f);
  EXPECT_TRUE(torch::equal(apply_top_k(logits_tensor(), 0), logits_tensor()));
}

TEST(Sampling, TopPKeepsTheSmallestSetReachingP) {
  const auto p = softmax_of(kLogits);  // p0 ~ 0.61, p1 ~ 0.22, p2 ~ 0.14
  auto nucleus = [&](double top_p) {
    SamplingOptions o;
    o.top_p = top_p;
    return sampling_distribution(logits_tensor(), {}, o);
  };
  expect_probs(nucleus(p[0] - 0.05), {1, 0, 0, 0, 0});  // the most likely alone already reaches p
  auto two = softmax_of({2.0, 1.0});
  expect_probs(nucleus(p[0] + 0.05), {two[0], two[1], 0, 0, 0});
  expect_probs(nucleus(p[0] + p[1] + 0.01), [&] {
    auto three = softmax_of({2.0, 1.0, 0.5});
    return std::vector<double>{three[0], three[1], three[2], 0, 0};
  }());
  expect_probs(nucleus(1.0), p);
  expect_probs(nucleus(1e-9), {1, 0, 0, 0, 0});  // at least one token
}

TEST(Sampling, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  auto out = apply_repetition_penalty(logits_tensor(), {0, 3, 3, 99}, 2.0);
  const std::vector<double> want{1.0, 1.0, 0.5, -2.0, -3.0};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_DOUBLE_EQ(out[i].item<float>(), want[i]);
  // Greedy picks after the penalty: token 1 overtakes the penalised token 0.
  SamplingOptions o;
  o.temperature = 0;
  o.repetition_penalty = 2.5;
  auto gen = data::seeded_generator(0);
  EXPECT_EQ(next_token(logits_tensor(), {0}, o, gen), 1);
  EXPECT_EQ(next_token(logits_tensor(), {}, o, gen), 0);
  // In the sampled distribution: penalty, then temperature, then top-k.
  o.temperature = 0.5;
  o.top_k = 3;
  auto q = softmax_of({0.8 / 0.5, 1.0 / 0.5, 0.5 / 0.5});
  expect_probs(sampling_distribution(logits_tensor(), {0}, o), {q[0], q[1], q[2], 0, 0});
}

TEST(Sampling, DrawsFollowTheDistribution) {
  SamplingOptions o;
  o.top_k = 3;
  auto want = sampling_distribution(logits_tensor(), {}, o);
  auto gen = data::seeded_generator(5);
  std::vector<double> counts(5, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) counts[next_token(logits_tensor(), {}, o, gen)] += 1.0 / n;
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(counts[i], want[i].item<double>(), 0.015) << "token " << i;
  EXPECT_EQ(counts[3] + counts[4], 0.0);
}

TEST(Generate, AnAdapterReadingTheWholeSequenceFallsBackToTheReRun) {
  auto m = std::dynamic_pointer_cast<LlamaImpl>(make_llama(tiny_llama()));
  ASSERT_TRUE(m);
  randomise(*m, 6);
  auto p = adapters::PromptExpertOptions(32, kVocab, adapters::GateOptions(32, 1)).gate_input(adapters::GateInput::Mean);
  m->lm_head->attach_output(std::make_shared<adapters::PromptExpertImpl>(p));
  models::KvCache cache;
  models::LmInputs in;
  in.ids = sample_ids(1, 4);
  in.cache = &cache;
  auto why = testkit::error_of([&] { m->forward_lm(in); });
  EXPECT_NE(why.find("prompt_expert on lm_head may read the whole sequence"), std::string::npos) << why;
  auto r = generate_ids(*m, char_tokenizer(), 0, kPrompt, greedy(6));
  EXPECT_FALSE(r.used_cache);
  EXPECT_EQ(r.no_cache_reason, why);
  EXPECT_EQ(r.new_ids.size(), 6u);
}

TEST(Generate, ChatPromptsAreRenderedWithTheTemplate) {
  auto tok = char_tokenizer({49});  // alpaca ends an answer with eos
  GenerateOptions o = greedy(3);
  o.prompt = "123";
  o.system = "9";
  o.chat = true;
  o.chat_template = data::ChatTemplate::Alpaca;
  const auto want = data::render_prompt(data::ChatTemplate::Alpaca, {{"system", "9"}, {"user", "123"}}, tok);
  EXPECT_EQ(prompt_ids(tok, o), want);
  auto m = make_gpt2(tiny_gpt2());
  EXPECT_EQ(generate(*m, tok, 0, o).prompt_ids, want);
  o.chat = false;
  EXPECT_EQ(prompt_ids(tok, o), (std::vector<int64_t>{1, 2, 3}));
  o.chat = true;
  o.chat_template = data::ChatTemplate::Auto;
  EXPECT_NE(testkit::error_of([&] { prompt_ids(tok, o); }).find("not auto"), std::string::npos);
}
