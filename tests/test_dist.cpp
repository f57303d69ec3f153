// Data-parallel training (src/dist): the torchrun environment's errors, gradient bucketing, a
// two-rank Gloo group in one process (allreduce, broadcast, a join that times out), and through
// `tunekit launch`: 2 ranks x 32 give the 1 rank x 64 loss curve (full fine-tuning of a causal LM
// with accumulation; LoRA on a classifier), a dead or hung rank fails the launch naming the rank,
// and a 2-rank run resumed after a failure equals the uninterrupted one.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "src/dist/grad_sync.h"
#include "src/dist/launch.h"
#include "src/dist/process_group.h"
#include "src/io/checkpoint.h"
#include "tests/helpers.h"
#include "tests/text_helpers.h"
#include "util/error.h"

using namespace tunekit;
namespace fs = std::filesystem;

namespace {

dist::EnvGetter env_of(const std::map<std::string, std::string>& vars) {
  return [vars](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

std::string env_error(const std::map<std::string, std::string>& vars) {
  return testkit::error_of([&] { dist::parse_dist_env(env_of(vars)); });
}

}  // namespace

TEST(DistEnv, ReadsTorchrunVariablesAndNamesTheBadOne) {
  auto single = dist::parse_dist_env(env_of({}));
  EXPECT_FALSE(single.distributed());
  EXPECT_EQ(single.rank, 0);
  auto e = dist::parse_dist_env(env_of(
      {{"WORLD_SIZE", "4"}, {"RANK", "2"}, {"LOCAL_RANK", "2"}, {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29500"}}));
  EXPECT_TRUE(e.distributed());
  EXPECT_EQ(e.rank, 2);
  EXPECT_EQ(e.world_size, 4);
  EXPECT_EQ(e.master_addr, "10.0.0.1");
  EXPECT_EQ(e.master_port, 29500);

  const std::map<std::string, std::string> ok{
      {"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}};
  auto with = [&](const std::string& k, const std::string& v) {
    auto m = ok;
    if (v.empty())
      m.erase(k);
    else
      m[k] = v;
    return m;
  };
  EXPECT_EQ(env_error(with("WORLD_SIZE", "two")), "environment: WORLD_SIZE=\"two\" is not an integer in 1..65536");
  EXPECT_EQ(env_error(with("WORLD_SIZE", "0")), "environment: WORLD_SIZE=\"0\" is not an integer in 1..65536");
  EXPECT_EQ(env_error(with("RANK", "2")), "environment: RANK=2 is not below WORLD_SIZE=2");
  EXPECT_EQ(env_error(with("RANK", "-1")), "environment: RANK=\"-1\" is not an integer in 0..65536");
  EXPECT_EQ(env_error(with("RANK", "")), "environment: RANK is not set (WORLD_SIZE=2 asks for a process group)");
  EXPECT_EQ(env_error(with("MASTER_ADDR", "")), "environment: MASTER_ADDR is not set (WORLD_SIZE=2 asks for a process group)");
  EXPECT_EQ(env_error(with("MASTER_PORT", "70000")), "environment: MASTER_PORT=\"70000\" is not an integer in 1..65535");
  EXPECT_EQ(env_error(with("MASTER_PORT", "12x")), "environment: MASTER_PORT=\"12x\" is not an integer in 1..65535");
  EXPECT_EQ(env_error(with("LOCAL_RANK", "5")), "environment: LOCAL_RANK=\"5\" is not an integer in 0..1");
  EXPECT_EQ(env_error({{"RANK", "1"}}), "environment: RANK=1 is not below WORLD_SIZE=1");

  EXPECT_EQ(dist::dist_timeout(env_of({})), std::chrono::minutes(30));
  EXPECT_EQ(dist::dist_timeout(env_of({{"TUNEKIT_DIST_TIMEOUT_S", "2.5"}})), std::chrono::milliseconds(2500));
  EXPECT_EQ(testkit::error_of([] { dist::dist_timeout(env_of({{"TUNEKIT_DIST_TIMEOUT_S", "0"}})); }),
            "environment: TUNEKIT_DIST_TIMEOUT_S=\"0\" is not a number of seconds in (0, 604800]");
}

TEST(DistBuckets, FlattenUnflattenRoundTripInFloat32) {
  torch::manual_seed(0);
  std::vector<torch::Tensor> params{torch::randn({3, 4}), torch::randn({5}), torch::randn({0}),
                                    torch::randn({2, 2}, torch::kBFloat16), torch::randn({7})};
  for (auto& p : params) {
    p.set_requires_grad(true);
    if (p.numel() > 0 && p.size(0) != 5) p.mutable_grad() = torch::randn(p.sizes(), p.options().requires_grad(false));
  }
  // From the last parameter (backward's order): 7 + 4 + 5 floats fit 80 bytes (20 floats); 12
  // more do not; the empty one is skipped.
  auto buckets = dist::make_buckets(params, 80);
  ASSERT_EQ(buckets.size(), 2u);
  EXPECT_EQ(buckets[0].index, (std::vector<size_t>{4, 3, 1}));
  EXPECT_EQ(buckets[0].numel, 16);
  EXPECT_EQ(buckets[1].index, (std::vector<size_t>{0}));
  EXPECT_EQ(buckets[1].numel, 12);
  EXPECT_EQ(dist::make_buckets(params, 4).size(), 4u);  // each bigger than a bucket: one of its own

  std::vector<torch::Tensor> before;
  for (auto& p : params) before.push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
  for (const auto& b : buckets) {
    auto flat = dist::flatten_grads(params, b);
    EXPECT_EQ(flat.scalar_type(), torch::kFloat);
    ASSERT_EQ(flat.numel(), b.numel);
    if (b.index[0] == 4) {  // the undefined gradient of params[1] reads as zeros
      EXPECT_TRUE(torch::equal(flat.slice(0, 0, 7), before[4].reshape({-1})));
      EXPECT_TRUE(torch::equal(flat.slice(0, 11, 16), torch::zeros({5})));
    }
    dist::unflatten_grads(flat, 2.0, params, b);
  }
  EXPECT_TRUE(torch::allclose(params[0].grad(), before[0] * 2));
  EXPECT_FALSE(params[1].grad().defined());
  EXPECT_EQ(params[3].grad().scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(params[3].grad(), (before[3].to(torch::kFloat) * 2).to(torch::kBFloat16)));
  EXPECT_TRUE(torch::allclose(params[4].grad(), before[4] * 2));
}

namespace {

// Runs `body(rank)` on two threads, each rank joined to one Gloo group over loopback.
void two_ranks(const std::function<void(dist::ProcessGroup&)>& body, std::string* errors = nullptr) {
  const int port = dist::free_port();
  std::vector<std::string> failures(2);
  auto rank_main = [&](int rank) {
    try {
      dist::DistEnv env;
      env.rank = env.local_rank = rank;
      env.world_size = 2;
      env.master_port = port;
      dist::ProcessGroup group(env, std::chrono::seconds(20));
      body(group);
    } catch (const std::exception& e) {
      failures[rank] = e.what();
    }
  };
  std::thread t0(rank_main, 0), t1(rank_main, 1);
  t0.join();
  t1.join();
  if (errors) *errors = failures[0] + failures[1];
  EXPECT_EQ(failures[0] + failures[1], "");
}

}  // namespace

TEST(DistGroup, TwoRanksAllreduceGradientsInBucketsAndBroadcast) {
  two_ranks([](dist::ProcessGroup& group) {
    const int r = group.rank();
    EXPECT_EQ(group.sum(1.5 + r, "sum"), 4.0);
    EXPECT_EQ(group.from_rank0(r == 0 ? 7 : -1, "flag"), 7);
    auto w = torch::full({3, 5}, float(r + 2));
    group.broadcast(w, 0, "broadcast");
    EXPECT_TRUE(torch::equal(w, torch::full({3, 5}, 2.0f)));
    // Gradients: rank r holds (r + 1) * g; summed and halved: 1.5 * g, in each parameter's dtype.
    // The ranks are threads of one process: each draws from its own generator with one seed
    // (the global one would be shared, and the two ranks' draws interleaved).
    auto gen = at::detail::createCPUGenerator(1);
    auto a = torch::randn({300, 70}, gen).requires_grad_(), b = torch::randn({50}, gen).requires_grad_();
    auto ga = torch::randn({300, 70}, gen), gb = torch::randn({50}, gen);
    a.mutable_grad() = ga * (r + 1);
    b.mutable_grad() = gb * (r + 1);
    dist::GradSync sync(group, {a, b}, /*bucket_bytes=*/40000);
    EXPECT_EQ(sync.buckets(), 2u);
    EXPECT_EQ(sync.bytes_per_step(), (300 * 70 + 50 + 2) * 4) << "the buckets and one flag per parameter";
    sync.reduce(0.5, 1);
    EXPECT_TRUE(torch::allclose(a.grad(), ga * 1.5, 1e-6, 1e-6));
    EXPECT_TRUE(torch::allclose(b.grad(), gb * 1.5, 1e-6, 1e-6));
    group.barrier("barrier");
  });
}

// broadcast_tensors (and so GradSync::broadcast_model): every rank ends with rank 0's bits in each
// tensor's own dtype, int8 and 16-bit float types in their own width on the wire (a frozen base
// stored in int8 or bf16 is not widened), non-contiguous tensors included; a complex tensor is
// refused by name.
TEST(DistGroup, BroadcastKeepsEachTensorsDtypeAndWidth) {
  two_ranks([](dist::ProcessGroup& group) {
    const int r = group.rank();
    auto gen = at::detail::createCPUGenerator(7 + r);  // each rank its own values
    auto f = torch::randn({4, 6}, gen);
    std::vector<std::pair<std::string, torch::Tensor>> ts{
        {"f32", f.clone()},
        {"f64", torch::randn({5}, gen).to(torch::kDouble)},
        {"i64", torch::randint(-1000, 1000, {7}, gen)},
        {"i8", torch::randint(-128, 128, {3, 9}, gen).to(torch::kChar)},
        {"u8", torch::randint(0, 256, {11}, gen).to(torch::kByte)},
        {"bf16", (torch::randn({8, 3}, gen) * 1e3).to(torch::kBFloat16)},
        {"f16", torch::randn({6}, gen).to(torch::kHalf)},
        {"bool", torch::randn({9}, gen).gt(0)},
        {"f32_t", torch::randn({6, 4}, gen).t()},        // not contiguous
        {"bf16_t", torch::randn({3, 5}, gen).to(torch::kBFloat16).t()},
        {"empty", torch::empty({0, 3})},
        {"i16", torch::randint(-30000, 30000, {5}, gen).to(torch::kShort)}};  // Gloo lacks it: as int64
    ts[5].second[0][0] = std::numeric_limits<float>::quiet_NaN();  // bit patterns, not values, travel
    std::vector<torch::Tensor> mine;
    for (const auto& [n, t] : ts) mine.push_back(t.clone());
    // rank 0's tensors, sent to rank 1 by a second, plain float64 path for the reference
    std::vector<torch::Tensor> rank0;
    for (auto& t : mine) {
      auto wide = t.to(torch::kDouble).contiguous();
      group.broadcast(wide, 0, "reference");
      rank0.push_back(wide);
    }
    const int64_t bytes = dist::broadcast_tensors(group, ts);
    EXPECT_EQ(bytes, 24 * 4 + 5 * 8 + 7 * 8 + 27 + 11 + 24 * 2 + 6 * 2 + 9 + 24 * 4 + 15 * 2 + 5 * 8);
    for (size_t i = 0; i < ts.size(); ++i) {
      const auto& [name, t] = ts[i];
      EXPECT_EQ(t.scalar_type(), mine[i].scalar_type()) << name;
      EXPECT_EQ(t.sizes(), mine[i].sizes()) << name;
      const auto got = t.to(torch::kDouble), want = rank0[i];
      EXPECT_TRUE(torch::equal(got.isnan(), want.isnan())) << name;
      EXPECT_TRUE(torch::equal(got.nan_to_num(0), want.nan_to_num(0))) << name << " on rank " << r;
    }
    const std::string complex = testkit::error_of(
        [&] { dist::broadcast_tensors(group, {{"rotary.freqs", torch::zeros({2}, torch::kComplexFloat)}}); });
    EXPECT_NE(complex.find("broadcast of rotary.freqs from rank 0: its dtype ComplexFloat has no Gloo form here"),
              std::string::npos)
        << complex;
    group.barrier("barrier");
  });
}

// A gradient only one rank has (an expert only its rows reached) becomes the sum on both ranks;
// one no rank has stays undefined (as in one process, where the optimizer skips it).
TEST(DistGroup, AGradientDefinedOnOneRankOnlyIsSummedOnBoth) {
  two_ranks([](dist::ProcessGroup& group) {
    const int r = group.rank();
    auto a = torch::zeros({4, 3}).requires_grad_(), b = torch::zeros({5}).requires_grad_();
    auto c = torch::zeros({2}).requires_grad_();
    a.mutable_grad() = torch::full({4, 3}, float(r + 1));
    if (r == 1) b.mutable_grad() = torch::arange(5, torch::kFloat);
    dist::GradSync sync(group, {a, b, c}, /*bucket_bytes=*/32);
    sync.reduce(0.5, 1);
    EXPECT_TRUE(torch::equal(a.grad(), torch::full({4, 3}, 1.5f)));
    ASSERT_TRUE(b.grad().defined()) << "rank " << r;
    EXPECT_TRUE(torch::equal(b.grad(), torch::arange(5, torch::kFloat) * 0.5)) << "rank " << r;
    EXPECT_FALSE(c.grad().defined()) << "rank " << r;
    group.barrier("barrier");
  });
}

TEST(DistGroup, AJoinWithoutTheOtherRankFailsAfterTheTimeoutNamingIt) {
  dist::DistEnv env;
  env.world_size = 2;
  env.master_port = dist::free_port();
  const std::string e = testkit::error_of([&] { dist::ProcessGroup group(env, std::chrono::milliseconds(1500)); });
  EXPECT_NE(e.find("joining the process group"), std::string::npos) << e;
  EXPECT_NE(e.find("rank 0 of 2, timeout 1.5 s"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
}

// --- through the CLI: tunekit launch ---

namespace {

struct Cli {
  int status = -1;
  std::string output;
};

// Runs `args` with the environment assignments `env` ("A=1 B=2 "), output and errors together.
Cli tunekit_cli(const std::string& args, const std::string& log, const std::string& env = "") {
  const std::string cmd = env + std::string(TUNEKIT_CLI) + " " + args + " > " + log + " 2>&1";
  const int s = std::system(cmd.c_str());
  return {WIFEXITED(s) ? WEXITSTATUS(s) : -1, testkit::read_file(log)};
}

// The run's metrics.jsonl lines of `type`.
std::vector<nlohmann::json> metrics_of(const std::string& run_dir, const std::string& type) {
  std::vector<nlohmann::json> out;
  std::istringstream in(testkit::read_file(run_dir + "/metrics.jsonl"));
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j["type"] == type) out.push_back(j);
  }
  return out;
}

// The two runs' train losses, step by step, to `rel` relative.
void expect_same_curve(const std::string& a, const std::string& b, double rel, size_t steps) {
  auto la = metrics_of(a, "train"), lb = metrics_of(b, "train");
  ASSERT_EQ(la.size(), steps) << a;
  ASSERT_EQ(lb.size(), steps) << b;
  for (size_t i = 0; i < la.size(); ++i) {
    EXPECT_EQ(la[i]["step"], lb[i]["step"]);
    const double x = la[i]["loss"], y = lb[i]["loss"];
    EXPECT_NEAR(x, y, rel * std::abs(x)) << "step " << la[i]["step"];
  }
}

class DistLaunch : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = testkit::synthetic_mails(400, 5);
    testkit::write_jsonl(data_ / "train.jsonl", c, 0, 320);
    testkit::write_jsonl(data_ / "val.jsonl", c, 320, 360);
    testkit::write_jsonl(data_ / "test.jsonl", c, 360, 400);
  }
  std::string recipe(const std::string& task, const std::string& extra = "") {
    const std::string path = runs_ / (task + ".yaml");
    std::ofstream(path) << testkit::tiny_text_recipe_yaml(data_.path(), runs_.path(), task, extra);
    return path;
  }
  testkit::TempDir data_, runs_;
};

const char* kLoraClassifier =
    "adapter: {kind: lora, r: 4, alpha: 8, targets: [\"blocks.*.attn.q\", \"blocks.*.attn.v\"], "
    "modules_to_save: [head]}\n";

}  // namespace

TEST_F(DistLaunch, TwoRanksOfThirtyTwoGiveTheCurveOfOneRankOfSixtyFour) {
  // Full fine-tuning of a causal LM (loss over counted tokens), with gradient accumulation.
  const std::string lm = recipe("causal_lm");
  const std::string common = " data.batch_size=64 train.grad_accum=2 train.max_steps=6 train.log_every=1";
  Cli one = tunekit_cli("train " + lm + common + " output.name=one -q", runs_ / "one.log");
  ASSERT_EQ(one.status, 0) << one.output;
  Cli two = tunekit_cli("launch -n 2 -- train " + lm + common + " output.name=two", runs_ / "two.log");
  ASSERT_EQ(two.status, 0) << two.output;
  expect_same_curve(runs_ / "one", runs_ / "two", 1e-5, 6);
  EXPECT_NE(two.output.find("[rank 0] trained "), std::string::npos) << two.output;
  EXPECT_NE(two.output.find("[rank 0] data parallel: 2 ranks (Gloo), 32 per rank per batch"), std::string::npos)
      << two.output;
  EXPECT_EQ(two.output.find("[rank 1]"), std::string::npos) << two.output;  // the other ranks say nothing

  // LoRA on a classifier (mean over samples), two epochs with validation; kilobytes per step.
  const std::string cls = recipe("classify", kLoraClassifier);
  const std::string c2 = " data.batch_size=64 train.epochs=2 train.log_every=1";
  Cli c_one = tunekit_cli("train " + cls + c2 + " output.name=c_one -q", runs_ / "c_one.log");
  ASSERT_EQ(c_one.status, 0) << c_one.output;
  Cli c_two = tunekit_cli("launch -n 2 -- train " + cls + c2 + " output.name=c_two", runs_ / "c_two.log");
  ASSERT_EQ(c_two.status, 0) << c_two.output;
  expect_same_curve(runs_ / "c_one", runs_ / "c_two", 1e-5, 10);
  auto e1 = metrics_of(runs_ / "c_one", "eval"), e2 = metrics_of(runs_ / "c_two", "eval");
  ASSERT_EQ(e1.size(), 2u);
  ASSERT_EQ(e2.size(), 2u);
  for (size_t e = 0; e < 2; ++e) {  // validation split between the ranks, its counts summed: the same figures
    EXPECT_NEAR(double(e1[e]["loss"]), double(e2[e]["loss"]), 1e-5 * std::abs(double(e1[e]["loss"])));
    EXPECT_DOUBLE_EQ(double(e1[e]["accuracy"]), double(e2[e]["accuracy"]));
    EXPECT_NEAR(double(e1[e]["macro_f1"]), double(e2[e]["macro_f1"]), 1e-12);
  }
  auto v1 = metrics_of(runs_ / "one", "eval"), v2 = metrics_of(runs_ / "two", "eval");
  ASSERT_EQ(v1.size(), 2u);  // 6 steps of 3 per epoch: validated twice
  ASSERT_EQ(v2.size(), 2u);
  for (size_t e = 0; e < 2; ++e) {
    EXPECT_NEAR(double(v1[e]["loss"]), double(v2[e]["loss"]), 1e-5 * std::abs(double(v1[e]["loss"])));
    EXPECT_NEAR(double(v1[e]["accuracy"]), double(v2[e]["accuracy"]), 1e-12);
  }
  const size_t at = c_two.output.find("trainable gradient bytes per step");
  ASSERT_NE(at, std::string::npos) << c_two.output;
  const int64_t bytes = std::stoll(c_two.output.substr(c_two.output.rfind(' ', at - 2) + 1));
  EXPECT_LT(bytes, 64 * 1024);  // the adapters and the head, not the model
  EXPECT_GT(bytes, 0);

  // The global batch must split evenly.
  Cli three = tunekit_cli("launch -n 3 -- train " + cls + c2 + " output.name=c_three", runs_ / "three.log");
  EXPECT_NE(three.status, 0);
  EXPECT_NE(three.output.find("data.batch_size 64 (the global batch) is not divisible by WORLD_SIZE 3"),
            std::string::npos)
      << three.output;
}

// Overlap (allreduces started from gradient hooks during the last micro-batch's backward) gives
// the numbers of the after-backward path exactly; TUNEKIT_DIST_OVERLAP=1 turns it on.
TEST_F(DistLaunch, OverlappedAllreducesGiveTheAfterBackwardCurve) {
  const std::string lm = recipe("causal_lm");
  const std::string common = " data.batch_size=64 train.grad_accum=2 train.max_steps=4 train.log_every=1";
  Cli on = tunekit_cli("launch -n 2 -- train " + lm + common + " output.name=on", runs_ / "on.log",
                       "TUNEKIT_DIST_OVERLAP=1 ");
  ASSERT_EQ(on.status, 0) << on.output;
  EXPECT_NE(on.output.find("bucket(s) overlapped with backward"), std::string::npos) << on.output;
  Cli off = tunekit_cli("launch -n 2 -- train " + lm + common + " output.name=off", runs_ / "off.log",
                        "TUNEKIT_DIST_OVERLAP=0 ");
  ASSERT_EQ(off.status, 0) << off.output;
  EXPECT_EQ(off.output.find("overlapped"), std::string::npos) << off.output;
  expect_same_curve(runs_ / "on", runs_ / "off", 1e-6, 4);
  Cli bad = tunekit_cli("launch -n 2 -- train " + lm + common + " output.name=bad", runs_ / "bad.log",
                        "TUNEKIT_DIST_OVERLAP=yes ");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("environment: TUNEKIT_DIST_OVERLAP=\"yes\" is not 0 or 1"), std::string::npos) << bad.output;
}

TEST_F(DistLaunch, ADeadOrHungRankFailsTheLaunchNamingItAndAResumeEqualsTheUninterruptedRun) {
  const std::string cls = recipe("classify", kLoraClassifier);
  // With dropout: each rank draws its own masks, and a resume restores every rank's stream.
  const std::string args =
      " data.batch_size=64 train.epochs=2 train.log_every=1 train.checkpoint_every=3 model.dropout=0.1";
  Cli whole = tunekit_cli("launch -n 2 -- train " + cls + args + " output.name=whole", runs_ / "whole.log");
  ASSERT_EQ(whole.status, 0) << whole.output;

  // Rank 1 dies as step 5 begins (after the checkpoint of step 3): the launch fails and names it
  // (rank 0, whose allreduce lost its peer, may be reaped in the same instant: its status or 3).
  Cli dead = tunekit_cli("launch -n 2 -- train " + cls + args + " output.name=cut", runs_ / "dead.log",
                         "TUNEKIT_DIST_FAULT=exit:1:5 TUNEKIT_DIST_TIMEOUT_S=20 ");
  EXPECT_TRUE(dead.status == 3 || dead.status == 1) << dead.output;
  EXPECT_NE(dead.output.find("launch: failed: rank "), std::string::npos) << dead.output;
  EXPECT_NE(dead.output.find("rank 1 exited with status 3"), std::string::npos) << dead.output;
  // ... and a resume continues from that checkpoint to the uninterrupted run's curve.
  Cli resumed = tunekit_cli("launch -n 2 -- train " + cls + args + " output.name=cut --resume", runs_ / "resume.log");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("[rank 0] resuming from step 3"), std::string::npos) << resumed.output;
  expect_same_curve(runs_ / "whole", runs_ / "cut", 1e-9, 10);
  {  // the last checkpoint holds both ranks' streams, and they differ
    const io::Checkpoint last(runs_ / "whole/checkpoints/last");
    const torch::Tensor before = at::detail::getDefaultCPUGenerator().get_state();
    ASSERT_TRUE(last.has_rng(1));
    EXPECT_FALSE(last.has_rng(2));
    ASSERT_TRUE(last.load_rng(0));
    const torch::Tensor rank0 = at::detail::getDefaultCPUGenerator().get_state();
    ASSERT_TRUE(last.load_rng(1));
    EXPECT_FALSE(torch::equal(rank0, at::detail::getDefaultCPUGenerator().get_state()));
    at::Generator global = at::detail::getDefaultCPUGenerator();
    global.set_state(before);
  }

  // Rank 1 stops answering at step 2: rank 0 gives up after the timeout, naming the operation.
  Cli hung = tunekit_cli("launch -n 2 -- train " + cls + args + " output.name=hung", runs_ / "hung.log",
                         "TUNEKIT_DIST_FAULT=hang:1:2 TUNEKIT_DIST_TIMEOUT_S=3 ");
  EXPECT_EQ(hung.status, 1) << hung.output;
  EXPECT_NE(hung.output.find("[rank 0] error: allreduce of the step 2 gradients failed on rank 0 of 2"),
            std::string::npos)
      << hung.output;
  EXPECT_NE(hung.output.find("launch: failed: rank 0 exited with status 1 first; rank 1 was killed by signal 15"), std::string::npos) << hung.output;

  Cli bad = tunekit_cli("launch -n 2 -- eval " + runs_ / "whole", runs_ / "bad.log");
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.output.find("launch: the command after -- must be `train RECIPE [overrides...]` (got \"eval\")"),
            std::string::npos)
      << bad.output;
}
