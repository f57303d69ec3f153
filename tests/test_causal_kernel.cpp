// The causal grouped-query attention kernel (models/attention_kernel.h causal_attention) against
// the attention equations written here with plain tensor ops (repeat_kv, an explicit visibility
// mask, softmax or sigmoid), forward and gradients, in double and float; finite differences; and
// whole GPT-2 / Llama models (forward, packed segments, prefill + decode, gradients, a short
// training run) with the kernel against the same models on the ATen path (the switch off).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "models/attention_kernel.h"
#include "models/hf/common.h"
#include "models/hf/families.h"
#include "models/lm.h"
#include "models/precision.h"
#include "tests/helpers.h"
#include "tests/tiny_hf.h"

using namespace tunekit;
using namespace tunekit::models;

namespace {

// Switches the kernel off for one scope.
struct AtenOnly {
  AtenOnly() { set_attention_kernel_enabled(false); }
  ~AtenOnly() { set_attention_kernel_enabled(true); }
};

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// The equations: head h reads key/value head h / R; query i sees keys j with start(i) <= j <= i;
// P = softmax over the visible keys, or sigmoid(S + b) there and 0 elsewhere; O = P V.
torch::Tensor reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t H, int64_t KV,
                        double scale, const torch::Tensor& starts, const torch::Tensor& bias) {
  const int64_t B = q.size(0), N = q.size(1), Dh = q.size(2) / H, R = H / KV;
  auto qh = q.view({B, N, H, Dh}).transpose(1, 2);
  auto kh = k.view({B, N, KV, Dh}).transpose(1, 2).repeat_interleave(R, 1);
  auto vh = v.view({B, N, KV, Dh}).transpose(1, 2).repeat_interleave(R, 1);
  auto s = torch::matmul(qh, kh.transpose(-2, -1)) * scale;  // [B, H, N, N]
  auto i = torch::arange(N, torch::kLong).view({1, N, 1}), j = torch::arange(N, torch::kLong).view({1, 1, N});
  auto first = starts.defined() ? starts.unsqueeze(2) : torch::zeros({B, N, 1}, torch::kLong);
  auto visible = ((j <= i) & (j >= first)).unsqueeze(1);  // [B, 1, N, N]
  auto p = bias.defined() ? torch::sigmoid(s + bias) * visible.to(s.scalar_type())
                          : s.masked_fill(visible.logical_not(), -INFINITY).softmax(-1);
  return torch::matmul(p, vh).transpose(1, 2).reshape({B, N, H * Dh});
}

struct Case {
  int64_t B, N, H, KV, Dh;
};

// Non-decreasing segment ids along each row with segments of random lengths 1..40.
torch::Tensor random_segments(int64_t B, int64_t N, uint64_t seed) {
  torch::manual_seed(seed);
  auto seg = torch::zeros({B, N}, torch::kLong);
  for (int64_t b = 0; b < B; ++b) {
    int64_t at = 0, id = 3 * b;
    while (at < N) {
      const int64_t n = std::min(N - at, torch::randint(1, 41, {1}).item<int64_t>());
      seg[b].slice(0, at, at + n).fill_(id++);
      at += n;
    }
  }
  return seg;
}

// Kernel vs reference: output and the gradients of q, k, v (and the bias) for a random upstream
// gradient; returns the largest difference relative to the reference's largest value.
double compare(const Case& c, torch::ScalarType dtype, const torch::Tensor& starts, bool sigmoid, uint64_t seed) {
  torch::manual_seed(seed);
  auto opts = torch::TensorOptions().dtype(dtype);
  auto q = torch::randn({c.B, c.N, c.H * c.Dh}, opts.requires_grad(true));
  auto k = torch::randn({c.B, c.N, c.KV * c.Dh}, opts.requires_grad(true));
  auto v = torch::randn({c.B, c.N, c.KV * c.Dh}, opts.requires_grad(true));
  auto bias = sigmoid ? torch::full({}, -1.5, opts.requires_grad(true)) : torch::Tensor();
  auto up = torch::randn({c.B, c.N, c.H * c.Dh}, opts);
  const double scale = 1.0 / std::sqrt(double(c.Dh));
  std::vector<torch::Tensor> inputs{q, k, v};
  if (sigmoid) inputs.push_back(bias);
  auto run = [&](bool kernel) {
    auto out = kernel ? causal_attention(q, k, v, c.H, c.KV, scale, starts, bias)
                      : reference(q.to(torch::kDouble), k.to(torch::kDouble), v.to(torch::kDouble), c.H, c.KV, scale,
                                  starts, sigmoid ? bias.to(torch::kDouble) : bias);
    auto grads = torch::autograd::grad({(out * up.to(out.scalar_type())).sum()}, inputs);
    grads.insert(grads.begin(), out);
    return grads;
  };
  auto got = run(true), want = run(false);
  double worst = 0;
  for (size_t t = 0; t < got.size(); ++t) {
    EXPECT_EQ(got[t].scalar_type(), dtype);
    const double size = std::max(1.0, want[t].abs().max().item<double>());
    worst = std::max(worst, max_diff(got[t], want[t]) / size);
  }
  return worst;
}

}  // namespace

