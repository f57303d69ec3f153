// Activation checkpointing (models/checkpoint.h) on the Hugging Face causal LMs, and their
// forward_hidden / head split (models/lm.h): with checkpointing on, the loss and every gradient
// equal those of the plain forward (full training, LoRA on a frozen base, a shared HoRA
// hypernetwork, dropout replayed, accumulation, an AdamW curve); it is off where it must be; and
// forward_lm's logits are forward_hidden's states through head(), with segments and a cache.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "adapters/attach.h"
#include "models/checkpoint.h"
#include "models/hf/families.h"
#include "models/hf/gpt2.h"
#include "models/hf/llama.h"
#include "models/lm.h"
#include "src/from_recipe/adapters.h"
#include "util/error.h"
#include "util/memory.h"

using namespace tunekit;
using namespace tunekit::models;
using namespace tunekit::models::hf;

namespace {

constexpr int64_t kVocab = 40, kLayers = 3;

Gpt2Options gpt2_options(double dropout = 0) {
  return Gpt2Options().vocab_size(kVocab).n_positions(16).n_embd(24).n_layer(kLayers).n_head(4).dropout(dropout);
}

// Grouped-query attention, q/k/v biases; tied or with an lm_head of its own.
LlamaOptions llama_options(bool tied, double dropout = 0) {
  return LlamaOptions()
      .family(tied ? Family::Qwen2 : Family::Llama)
      .vocab_size(kVocab)
      .hidden_size(24)
      .intermediate_size(40)
      .num_hidden_layers(kLayers)
      .num_attention_heads(4)
      .num_key_value_heads(2)
      .head_dim(8)
      .rope_theta(500.0)
      .max_position_embeddings(16)
      .qkv_bias(true)
      .tie_word_embeddings(tied)
      .dropout(dropout);
}

struct Case {
  std::string name;
  std::function<std::shared_ptr<HfModel>(double dropout)> make;
  std::vector<std::string> lora_targets;
};

std::vector<Case> cases() {
  return {{"gpt2", [](double p) { return make_gpt2(gpt2_options(p)); },
           {"transformer.h.*.attn.c_attn", "transformer.h.*.mlp.c_fc"}},
          {"llama", [](double p) { return make_llama(llama_options(false, p)); },
           {"model.layers.*.self_attn.q_proj", "model.layers.*.self_attn.v_proj"}},
          {"qwen2-tied", [](double p) { return make_llama(llama_options(true, p)); },
           {"model.layers.*.self_attn.q_proj", "model.layers.*.mlp.down_proj"}}};
}

// Every parameter moved off its initial value (norms off one, biases off zero, LoRA's B off zero).
void randomise(torch::nn::Module& m, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.add_(torch::randn_like(p) * 0.2);
}

std::shared_ptr<HfModel> build(const Case& c, torch::ScalarType dtype, double dropout = 0, uint64_t seed = 3) {
  torch::manual_seed(seed);
  auto m = c.make(dropout);
  randomise(*m, seed + 1);
  m->to(dtype);
  return m;
}

void attach_lora(HfModel& m, const Case& c, torch::ScalarType dtype, double dropout = 0) {
  adapters::AttachOptions a(adapters::AdapterKind::Lora);
  a.targets(c.lora_targets).lora(adapters::LoraOptions(0, 0).r(2).alpha(4).dropout(dropout));
  adapters::attach_adapters(m, a);
  torch::manual_seed(9);
  torch::NoGradGuard no_grad;
  for (auto& p : m.named_parameters())
    if (p.key().find("lora_B") != std::string::npos) p.value().normal_(0, 0.3);
  m.to(dtype);
}

torch::Tensor ids_of(int64_t B, int64_t N, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(0, kVocab, {B, N}, torch::kLong);
}

// Mean next-token cross-entropy on forward_lm's logits.
torch::Tensor lm_loss(HfModel& m, const torch::Tensor& ids) {
  LmInputs in;
  in.ids = ids;
  auto logits = as_causal_lm(m)->forward_lm(in).slice(1, 0, -1);
  return torch::nn::functional::cross_entropy(logits.reshape({-1, kVocab}), ids.slice(1, 1).reshape(-1));
}

// The checkpoint nodes in the graph behind t.
int checkpoint_nodes(const torch::Tensor& t) {
  int count = 0;
  std::unordered_set<torch::autograd::Node*> seen;
  std::vector<torch::autograd::Node*> todo;
  if (t.grad_fn()) todo.push_back(t.grad_fn().get());
  while (!todo.empty()) {
    auto* n = todo.back();
    todo.pop_back();
    if (!seen.insert(n).second) continue;
    if (n->name().find("CheckpointFunction") != std::string::npos) ++count;
    for (const auto& e : n->next_edges())
      if (e.function) todo.push_back(e.function.get());
  }
  return count;
}

struct Grads {
  std::vector<double> losses;
  std::map<std::string, torch::Tensor> grads;  // every parameter requiring grad (undefined: none came)
  int checkpoints = 0;                         // checkpoint nodes behind the first loss
  torch::Tensor rng_after;                     // a draw from the CPU generator after the backward
};

// Runs `losses` (dropout seeded by `seed`) with checkpointing on or off, gradients accumulated
// from zero; each loss it returns is recorded, and back-propagated (in order) where it has a graph.
Grads run(HfModel& m, bool checkpointing, uint64_t seed, const std::function<std::vector<torch::Tensor>()>& losses) {
  m.set_activation_checkpointing(checkpointing);
  m.train();
  for (auto& p : m.parameters()) p.mutable_grad() = torch::Tensor();
  torch::manual_seed(seed);
  Grads g;
  auto ls = losses();
  g.checkpoints = checkpoint_nodes(ls.front());
  for (auto& l : ls) {
    g.losses.push_back(l.item<double>());
    if (l.requires_grad()) l.backward();
  }
  g.rng_after = torch::rand({4}, torch::kDouble);
  for (const auto& p : m.named_parameters())
    if (p.value().requires_grad()) g.grads[p.key()] = p.value().grad().defined() ? p.value().grad().clone() : torch::Tensor();
  return g;
}

Grads run_one(HfModel& m, bool checkpointing, const torch::Tensor& ids, uint64_t seed = 5) {
  return run(m, checkpointing, seed, [&] { return std::vector<torch::Tensor>{lm_loss(m, ids)}; });
}

double rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(b.abs().max().item<double>(), 1e-300);
}

