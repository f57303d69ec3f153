#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "src/io/checkpoint.h"
#include "src/eval/evaluator.h"
#include "src/recipe/recipe.h"
#include "src/train/device.h"
#include "src/train/objective.h"
#include "src/train/setup.h"
#include "src/train/trainer.h"
#include "tests/helpers.h"

using namespace tunekit;
namespace fs = std::filesystem;

class TinyTraining : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new testkit::TempDir();
    testkit::write_synthetic_fmnist(data_->path(), 40, 10);
  }
  static void TearDownTestSuite() { delete data_; }
  Recipe recipe(const std::vector<std::string>& overrides = {}, const std::string& extra = "") {
    return parse_recipe(testkit::tiny_recipe_yaml(data_->path(), runs_.path(), extra), "tiny.yaml", overrides);
  }
  static testkit::TempDir* data_;
  testkit::TempDir runs_;
};
testkit::TempDir* TinyTraining::data_ = nullptr;

TEST_F(TinyTraining, LossFallsAndRunDirIsComplete) {
  TrainResult r = train(recipe({"train.epochs=6"}), {false, true, 0});
  ASSERT_GE(r.losses.size(), 20u);
  double first = (r.losses[0].second + r.losses[1].second + r.losses[2].second) / 3;
  double last = 0;
  for (size_t i = r.losses.size() - 3; i < r.losses.size(); ++i) last += r.losses[i].second / 3;
  EXPECT_LT(last, 0.7 * first) << "first " << first << " last " << last;
  EXPECT_GT(r.best_val_accuracy, 0.5);
  for (const char* f : {"recipe.yaml", "metrics.jsonl", "checkpoints/last/model.pt", "checkpoints/last/optimizer.pt",
                        "checkpoints/last/state.json", "checkpoints/best/model.pt"})
    EXPECT_TRUE(fs::exists(fs::path(r.run_dir) / f)) << f;
}

TEST_F(TinyTraining, SameSeedSameLossCurve) {
  auto a = train(recipe({"output.name=a", "train.epochs=1"}), {false, true, 0});
  auto b = train(recipe({"output.name=b", "train.epochs=1"}), {false, true, 0});
  EXPECT_EQ(a.losses, b.losses);
}

TEST_F(TinyTraining, ResumeAfterAStopContinuesWithTheSameLosses) {
  // Dropout makes the RNG state part of what a resume must restore.
  auto base = std::vector<std::string>{"train.epochs=2", "train.checkpoint_every=3", "model.dropout=0.1",
                                       "data.batch_size=8"};
  auto with = [&](std::vector<std::string> more) {
    more.insert(more.begin(), base.begin(), base.end());
    return more;
  };
  auto full = train(recipe(with({"output.name=full"})), {false, true, 0});
  // 128 training images / batch 8 = 16 steps per epoch, 32 in all. Killed after step 23:
  // the last checkpoint holds step 21 (mid-epoch 2).
  ASSERT_EQ(full.losses.size(), 32u);
  auto killed = train(recipe(with({"output.name=killed"})), {false, true, 23});
  EXPECT_EQ(killed.steps, 23);
  auto state = io::load_train_state(runs_ / "killed/checkpoints/last");
  EXPECT_EQ(state.step, 21);
  EXPECT_EQ(state.epoch, 1);
  EXPECT_EQ(state.batch_in_epoch, 5);
  auto resumed = train(recipe(with({"output.name=killed"})), {true, true, 0});
  ASSERT_EQ(resumed.losses.size(), full.losses.size() - 21);
  for (size_t i = 0; i < resumed.losses.size(); ++i) {
    EXPECT_EQ(resumed.losses[i].first, full.losses[i + 21].first);
    EXPECT_DOUBLE_EQ(resumed.losses[i].second, full.losses[i + 21].second) << "step " << resumed.losses[i].first;
  }
  EXPECT_DOUBLE_EQ(resumed.best_val_accuracy, full.best_val_accuracy);
}

