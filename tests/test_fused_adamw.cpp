// FusedAdamW (src/train/fused_adamw.h) against LibTorch's own torch::optim::AdamW, the reference
// tunekit did not write: the same parameters and moments over many steps (groups, weight decay,
// learning rates changed as the trainer's set_lr changes them, float and double, strided
// parameters, amsgrad), parameters without a gradient, checkpoints crossing between the two, freed
// gradients, and the trainer's loss curve and resume with either optimizer.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sstream>

#include "src/io/checkpoint.h"
#include "src/recipe/recipe.h"
#include "src/train/fused_adamw.h"
#include "src/train/trainer.h"
#include "tests/helpers.h"
#include "util/error.h"
#include "util/threads.h"

using namespace tunekit;
using torch::optim::AdamWOptions;
using torch::optim::AdamWParamState;

namespace {

// Parameters of a few shapes in two groups (the second with its own learning rate and weight
// decay); `strided` makes the first parameter a transposed (non-contiguous) view.
struct Net : torch::nn::Module {
  Net(torch::Dtype dtype, bool strided, uint64_t seed) {
    torch::manual_seed(seed);
    auto opt = torch::TensorOptions().dtype(dtype);
    w = register_parameter("w", strided ? torch::randn({37, 19}, opt).t() : torch::randn({19, 37}, opt));
    b = register_parameter("b", torch::randn({37}, opt));
    head = register_parameter("head", torch::randn({1003}, opt));  // not a multiple of 8: the kernel's tail
    emb = register_parameter("emb", torch::randn({4, 16}, opt));
  }
  std::vector<torch::optim::OptimizerParamGroup> groups(const AdamWOptions& second) {
    std::vector<torch::optim::OptimizerParamGroup> g;
    g.emplace_back(std::vector<torch::Tensor>{w, b});
    g.emplace_back(std::vector<torch::Tensor>{head, emb}, std::make_unique<AdamWOptions>(second));
    return g;
  }
  torch::Tensor w, b, head, emb;
};

// The gradient of parameter `i` at `step`: random, the same for every run. `missing(step, i)`
// leaves it out: zero for the reference (a gradient zeroed in place, as before gradients were
// freed), undefined for FusedAdamW.
using Missing = std::function<bool(int, size_t)>;
void set_grads(std::vector<torch::Tensor> params, int step, bool reference, const Missing& missing) {
  for (size_t i = 0; i < params.size(); ++i) {
    torch::manual_seed(1000 * uint64_t(step) + i);
    auto g = torch::randn(params[i].sizes(), params[i].options());
    if (missing && missing(step, i)) {
      if (reference && params[i].grad().defined()) params[i].mutable_grad() = torch::zeros_like(params[i]);
      else if (!reference) params[i].mutable_grad() = torch::Tensor();
      continue;  // the reference has no gradient until it had one (torch's zero_grad keeps undefined ones)
    }
    params[i].mutable_grad() = params[i].is_contiguous() ? g : g.t().contiguous().t();  // the parameter's layout
  }
}

void set_lr(torch::optim::Optimizer& opt, double scale) {  // as trainer.cpp's set_lr
  for (auto& group : opt.param_groups()) group.options().set_lr(group.options().get_lr() * scale);
}

// |a - b| <= tol * max |b| (both defined or both undefined).
void expect_close(const torch::Tensor& a, const torch::Tensor& b, double tol, const std::string& what) {
  ASSERT_EQ(a.defined(), b.defined()) << what;
  if (!a.defined()) return;
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double scale = b.abs().max().item<double>(), diff = (a - b).abs().max().item<double>();
  EXPECT_LE(diff, tol * std::max(scale, 1e-30)) << what << ": max |diff| " << diff << " of " << scale;
}

const AdamWParamState* state_of(const torch::optim::Optimizer& opt, const torch::Tensor& p) {
  auto it = opt.state().find(c10::guts::to_string(p.unsafeGetTensorImpl()));
  return it == opt.state().end() ? nullptr : static_cast<const AdamWParamState*>(it->second.get());
}

// Parameters and state of `fused` (on net `f`) against `ref` (on net `r`).
void expect_same_run(Net& f, FusedAdamW& fused, Net& r, torch::optim::AdamW& ref, double tol, const std::string& at) {
  const auto fp = f.parameters(), rp = r.parameters();
  for (size_t i = 0; i < fp.size(); ++i) {
    const std::string what = at + " parameter " + std::to_string(i);
    expect_close(fp[i], rp[i], tol, what);
    const AdamWParamState *fs = state_of(fused, fp[i]), *rs = state_of(ref, rp[i]);
    ASSERT_EQ(fs == nullptr, rs == nullptr) << what;
    if (!fs) continue;
    EXPECT_EQ(fs->step(), rs->step()) << what;
    expect_close(fs->exp_avg(), rs->exp_avg(), tol, what + " exp_avg");
    expect_close(fs->exp_avg_sq(), rs->exp_avg_sq(), tol, what + " exp_avg_sq");
    expect_close(fs->max_exp_avg_sq(), rs->max_exp_avg_sq(), tol, what + " max_exp_avg_sq");
  }
}

struct Case {
  torch::Dtype dtype;
  double weight_decay;
  bool amsgrad, strided;
  std::string name() const {
    return std::string(dtype == torch::kFloat ? "float" : "double") + " wd " + std::to_string(weight_decay) +
           (amsgrad ? " amsgrad" : "") + (strided ? " strided" : "");
  }
};

// 24 steps of both optimizers on the same gradients; the learning rate changes every step.
void run_case(const Case& c, const Missing& missing) {
  SCOPED_TRACE(c.name());
  const double tol = c.dtype == torch::kFloat ? 1e-6 : 1e-12;
  const auto first = AdamWOptions(3e-2).weight_decay(c.weight_decay).amsgrad(c.amsgrad);
  const auto second = AdamWOptions(1e-2).betas({0.8, 0.99}).eps(1e-6).weight_decay(c.weight_decay * 3).amsgrad(c.amsgrad);
  Net f(c.dtype, c.strided, 7), r(c.dtype, c.strided, 7);
  FusedAdamW fused(f.groups(second), first);
  torch::optim::AdamW ref(r.groups(second), first);
  for (int step = 0; step < 24; ++step) {
    set_grads(f.parameters(), step, false, missing);
    set_grads(r.parameters(), step, true, missing);
    const double scale = step < 5 ? 1.5 : 0.9;  // warm-up, then decay
    set_lr(fused, scale);
    set_lr(ref, scale);
    fused.step();
    ref.step();
    fused.zero_grad();
    expect_same_run(f, fused, r, ref, tol, "step " + std::to_string(step));
    if (::testing::Test::HasFailure()) return;
  }
}

}  // namespace