// `with` (checkpointing) against `without`: the same losses and gradients within `tol` relative,
// every gradient of `without` defined and non-zero.
void expect_same(const Grads& with, const Grads& without, double tol, const std::string& what) {
  ASSERT_EQ(with.losses.size(), without.losses.size()) << what;
  for (size_t i = 0; i < with.losses.size(); ++i)
    EXPECT_NEAR(with.losses[i], without.losses[i], tol * std::abs(without.losses[i])) << what << " loss " << i;
  ASSERT_EQ(with.grads.size(), without.grads.size()) << what;
  ASSERT_FALSE(without.grads.empty()) << what;
  for (const auto& [name, ref] : without.grads) {
    const auto& got = with.grads.at(name);
    ASSERT_TRUE(ref.defined()) << what << ": " << name << " has no gradient without checkpointing";
    ASSERT_TRUE(got.defined()) << what << ": " << name << " lost its gradient under checkpointing";
    EXPECT_GT(ref.abs().max().item<double>(), 0) << what << ": " << name;
    EXPECT_LE(rel_diff(got, ref), tol) << what << ": " << name;
  }
  EXPECT_TRUE(torch::equal(with.rng_after, without.rng_after)) << what << ": the caller's random stream moved";
}

}  // namespace

TEST(Checkpointing, FullTrainingGradientsEqualThePlainForward) {
  for (const auto& c : cases())
    for (auto [dtype, tol] : {std::pair{torch::kDouble, 1e-6}, std::pair{torch::kFloat, 1e-5}}) {
      auto m = build(c, dtype);
      auto ids = ids_of(3, 10, 1);
      auto without = run_one(*m, false, ids), with = run_one(*m, true, ids);
      EXPECT_EQ(without.checkpoints, 0);
      EXPECT_EQ(with.checkpoints, kLayers) << c.name;
      EXPECT_TRUE(m->activation_checkpointing());
      expect_same(with, without, tol, c.name + (dtype == torch::kDouble ? " double" : " float"));
    }
}

TEST(Checkpointing, LoraOnAFrozenBaseGetsItsGradients) {
  for (const auto& c : cases()) {
    auto m = build(c, torch::kDouble);
    attach_lora(*m, c, torch::kDouble);
    // The base (embeddings included) is frozen: the first block's input does not require grad,
    // only the adapters inside the blocks do.
    for (const auto& p : m->named_parameters())
      EXPECT_EQ(p.value().requires_grad(), p.key().find("lora_") != std::string::npos) << p.key();
    auto ids = ids_of(2, 12, 2);
    auto without = run_one(*m, false, ids), with = run_one(*m, true, ids);
    EXPECT_EQ(with.checkpoints, kLayers) << c.name;
    EXPECT_EQ(without.grads.size(), 2u * 2u * kLayers) << c.name;  // lora_A, lora_B on 2 targets per layer
    expect_same(with, without, 1e-6, c.name + " lora");
  }
}