TEST_F(TinyTraining, LoraFromPretrainedWithNewHead) {
  train(recipe({"output.name=pre", "train.epochs=2"}), {false, true, 0});
  auto r = recipe({"output.name=lora", "train.epochs=2", "data.classes=[4, 5, 6]", "model.num_classes=3"},
                  "init_from: {run: \"" + runs_ / "pre" +
                      "\", exclude: [\"head.*\"]}\nadapter: {kind: lora, r: 2, targets: [\"blocks.*.attn.q\", "
                      "\"blocks.*.attn.v\"], modules_to_save: [head]}\n");
  auto before = build_run_model(r, true);
  // The pretrained weights were loaded, the head was not.
  auto pre = load_run(runs_ / "pre");
  EXPECT_TRUE(torch::equal(before.model->named_parameters()["blocks.0.attn.q.weight"],
                           pre.run.model->named_parameters()["blocks.0.attn.q.weight"]));
  auto result = train(r, {false, true, 0});
  EXPECT_EQ(result.trainable, 4 * 2 * (16 + 16) + (16 * 3 + 3));  // 4 adapted layers, r = 2
  auto after = load_run(runs_ / "lora");
  // The base stayed frozen.
  EXPECT_TRUE(torch::equal(after.run.model->named_parameters()["blocks.1.mlp.fc1.weight"],
                           pre.run.model->named_parameters()["blocks.1.mlp.fc1.weight"]));
}

TEST_F(TinyTraining, GradAccumulationMatchesTheBigBatch) {
  // Two micro-batches of 8 cover the same samples as one batch of 16 (same epoch permutation).
  // SGD, not AdamW: Adam divides by |g|, which blows float noise on gradients that are exactly
  // zero in theory (the attention key bias) up to full-size updates.
  std::vector<std::string> common{"train.max_steps=1", "schedule.kind=constant", "schedule.warmup_steps=0",
                                  "optimizer.name=sgd", "optimizer.momentum=0", "optimizer.lr=0.5"};
  auto with = [&](std::vector<std::string> more) {
    more.insert(more.end(), common.begin(), common.end());
    return more;
  };
  auto big = train(recipe(with({"output.name=big", "data.batch_size=16"})), {false, true, 0});
  auto acc = train(recipe(with({"output.name=acc", "data.batch_size=8", "train.grad_accum=2"})), {false, true, 0});
  ASSERT_EQ(big.losses.size(), 1u);
  ASSERT_EQ(acc.losses.size(), 1u);
  EXPECT_NEAR(big.losses[0].second, acc.losses[0].second, 1e-5);
  auto a = load_run(runs_ / "big", "last"), b = load_run(runs_ / "acc", "last");
  auto pa = a.run.model->named_parameters(), pb = b.run.model->named_parameters();
  for (const auto& item : pa)
    EXPECT_LT((item.value() - pb[item.key()]).abs().max().item<double>(), 1e-5) << item.key();
}

TEST_F(TinyTraining, ClassifierRecipeGetsTheClassificationObjective) {
  EXPECT_EQ(make_objective(recipe())->name(), "classification");
}

TEST(Objective, LossScoreAndLogFieldsPerTask) {
  torch::manual_seed(0);
  ClassificationObjective cls;
  NextTokenObjective next(/*pad_id=*/0);
  auto logits = torch::randn({4, 3}), labels = torch::tensor({0, 2, 1, 2}, torch::kLong);
  EXPECT_TRUE(torch::equal(cls.loss(logits, torch::Tensor(), labels),
                           torch::nn::functional::cross_entropy(logits, labels)));
  auto lm_logits = torch::randn({2, 5, 7}), ids = torch::randint(0, 7, {2, 5}, torch::kLong);
  EXPECT_TRUE(torch::equal(next.loss(lm_logits, ids, torch::zeros({2}, torch::kLong)), lm_loss(lm_logits, ids, 0)));

  EvalResult ev;
  ev.loss = 2.0;
  ev.accuracy = 0.5;
  ev.perplexity = std::exp(2.0);
  EXPECT_DOUBLE_EQ(cls.score(ev), 0.5);   // higher accuracy is better
  EXPECT_DOUBLE_EQ(next.score(ev), -2.0);  // lower loss is better
  EXPECT_TRUE(cls.eval_fields(ev).contains("macro_f1"));
  EXPECT_FALSE(cls.eval_fields(ev).contains("perplexity"));
  EXPECT_TRUE(next.eval_fields(ev).contains("perplexity"));
  EXPECT_EQ(cls.eval_text(ev), "val loss 2.0000  val accuracy 0.5000");
  EXPECT_EQ(std::string(cls.throughput(10, 32).unit), "samples/s");
  EXPECT_DOUBLE_EQ(next.throughput(10, 32).per_second, 320);

  io::TrainState state;  // no validation ran: the LM reports no best loss
  TrainResult r;
  next.report_best(state, r);
  EXPECT_TRUE(r.lm);
  EXPECT_EQ(r.best_val_loss, -1);
  state.best_epoch = 1;
  state.best_metric = -1.5;
  next.report_best(state, r);
  EXPECT_EQ(r.best_val_loss, 1.5);
}