TEST(CausalAttentionKernel, MatchesTheEquationsInDoubleAcrossGroupsAndBlockEdges) {
  // R = H / KV = 1, 2, 7; N below, at and across the 64-row blocks.
  for (const auto& [H, KV] : std::vector<std::pair<int64_t, int64_t>>{{2, 2}, {4, 2}, {7, 1}})
    for (int64_t N : {1, 63, 64, 65, 130}) {
      SCOPED_TRACE(testing::Message() << "H " << H << " KV " << KV << " N " << N);
      EXPECT_LE(compare({2, N, H, KV, 8}, torch::kDouble, {}, false, uint64_t(N + H)), 1e-10);
      EXPECT_LE(compare({1, N, H, KV, 8}, torch::kDouble, {}, true, uint64_t(N + H + 1)), 1e-10);
    }
}

TEST(CausalAttentionKernel, PackedSegmentsSeeOnlyTheirOwnEarlierTokens) {
  for (int64_t N : {7, 65, 130, 200}) {
    SCOPED_TRACE(N);
    auto seg = random_segments(3, N, uint64_t(N));
    auto starts = hf::segment_key_starts(seg);
    // The starts are the segment's first index, computed here directly.
    for (int64_t b = 0; b < 3; ++b)
      for (int64_t i = 0; i < N; ++i) {
        int64_t s = i;
        while (s > 0 && seg[b][s - 1].item<int64_t>() == seg[b][i].item<int64_t>()) --s;
        ASSERT_EQ(starts[b][i].item<int64_t>(), s);
      }
    EXPECT_LE(compare({3, N, 4, 2, 8}, torch::kDouble, starts, false, 5), 1e-10);
    EXPECT_LE(compare({3, N, 7, 1, 8}, torch::kDouble, starts, true, 6), 1e-10);
    // The ATen path's mask from the starts is the equations' visibility.
    auto mask = hf::key_starts_mask(starts);
    auto i = torch::arange(N).view({1, N, 1}), j = torch::arange(N).view({1, 1, N});
    auto same = seg.unsqueeze(2) == seg.unsqueeze(1);
    EXPECT_TRUE(torch::equal(mask, (same & (j <= i)).logical_not().unsqueeze(1)));
  }
}

TEST(CausalAttentionKernel, FloatWithinOneInAHundredThousand) {
  EXPECT_LE(compare({2, 130, 4, 2, 16}, torch::kFloat, {}, false, 1), 1e-5);
  EXPECT_LE(compare({1, 200, 7, 1, 64}, torch::kFloat, {}, false, 2), 1e-5);
  EXPECT_LE(compare({2, 130, 4, 2, 16}, torch::kFloat, {}, true, 3), 1e-5);
  EXPECT_LE(compare({2, 150, 4, 2, 16}, torch::kFloat, hf::segment_key_starts(random_segments(2, 150, 4)), false, 4),
            1e-5);
}

TEST(CausalAttentionKernel, GradientsMatchFiniteDifferences) {
  torch::manual_seed(3);
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  auto q = torch::randn({2, 5, 3 * 4}, opts), k = torch::randn({2, 5, 4}, opts), v = torch::randn({2, 5, 4}, opts);
  auto starts = torch::tensor({0, 0, 2, 2, 2, 0, 1, 1, 3, 3}, torch::kLong).view({2, 5});
  for (bool sig : {false, true}) {
    SCOPED_TRACE(sig);
    auto bias = torch::full({}, -0.7, opts);
    std::vector<torch::Tensor> in{q, k, v};
    if (sig) in.push_back(bias);
    double err = testkit::gradcheck(
        [&](const std::vector<torch::Tensor>& x) {
          return causal_attention(x[0], x[1], x[2], 3, 1, 0.5, starts, sig ? x[3] : torch::Tensor());
        },
        in);
    EXPECT_LT(err, 1e-7);
  }
}