TEST(Checkpointing, SharedHypernetworkOutsideTheBlocksGetsItsGradients) {
  // HoRA's generators are registered at the model's root (hypernets.*), not inside a layer: the
  // checkpoint must still return their gradients.
  AdapterConfig cfg;
  cfg.kind = adapters::AdapterKind::Hora;
  cfg.r = 2;
  cfg.alpha = 4;
  cfg.targets = {"model.layers.*.self_attn.q_proj", "model.layers.*.self_attn.v_proj"};
  cfg.hypernet.embed = 3;
  cfg.hypernet.hidden = 5;
  auto c = cases()[1];
  auto m = build(c, torch::kDouble);
  adapters::attach_adapters(*m, from_recipe::attach_options(cfg));
  randomise(*m, 12);  // every W2_B off zero
  m->to(torch::kDouble);
  int hypernet = 0;
  for (const auto& p : m->named_parameters())
    if (p.value().requires_grad()) {
      EXPECT_EQ(p.key().rfind("hypernets.", 0), 0u) << p.key();
      ++hypernet;
    }
  EXPECT_GT(hypernet, 0);
  auto ids = ids_of(2, 9, 3);
  expect_same(run_one(*m, true, ids), run_one(*m, false, ids), 1e-6, "hora");
}

TEST(Checkpointing, DropoutMasksAreReplayedInTheBackward) {
  for (const auto& c : cases()) {
    auto m = build(c, torch::kDouble, /*dropout=*/0.2);
    auto ids = ids_of(2, 12, 4);
    auto without = run_one(*m, false, ids, 21), with = run_one(*m, true, ids, 21);
    expect_same(with, without, 1e-6, c.name + " dropout");
    // Dropout is live: another seed gives another loss.
    EXPECT_GT(std::abs(run_one(*m, false, ids, 22).losses[0] - without.losses[0]), 1e-6) << c.name;
    // LoRA's own dropout on a frozen base too.
    auto lora = build(c, torch::kDouble, 0.1);
    attach_lora(*lora, c, torch::kDouble, /*dropout=*/0.3);
    expect_same(run_one(*lora, true, ids, 23), run_one(*lora, false, ids, 23), 1e-6, c.name + " lora dropout");
  }
}

TEST(Checkpointing, GradientsAccumulateOverTwoBackwardCalls) {
  for (const auto& c : cases()) {
    auto m = build(c, torch::kDouble, /*dropout=*/0.1);
    auto a = ids_of(2, 11, 5), b = ids_of(3, 7, 6);
    // Forward, backward, forward, backward (the trainer's accumulation).
    auto accumulate = [&](bool on) {
      return run(*m, on, 31, [&] {
        auto la = lm_loss(*m, a);
        la.backward();  // the first backward; the second runs in run()
        std::vector<torch::Tensor> out{la.detach(), lm_loss(*m, b)};
        return out;
      });
    };
    auto with = accumulate(true), without = accumulate(false);
    expect_same(with, without, 1e-6, c.name + " accumulation");
    // Both forwards first, then the backwards in reverse order: each checkpoint replays its own
    // forward's random state.
    auto interleaved = [&](bool on) {
      return run(*m, on, 32, [&] {
        auto la = lm_loss(*m, a), lb = lm_loss(*m, b);
        lb.backward();
        std::vector<torch::Tensor> out{lb.detach(), la};
        return out;
      });
    };
    expect_same(interleaved(true), interleaved(false), 1e-6, c.name + " interleaved");
  }
}

TEST(Checkpointing, AdamWLossCurveIsTheSame) {
  for (const auto& c : cases()) {
    auto curve = [&](bool on) {
      auto m = build(c, torch::kFloat, /*dropout=*/0.1);
      m->set_activation_checkpointing(on);
      m->train();
      torch::optim::AdamW opt(m->parameters(), torch::optim::AdamWOptions(3e-2).weight_decay(0.01));
      auto ids = ids_of(4, 12, 7);
      torch::manual_seed(41);
      std::vector<double> losses;
      for (int step = 0; step < 5; ++step) {
        opt.zero_grad();
        auto loss = lm_loss(*m, ids);
        EXPECT_EQ(checkpoint_nodes(loss), on ? kLayers : 0);
        loss.backward();
        opt.step();
        losses.push_back(loss.item<double>());
      }
      return losses;
    };
    auto with = curve(true), without = curve(false);
    for (size_t i = 0; i < with.size(); ++i) EXPECT_NEAR(with[i], without[i], 1e-5 * without[i]) << c.name << " step " << i;
    EXPECT_LT(without.back(), without.front() - 0.1) << c.name << ": the curve must go down";
  }
}