TEST(FusedAdamW, StepsAsTorchAdamW) {
  for (auto dtype : {torch::kFloat, torch::kDouble})
    for (double wd : {0.0, 0.01})
      for (bool amsgrad : {false, true})
        for (bool strided : {false, true}) run_case({dtype, wd, amsgrad, strided}, nullptr);
}

TEST(FusedAdamW, ParameterWithoutAGradientIsSteppedAsWithAZeroOneOnceItHasState) {
  // Parameter 0 misses steps 3-6 (it has state by then), parameter 2 every third step from 2 on,
  // parameter 3 gets no gradient until step 10 (no state: skipped, as torch skips it).
  const Missing missing = [](int step, size_t i) {
    return (i == 0 && step >= 3 && step <= 6) || (i == 2 && step >= 2 && step % 3 == 2) || (i == 3 && step < 10);
  };
  for (auto dtype : {torch::kFloat, torch::kDouble})
    for (bool amsgrad : {false, true}) run_case({dtype, 0.05, amsgrad, false}, missing);
  // Without state the parameter is untouched, weight decay included.
  Net f(torch::kFloat, false, 3);
  const torch::Tensor before = f.emb.detach().clone();
  FusedAdamW fused(f.parameters(), AdamWOptions(0.1).weight_decay(0.5));
  for (int step = 0; step < 3; ++step) {
    set_grads(f.parameters(), step, false, [](int, size_t i) { return i == 3; });
    fused.step();
  }
  EXPECT_TRUE(torch::equal(f.emb, before));
  EXPECT_EQ(state_of(fused, f.emb), nullptr);
}