TEST(CausalAttentionKernel, SwitchAndBadInputs) {
  auto q = torch::randn({1, 4, 8});
  EXPECT_TRUE(attention_kernel_available(q));
  {
    AtenOnly off;
    EXPECT_FALSE(attention_kernel_available(q));
  }
  EXPECT_FALSE(attention_kernel_available(q.to(torch::kBFloat16)));
  auto k = torch::randn({1, 4, 4});
  EXPECT_THROW(causal_attention(q, k, k, 3, 1, 1.0), c10::Error);  // 8 not a multiple of 3 heads
  EXPECT_THROW(causal_attention(q, torch::randn({1, 4, 6}), k, 2, 1, 1.0), c10::Error);
  EXPECT_THROW(causal_attention(q, k, k, 2, 1, 1.0, torch::tensor({0, 0, 3, 1}, torch::kLong).view({1, 4})),
               c10::Error);  // key start 3 after query 2
  EXPECT_THROW(causal_attention(q, k, k, 2, 1, 1.0, torch::zeros({1, 4}, torch::kInt)), c10::Error);
  EXPECT_NO_THROW(causal_attention(q, k, k, 2, 1, 1.0, torch::tensor({0, 0, 2, 1}, torch::kLong).view({1, 4})));
}

namespace {

std::vector<std::pair<std::string, std::shared_ptr<hf::HfModel>>> tiny_families() {
  AttentionVariant sigmoid;
  sigmoid.score = Score::Sigmoid;
  sigmoid.bias_mode = SigmoidBias::Learnable;
  auto gpt2 = hf::Gpt2Options().vocab_size(40).n_positions(160).n_embd(32).n_layer(2).n_head(4);
  auto llama = testkit::tiny_llama_options(40, 160).head_dim(12);
  auto qwen2 = llama;
  qwen2.family(hf::Family::Qwen2).num_key_value_heads(1).qkv_bias(true).tie_word_embeddings(true);
  return {{"gpt2", hf::make_gpt2(gpt2)},
          {"gpt2 sigmoid", hf::make_gpt2(gpt2.attention(sigmoid))},
          {"llama", hf::make_llama(llama)},
          {"qwen2", hf::make_llama(qwen2)}};
}

// Weights spread enough that attention is far from uniform.
void randomise(torch::nn::Module& m, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard g;
  for (auto& p : m.named_parameters()) {
    auto& t = p.value();
    if (p.key().find("sigmoid_bias") != std::string::npos) continue;
    const bool norm = p.key().find("norm") != std::string::npos || p.key().find("ln_") != std::string::npos;
    t.copy_(t.dim() == 1 && norm && p.key().find("weight") != std::string::npos ? 1 + 0.1 * torch::randn_like(t)
                                                                                 : 0.3 * torch::randn_like(t));
  }
}

CausalLm& lm_of(hf::HfModel& m) { return *dynamic_cast<CausalLm*>(&m); }

// Logits of forward_lm and the gradients of every parameter for a random projection of them.
std::vector<torch::Tensor> logits_and_grads(hf::HfModel& m, const LmInputs& in) {
  m.zero_grad();
  auto logits = lm_of(m).forward_lm(in);
  torch::manual_seed(99);
  (logits * torch::randn(logits.sizes()).to(logits.scalar_type())).sum().backward();
  std::vector<torch::Tensor> out{logits.detach()};
  for (auto& p : m.parameters()) out.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  return out;
}

}  // namespace

TEST(CausalAttentionKernel, WholeModelsMatchTheAtenPathForwardAndGradients) {
  for (auto& [name, m] : tiny_families()) {
    SCOPED_TRACE(name);
    randomise(*m, 1);
    m->to(torch::kDouble);
    for (int64_t N : {9, 130}) {
      SCOPED_TRACE(N);
      torch::manual_seed(uint64_t(N));
      LmInputs plain;
      plain.ids = torch::randint(0, 40, {2, N}, torch::kLong);
      LmInputs packed = plain;
      packed.segments = random_segments(2, N, uint64_t(N) + 1);
      for (const auto* in : {&plain, &packed}) {
        auto fast = logits_and_grads(*m, *in);
        std::vector<torch::Tensor> slow;
        {
          AtenOnly off;
          slow = logits_and_grads(*m, *in);
        }
        ASSERT_EQ(fast.size(), slow.size());
        EXPECT_GT(fast[0].std().item<double>(), 0.3);
        for (size_t t = 0; t < fast.size(); ++t)
          EXPECT_LE(max_diff(fast[t], slow[t]), 1e-10 * std::max(1.0, slow[t].abs().max().item<double>())) << t;
      }
    }
  }
}