TEST(Schedule, WarmupThenCosine) {
  ScheduleConfig s;
  s.warmup_steps = 10;
  EXPECT_DOUBLE_EQ(scheduled_lr(s, 1.0, 0, 110), 0.1);
  EXPECT_DOUBLE_EQ(scheduled_lr(s, 1.0, 9, 110), 1.0);
  EXPECT_DOUBLE_EQ(scheduled_lr(s, 1.0, 10, 110), 1.0);
  EXPECT_NEAR(scheduled_lr(s, 1.0, 60, 110), 0.5, 1e-12);
  EXPECT_NEAR(scheduled_lr(s, 1.0, 110, 110), 0.0, 1e-12);
  s.kind = ScheduleKind::Constant;
  EXPECT_DOUBLE_EQ(scheduled_lr(s, 2.0, 50, 110), 2.0);
}

TEST(Checkpoint, InterruptedSwapFallsBackToBackup) {
  testkit::TempDir dir;
  torch::nn::Linear lin(3, 2);
  io::TrainState s;
  s.step = 4;
  io::save_checkpoint(dir / "last", *lin, nullptr, s);
  // Simulate a crash between the two renames: only the backup exists.
  fs::rename(dir / "last", dir / ".last.old");
  EXPECT_TRUE(io::checkpoint_exists(dir / "last"));
  EXPECT_EQ(io::load_train_state(dir / "last").step, 4);
  EXPECT_FALSE(fs::exists(dir / ".last.tmp"));
}

TEST(Device, AutoIsTheCpuAndCudaIsRefusedNamingTheKeyAndWhy) {
  auto config = [](const std::string& yaml) { return parse_recipe(yaml, "r.yaml").device; };
  const CudaPresence none{false, 0}, two{true, 2};
  EXPECT_EQ(resolve_device(config("seed: 0\n"), "r.yaml", none).line, "device: cpu (auto: this LibTorch has no CUDA)");
  EXPECT_TRUE(resolve_device(config("seed: 0\n"), "r.yaml", none).device.is_cpu());
  EXPECT_EQ(resolve_device(config("device: cpu\n"), "r.yaml", two).line, "device: cpu");
  const DeviceChoice auto_two = resolve_device(config("device: auto\n"), "r.yaml", two);
  EXPECT_TRUE(auto_two.device.is_cpu());
  EXPECT_NE(auto_two.line.find("sees 2 CUDA device(s)"), std::string::npos) << auto_two.line;

  const std::string no_cuda = testkit::error_of([&] { resolve_device(config("seed: 0\ndevice: cuda\n"), "r.yaml", none); });
  EXPECT_EQ(no_cuda.rfind("r.yaml:2:9: device: cuda: this LibTorch was built without CUDA", 0), 0u) << no_cuda;
  EXPECT_NE(no_cuda.find("set device: cpu"), std::string::npos) << no_cuda;
  const std::string out_of_range =
      testkit::error_of([&] { resolve_device(config("device: cuda:2\n"), "r.yaml", two); });
  EXPECT_EQ(out_of_range, "r.yaml:1:9: device: cuda:2: this machine has 2 CUDA device(s) (cuda:0..cuda:1)");
  const std::string untried = testkit::error_of([&] { resolve_device(config("device: cuda:1\n"), "r.yaml", two); });
  EXPECT_EQ(untried.rfind("r.yaml:1:9: device: cuda:1: tunekit trains on the CPU only so far", 0), 0u) << untried;
  // An absent key's errors (not reachable: absent is auto) would name the recipe file.
  DeviceConfig bare;
  bare.kind = DeviceKind::Cuda;
  EXPECT_EQ(testkit::error_of([&] { resolve_device(bare, "r.yaml", none); }).rfind("r.yaml: device: cuda:", 0), 0u);
}

TEST_F(TinyTraining, ADeviceThisMachineCannotTrainOnIsRefusedBeforeAnythingIsWritten) {
  // On this machine's LibTorch (CPU-only, or CUDA that tunekit has not been run on) device: cuda is
  // refused at once, naming the override, and leaves no run directory behind.
  const Recipe r = recipe({"device=cuda", "output.name=on_gpu"});
  const std::string error = testkit::error_of([&] { train(r, {false, true, 0}); });
  EXPECT_EQ(error.rfind("override 'device=cuda': device: cuda: ", 0), 0u) << error;
  EXPECT_FALSE(fs::exists(r.run_dir()));
  // auto and cpu train here.
  EXPECT_GT(train(recipe({"device=auto", "train.max_steps=2", "output.name=auto"}), {false, true, 0}).steps, 0);
}