TEST(Checkpointing, OffInEvalWithoutGradAndWithACache) {
  for (const auto& c : cases()) {
    auto m = build(c, torch::kFloat);
    m->set_activation_checkpointing(true);
    auto ids = ids_of(2, 6, 8);
    m->train();
    EXPECT_EQ(checkpoint_nodes(lm_loss(*m, ids)), kLayers);
    {
      torch::NoGradGuard no_grad;
      EXPECT_FALSE(lm_loss(*m, ids).requires_grad());
    }
    // A cached step writes the cache: never checkpointed, and the cache fills as without.
    KvCache cache;
    LmInputs in;
    in.ids = ids;
    in.cache = &cache;
    EXPECT_EQ(checkpoint_nodes(as_causal_lm(*m)->forward_lm(in)), 0);
    EXPECT_EQ(cache.length, 6);
    m->eval();
    auto loss = lm_loss(*m, ids);
    EXPECT_TRUE(loss.requires_grad());
    EXPECT_EQ(checkpoint_nodes(loss), 0);
    m->set_activation_checkpointing(false);
    EXPECT_FALSE(m->activation_checkpointing());
    m->train();
    EXPECT_EQ(checkpoint_nodes(lm_loss(*m, ids)), 0);
  }
  // A model without it refuses in one line.
  auto vit = make_vit(VitOptions().image_size(8).patch_size(4).num_channels(1).hidden_size(8).num_hidden_layers(1)
                          .num_attention_heads(2).intermediate_size(16).num_labels(3));
  try {
    vit->set_activation_checkpointing(true);
    ADD_FAILURE() << "vit accepted activation checkpointing";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("activation checkpointing"), std::string::npos) << e.what();
  }
}