// clip_grad_norm against LibTorch's clip_grad_norm_: the same norm, and after the step the same
// parameters bit for bit, whether the factor went to FusedAdamW's pass (float32) or scaled the
// gradients in place (double; a subset of the optimizer's parameters; no optimizer).
TEST(FusedAdamW, ClipGradNormHandsItsFactorToTheStep) {
  const auto first = AdamWOptions(3e-2).weight_decay(0.01);
  const auto second = AdamWOptions(1e-2).betas({0.8, 0.99}).weight_decay(0.03);
  for (auto dtype : {torch::kFloat, torch::kDouble})
    for (bool strided : {false, true}) {
      SCOPED_TRACE(std::string(dtype == torch::kFloat ? "float" : "double") + (strided ? " strided" : ""));
      Net f(dtype, strided, 7), r(dtype, strided, 7);
      FusedAdamW fused(f.groups(second), first), ref(r.groups(second), first);
      for (int step = 0; step < 12; ++step) {
        set_grads(f.parameters(), step, false, nullptr);
        set_grads(r.parameters(), step, false, nullptr);
        const double max_norm = step % 3 == 2 ? 1e3 : 5.0;  // the gradients' norm is about 42
        const torch::Tensor unscaled = f.head.grad().clone();
        const double nf = clip_grad_norm(f.parameters(), max_norm, &fused);
        const double nr = torch::nn::utils::clip_grad_norm_(r.parameters(), max_norm);
        EXPECT_EQ(nf, nr) << "step " << step;
        // float32: handed to the step, the gradient itself untouched; double: scaled in place.
        EXPECT_EQ(torch::equal(f.head.grad(), unscaled), dtype == torch::kFloat || max_norm > nf) << "step " << step;
        EXPECT_GT(nf, 30.0);
        fused.step();
        ref.step();
        fused.zero_grad();
        ref.zero_grad();
        const auto fp = f.parameters(), rp = r.parameters();
        for (size_t i = 0; i < fp.size(); ++i) EXPECT_TRUE(torch::equal(fp[i], rp[i])) << "step " << step << " #" << i;
        if (::testing::Test::HasFailure()) return;
      }
    }
  // A subset of the optimizer's parameters, or no optimizer: the gradients are scaled in place.
  for (bool with_optimizer : {true, false}) {
    Net a(torch::kFloat, false, 9), b(torch::kFloat, false, 9);
    FusedAdamW opt(a.parameters(), first);
    set_grads(a.parameters(), 0, false, nullptr);
    set_grads(b.parameters(), 0, false, nullptr);
    const double na = clip_grad_norm({a.w, a.b}, 1.0, with_optimizer ? &opt : nullptr);
    const double nb = torch::nn::utils::clip_grad_norm_(std::vector<torch::Tensor>{b.w, b.b}, 1.0);
    EXPECT_EQ(na, nb);
    const auto ap = a.parameters(), bp = b.parameters();
    for (size_t i = 0; i < ap.size(); ++i) EXPECT_TRUE(torch::equal(ap[i].grad(), bp[i].grad())) << "#" << i;
  }
  // No gradients: 0, nothing handed over.
  Net e(torch::kFloat, false, 1);
  FusedAdamW none(e.parameters(), first);
  EXPECT_EQ(clip_grad_norm(e.parameters(), 1.0, &none), 0.0);
}

TEST(FusedAdamW, ZeroGradFreesTheGradientsAndOtherOptimizersKeepZeroOnes) {
  Net f(torch::kFloat, false, 1);
  FusedAdamW fused(f.parameters(), AdamWOptions(1e-3));
  set_grads(f.parameters(), 0, false, nullptr);
  fused.step();
  torch::optim::Optimizer& as_base = fused;
  clear_gradients(as_base);  // through the base class, as the trainer holds it
  for (const auto& p : f.parameters()) EXPECT_FALSE(p.grad().defined());

  Net s(torch::kFloat, false, 1);
  torch::optim::SGD sgd(s.parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  set_grads(s.parameters(), 0, false, nullptr);
  sgd.step();
  clear_gradients(sgd);
  for (const auto& p : s.parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().abs().max().item<double>(), 0.0);
  }
}