// Under bf16 compute (LibTorch's CPU autocast) q, k, v arrive in bf16 (q and k widened by a
// float32 rotary table in the Llama family) and the kernel runs them in float32. Against the same
// model in float32, the logits and every gradient stay within bf16's rounding, and in total at
// least as close as ATen's bf16 path (whose scores and softmax are rounded to bf16); the two paths
// differ (the kernel was taken).
TEST(CausalAttentionKernel, UnderBf16ComputeAtLeastAsCloseToFloat32AsTheAtenPath) {
  for (auto& [name, m] : tiny_families()) {
    SCOPED_TRACE(name);
    randomise(*m, 4);
    torch::manual_seed(6);
    LmInputs in;
    in.ids = torch::randint(0, 40, {2, 90}, torch::kLong);
    in.segments = random_segments(2, 90, 7);
    std::vector<torch::Tensor> fast, slow;
    {
      ComputeScope bf16(torch::kBFloat16);
      fast = logits_and_grads(*m, in);
      AtenOnly off;
      slow = logits_and_grads(*m, in);
    }
    const auto exact = logits_and_grads(*m, in);
    ASSERT_EQ(fast.size(), exact.size());
    ASSERT_EQ(slow.size(), exact.size());
    EXPECT_GT(max_diff(fast[0], slow[0]), 0.0);
    double fast_total = 0, slow_total = 0;
    for (size_t t = 0; t < exact.size(); ++t) {
      const double size = std::max(1.0, exact[t].abs().max().item<double>());
      const double f = max_diff(fast[t], exact[t]) / size, s = max_diff(slow[t], exact[t]) / size;
      EXPECT_LE(f, 0.08) << t;
      fast_total += f;
      slow_total += s;
    }
    EXPECT_LE(fast_total, slow_total);
  }
}

TEST(CausalAttentionKernel, PrefillIntoAnEmptyCacheThenDecodeMatchesTheAtenPath) {
  for (auto& [name, m] : tiny_families()) {
    SCOPED_TRACE(name);
    randomise(*m, 2);
    m->eval();
    torch::NoGradGuard g;
    torch::manual_seed(5);
    auto ids = torch::randint(0, 40, {2, 75}, torch::kLong);
    auto run = [&] {
      KvCache cache;
      LmInputs in;
      in.ids = ids.slice(1, 0, 70);
      in.cache = &cache;
      std::vector<torch::Tensor> parts{lm_of(*m).forward_lm(in)};
      for (int64_t t = 70; t < 75; ++t) {  // decode: the ATen path over the cached keys
        in.ids = ids.slice(1, t, t + 1);
        parts.push_back(lm_of(*m).forward_lm(in));
      }
      return torch::cat(parts, 1);
    };
    auto fast = run();
    torch::Tensor slow;
    {
      AtenOnly off;
      slow = run();
    }
    EXPECT_LE(max_diff(fast, slow), 1e-4);
    // And both equal the whole sequence at once.
    EXPECT_LE(max_diff(fast, m->forward(ids)), 1e-4);
  }
}

TEST(CausalAttentionKernel, TrainingLossCurveIsTheSameWithAndWithout) {
  auto train = [](bool kernel) {
    auto fams = tiny_families();
    auto m = fams[2].second;  // llama, grouped-query
    randomise(*m, 3);
    set_attention_kernel_enabled(kernel);
    auto losses = testkit::lm_loss_curve([&](const torch::Tensor& ids) { return m->forward(ids); }, m->parameters(),
                                         40, 2, 99, 8, 3e-3);
    set_attention_kernel_enabled(true);
    return losses;
  };
  auto fast = train(true), slow = train(false);
  ASSERT_EQ(fast.size(), slow.size());
  EXPECT_LT(fast.back(), fast.front() - 0.1);  // it learns
  for (size_t i = 0; i < fast.size(); ++i) EXPECT_NEAR(fast[i], slow[i], 1e-5 * slow[i]) << "step " << i;
}