TEST(Checkpointing, DoubleBackwardIsRefusedInOneLine) {
  auto m = build(cases()[0], torch::kDouble);
  m->set_activation_checkpointing(true);
  m->train();
  auto loss = lm_loss(*m, ids_of(2, 5, 9));
  std::string message;
  try {
    torch::autograd::grad({loss}, m->parameters(), {}, /*retain_graph=*/true, /*create_graph=*/true);
  } catch (const std::exception& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("activation checkpointing"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

TEST(Checkpointing, CheckpointedIsTheBlockWhereNothingNeedsGrad) {
  auto w = torch::randn({4, 4}, torch::kDouble);
  auto x = torch::randn({2, 4}, torch::kDouble);
  auto y = checkpointed([&](const torch::Tensor& t) { return torch::tanh(torch::matmul(t, w)); }, x, {w});
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(torch::equal(y, torch::tanh(torch::matmul(x, w))));
  // x requiring grad, no parameters: dy/dx as the equations give it.
  auto xr = x.clone().requires_grad_(true);
  auto yr = checkpointed([&](const torch::Tensor& t) { return torch::tanh(torch::matmul(t, w)); }, xr, {});
  yr.sum().backward();
  auto expect = torch::matmul(1 - torch::tanh(torch::matmul(x, w)).pow(2), w.t());
  EXPECT_LE(rel_diff(xr.grad(), expect), 1e-12);
}

TEST(LmHead, ForwardLmIsForwardHiddenThroughTheHead) {
  for (const auto& c : cases()) {
    auto m = build(c, torch::kFloat);
    m->eval();
    auto* lm = as_causal_lm(*m);
    auto check = [&](LmInputs in, KvCache* a, KvCache* b, const std::string& what) -> torch::Tensor {
      in.cache = a;
      auto logits = lm->forward_lm(in);
      in.cache = b;
      auto head = lm->head();
      if (!head.weight.defined()) {
        ADD_FAILURE() << c.name << ": no plain head";
        return logits;
      }
      auto via_hidden = torch::linear(lm->forward_hidden(in), head.weight, head.bias);
      EXPECT_TRUE(torch::equal(logits, via_hidden)) << c.name << " " << what;
      return logits;
    };
    auto ids = ids_of(2, 9, 10);
    LmInputs in;
    in.ids = ids;
    auto full = check(in, nullptr, nullptr, "plain");
    EXPECT_TRUE(torch::equal(full, m->forward(ids))) << c.name;
    in.segments = torch::tensor({0, 0, 0, 1, 1, 1, 1, 2, 2}, torch::kLong).repeat({2, 1});
    check(in, nullptr, nullptr, "segments");
    // A cache: prefill 6 tokens, then one step reading the last logits only.
    KvCache a, b;
    in.segments = torch::Tensor();
    in.ids = ids.slice(1, 0, 6);
    check(in, &a, &b, "prefill");
    in.ids = ids.slice(1, 6, 7);
    in.last_only = true;
    auto step = check(in, &a, &b, "cached step");
    EXPECT_EQ(a.length, 7);
    EXPECT_EQ(b.length, 7);
    EXPECT_TRUE(torch::allclose(step, full.slice(1, 6, 7), 1e-4, 1e-5)) << c.name << ": the cached step";
  }
}

TEST(LmHead, HeadIsTheTiedEmbeddingOrLmHeadAndUndefinedUnderAnAdapter) {
  auto g = build(cases()[0], torch::kFloat);
  auto* gpt2 = dynamic_cast<Gpt2Impl*>(g.get());
  EXPECT_TRUE(gpt2->head().weight.is_same(gpt2->wte->weight));
  EXPECT_FALSE(gpt2->head().bias.defined());
  auto q = build(cases()[2], torch::kFloat);
  auto* qwen = dynamic_cast<LlamaImpl*>(q.get());
  EXPECT_TRUE(qwen->head().weight.is_same(qwen->embed_tokens->weight));
  auto l = build(cases()[1], torch::kFloat);
  auto* llama = dynamic_cast<LlamaImpl*>(l.get());
  EXPECT_TRUE(llama->head().weight.is_same(llama->lm_head->weight));
  EXPECT_FALSE(llama->head().bias.defined());
  adapters::AttachOptions a(adapters::AdapterKind::Lora);
  a.targets({"lm_head"}).lora(adapters::LoraOptions(0, 0).r(2).alpha(4));
  adapters::attach_adapters(*l, a);
  EXPECT_FALSE(llama->head().weight.defined());  // callers take forward_lm's logits
  llama->lm_head->merge();
  EXPECT_FALSE(llama->head().weight.defined());
}

// Measurements, not checks (run by hand, one configuration per process so that each has its own
// peak RSS): TUNEKIT_CKPT_BENCH="full|lora on|off" build/tunekit_tests
// --gtest_also_run_disabled_tests --gtest_filter=CheckpointingBench.*
// GPT-2-small's shape (d 768, 12 layers, 12 heads, vocab 32,000) at batch 4, context 256, AdamW.
TEST(CheckpointingBench, DISABLED_Gpt2SmallStep) {
  const char* env = std::getenv("TUNEKIT_CKPT_BENCH");
  const std::string mode = env ? env : "full off";
  const bool lora = mode.find("lora") != std::string::npos, on = mode.find("on") != std::string::npos;
  torch::manual_seed(0);
  auto m = make_gpt2(Gpt2Options().vocab_size(32000).n_positions(256).n_embd(768).n_layer(12).n_head(12));
  if (lora) {
    adapters::AttachOptions a(adapters::AdapterKind::Lora);
    a.targets({"transformer.h.*.attn.c_attn"}).lora(adapters::LoraOptions(0, 0).r(16).alpha(32));
    adapters::attach_adapters(*m, a);
  }
  m->set_activation_checkpointing(on);
  m->train();
  std::vector<torch::Tensor> trainable;
  for (const auto& p : m->parameters())
    if (p.requires_grad()) trainable.push_back(p);
  torch::optim::AdamW opt(trainable, torch::optim::AdamWOptions(1e-4));
  auto ids = torch::randint(0, 32000, {4, 256}, torch::kLong);
  auto step = [&] {
    opt.zero_grad();
    LmInputs in;
    in.ids = ids;
    auto logits = as_causal_lm(*m)->forward_lm(in).slice(1, 0, -1);
    auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, 32000}), ids.slice(1, 1).reshape(-1));
    logits = torch::Tensor();
    loss.backward();
    opt.step();
    return loss.item<double>();
  };
  step();  // gradients and AdamW's moments exist from here on
  const double before = peak_rss_mib();
  reset_peak_rss();
  const int steps = 3;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / steps;
  std::printf("checkpointing bench (%s): %.2f s/step, peak RSS %.0f MiB (first step's peak %.0f MiB), %d threads\n",
              mode.c_str(), seconds, peak_rss_mib(), before, torch::get_num_threads());
}