TEST(FusedAdamW, AnOverflowingStepIsTorchsOverflowError) {
  // The trainer turns LibTorch's std::runtime_error "... overflow" into a divergence message.
  for (int fused_first = 0; fused_first < 2; ++fused_first) {
    Net f(torch::kFloat, false, 1);
    std::unique_ptr<torch::optim::Optimizer> opt;
    const auto o = AdamWOptions(1e38).weight_decay(0);  // lr / (1 - beta1) = 1e39 > float's max
    if (fused_first) opt = std::make_unique<FusedAdamW>(f.parameters(), o);
    else opt = std::make_unique<torch::optim::AdamW>(f.parameters(), o);
    set_grads(f.parameters(), 0, false, nullptr);
    try {
      opt->step();
      ADD_FAILURE() << "no error";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("overflow"), std::string::npos) << e.what();
    }
  }
}

TEST(FusedAdamW, CheckpointsResumeAcrossTheTwoOptimizers) {
  // 10 steps with one optimizer, a checkpoint through src/io, 10 more with the other loaded from
  // it: the same as 20 uninterrupted steps of the first.
  testkit::TempDir dir;
  const auto options = AdamWOptions(2e-2).weight_decay(0.02);
  for (int fused_first = 0; fused_first < 2; ++fused_first) {
    SCOPED_TRACE(fused_first ? "fused, then torch" : "torch, then fused");
    auto make = [&](Net& n, bool fused) -> std::unique_ptr<torch::optim::Optimizer> {
      if (fused) return std::make_unique<FusedAdamW>(n.parameters(), options);
      return std::make_unique<torch::optim::AdamW>(n.parameters(), options);
    };
    auto steps = [](Net& n, torch::optim::Optimizer& opt, int from, int to) {
      for (int step = from; step < to; ++step) {
        set_grads(n.parameters(), step, true, nullptr);
        opt.step();
        clear_gradients(opt);
      }
    };
    Net a(torch::kFloat, false, 5);
    auto first = make(a, fused_first);
    steps(a, *first, 0, 10);
    const std::string ckpt = dir / ("ckpt" + std::to_string(fused_first));
    io::save_checkpoint(ckpt, a, first.get(), io::TrainState{});
    steps(a, *first, 10, 20);

    Net b(torch::kFloat, false, 99);  // other weights: the checkpoint's must replace them
    auto second = make(b, !fused_first);
    io::load_weights(ckpt, b, {}, /*strict=*/true, false);
    io::load_optimizer(ckpt, *second);
    for (const auto& p : b.parameters()) ASSERT_NE(state_of(*second, p), nullptr);
    EXPECT_EQ(state_of(*second, b.w)->step(), 10);
    steps(b, *second, 10, 20);
    const auto pa = a.parameters(), pb = b.parameters();
    for (size_t i = 0; i < pa.size(); ++i) {
      expect_close(pb[i], pa[i], 1e-6, "parameter " + std::to_string(i));
      expect_close(state_of(*second, pb[i])->exp_avg_sq(), state_of(*first, pa[i])->exp_avg_sq(), 1e-6, "exp_avg_sq");
    }
  }
}

// --- the trainer with either optimizer ---

class FusedAdamWTraining : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new testkit::TempDir();
    testkit::write_synthetic_fmnist(data_->path(), 40, 10);
  }
  static void TearDownTestSuite() { delete data_; }
  Recipe recipe(std::vector<std::string> overrides) {
    for (const char* o : {"train.epochs=2", "train.checkpoint_every=3", "model.dropout=0.1", "data.batch_size=8",
                          "optimizer.weight_decay=0.05"})
      overrides.insert(overrides.begin(), o);
    return parse_recipe(testkit::tiny_recipe_yaml(data_->path(), runs_.path()), "tiny.yaml", overrides);
  }
  static testkit::TempDir* data_;
  testkit::TempDir runs_;
};
testkit::TempDir* FusedAdamWTraining::data_ = nullptr;

TEST_F(FusedAdamWTraining, LossCurveIsTorchAdamWsAndResumeCrossesOptimizers) {
  const auto fused = train(recipe({"output.name=fused"}), {false, true, 0});
  const auto plain = train(recipe({"output.name=plain", "optimizer.fused=false"}), {false, true, 0});
  ASSERT_EQ(fused.losses.size(), 32u);
  ASSERT_EQ(plain.losses.size(), fused.losses.size());
  for (size_t i = 0; i < fused.losses.size(); ++i)
    EXPECT_NEAR(fused.losses[i].second, plain.losses[i].second, 1e-6 * std::abs(plain.losses[i].second))
        << "step " << fused.losses[i].first;
  EXPECT_LT(fused.losses.back().second, fused.losses.front().second);

  // Killed after step 23 under torch::optim::AdamW (the last checkpoint holds step 21), resumed
  // with FusedAdamW: the rest of the uninterrupted curve.
  train(recipe({"output.name=crossed", "optimizer.fused=false"}), {false, true, 23});
  const auto resumed = train(recipe({"output.name=crossed"}), {true, true, 0});
  ASSERT_EQ(resumed.losses.size(), plain.losses.size() - 21);
  for (size_t i = 0; i < resumed.losses.size(); ++i)
    EXPECT_NEAR(resumed.losses[i].second, plain.losses[i + 21].second, 1e-6 * std::abs(plain.losses[i + 21].second))
        << "step " << resumed.losses[i].first;
}

TEST(FusedAdamWRecipe, FusedIsAnAdamWSwitch) {
  const std::string yaml = "optimizer:\n  name: sgd\n  fused: true\n";
  EXPECT_TRUE(parse_recipe("optimizer:\n  lr: 0.001\n", "r.yaml", {}).optimizer.fused);
  EXPECT_FALSE(parse_recipe("optimizer:\n  fused: false\n", "r.yaml", {}).optimizer.fused);
  try {
    parse_recipe(yaml, "r.yaml", {});
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "r.yaml:3:10: optimizer.fused: applies to optimizer.name adamw only, not sgd");
  }
  try {
    parse_recipe("optimizer:\n  fused: maybe\n", "r.yaml", {});
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("r.yaml:2:10: optimizer.fused: expected true or false"), std::string::npos)
        << e.what();
  }
}

// One optimizer step over N float32 parameters (16 tensors), not a test: the figures of the
// README. TUNEKIT_ADAMW_BENCH="N THREADS fused|torch" (default "124000000 1 fused"); the median of
// 3 steps after one that creates the state. bench/torch_adamw_step.py times PyTorch's torch.optim.AdamW.
//   build/tunekit_tests --gtest_also_run_disabled_tests --gtest_filter='FusedAdamWBench.*'
TEST(FusedAdamWBench, DISABLED_Step) {
  const char* env = std::getenv("TUNEKIT_ADAMW_BENCH");
  std::istringstream in(env ? env : "124000000 1 fused");
  int64_t n = 0;
  int threads = 1;
  std::string which;
  in >> n >> threads >> which;
  ASSERT_TRUE(n > 0 && threads > 0 && (which == "fused" || which == "torch")) << env;
  at::set_num_threads(threads);
  set_kernel_threads(threads);  // FusedAdamW's pass runs on tunekit's kernel threads (util/threads.h)
  struct Restore {
    ~Restore() { set_kernel_threads(0); }
  } restore;
  std::vector<torch::Tensor> params;
  for (int i = 0; i < 16; ++i) {
    params.push_back(torch::randn({n / 16 + (i < n % 16)}).requires_grad_());
    params.back().mutable_grad() = torch::randn_like(params.back());
  }
  std::unique_ptr<torch::optim::Optimizer> opt;
  const auto o = AdamWOptions(1e-4).weight_decay(0.01);
  if (which == "fused") opt = std::make_unique<FusedAdamW>(params, o);
  else opt = std::make_unique<torch::optim::AdamW>(params, o);
  opt->step();
  std::vector<double> times;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    opt->step();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  const double s = times[1];
  std::printf("adamw step: %s, %lld float parameters, %d thread(s): %.3f s (%.1f GB/s of the 28 bytes/parameter a "
              "one-pass step must move)\n",
              which.c_str(), static_cast<long long>(n), threads, s, 28.0 * double(n) / s / 1e9);
}
