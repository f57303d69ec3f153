// A run directory is one run's: a second train/--resume on a locked directory is refused naming
// the holder, a finished run is never overwritten without --overwrite, a full disk at the start
// leaves no empty files posing as a run, a diverging run stops before anything non-finite is
// written, and a resumed run logs the same metrics lines as one that was never stopped.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/md5.h"
#include "src/io/checkpoint.h"
#include "src/recipe/recipe.h"
#include "src/train/setup.h"
#include "src/train/trainer.h"
#include "tests/helpers.h"
#include "util/error.h"
#include "util/file.h"

using namespace tunekit;
namespace fs = std::filesystem;

namespace {

// metrics.jsonl's lines of type `type` (all when empty).
std::vector<nlohmann::json> metrics_lines(const std::string& run_dir, const std::string& type = "") {
  std::vector<nlohmann::json> out;
  std::istringstream in(testkit::read_file(run_dir + "/metrics.jsonl"));
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (type.empty() || j["type"] == type) out.push_back(j);
  }
  return out;
}

int lines_in(const std::string& text) { return static_cast<int>(std::count(text.begin(), text.end(), '\n')); }

// Whether every parameter and buffer of a run's checkpoint (`which`: best | last) is finite.
bool checkpoint_finite(const std::string& run_dir, const std::string& which) {
  LoadedRun run = load_run(run_dir, which);
  for (const auto& p : run.run.model->named_parameters())
    if (!torch::isfinite(p.value()).all().item<bool>()) return false;
  return true;
}

class RunSafety : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new testkit::TempDir();
    testkit::write_synthetic_fmnist(data_->path(), 20, 4);  // 64 training images: 4 steps of 16 an epoch
  }
  static void TearDownTestSuite() { delete data_; }
  void SetUp() override {
    std::ofstream(recipe_path_) << testkit::tiny_recipe_yaml(data_->path(), runs_.path());
  }
  // The recipe file as the CLI reads it, with `overrides`.
  Recipe recipe(const std::vector<std::string>& overrides = {}) {
    return parse_recipe(testkit::read_file(recipe_path_), recipe_path_, overrides);
  }
  // `tunekit train RECIPE ARGS -q`, with `env` before it; its output in log(); the exit code.
  int train_cli(const std::string& args, const std::string& env = "") {
    const std::string cmd =
        env + " " + TUNEKIT_CLI + " train " + recipe_path_ + " " + args + " -q > " + log_path_ + " 2>&1";
    const int rc = std::system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
  }
  int cli(const std::string& args) {
    const int rc = std::system((std::string(TUNEKIT_CLI) + " " + args + " > " + log_path_ + " 2>&1").c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
  }
  std::string log() const { return testkit::read_file(log_path_); }

  static testkit::TempDir* data_;
  testkit::TempDir runs_;
  const std::string recipe_path_ = runs_ / "tiny.yaml", log_path_ = runs_ / "cli.log";
  const std::string run_dir_ = runs_ / "tiny";
};
testkit::TempDir* RunSafety::data_ = nullptr;

}  // namespace

TEST_F(RunSafety, LockedRunDirectoryIsRefusedAtOnceNamingTheHolder) {
  const std::string holder = fmt::format("(pid {}: a test holds it)", static_cast<long>(getpid()));
  {
    DirLock lock(run_dir_, "a test holds it");
    for (const char* args : {"", "--resume", "--overwrite"}) {
      SCOPED_TRACE(args);
      EXPECT_EQ(train_cli(args), 1);
      EXPECT_EQ(log(), "error: " + run_dir_ + " is in use by another tunekit process " + holder +
                           "; wait for it to finish or stop it\n");
      EXPECT_FALSE(fs::exists(run_dir_ + "/recipe.yaml"));  // nothing written
      EXPECT_FALSE(fs::exists(run_dir_ + "/checkpoints"));
    }
    // In-process too: the lock is per open file, not per process.
    EXPECT_NE(testkit::error_of([&] { train(recipe(), {false, true, 0}); }).find(holder), std::string::npos);
  }
  ASSERT_EQ(train_cli("train.epochs=1"), 0) << log();
  // Readers do not take the lock, and the lock file confuses none of them.
  DirLock lock(run_dir_, "a test holds it");
  EXPECT_EQ(cli("eval " + run_dir_), 0) << log();
  EXPECT_EQ(cli("report " + run_dir_), 0) << log();
  EXPECT_EQ(cli("export " + run_dir_ + " --batch 2"), 0) << log();
}

TEST_F(RunSafety, SecondTrainIsRefusedUnlessResumedOrOverwritten) {
  ASSERT_EQ(train_cli("train.epochs=1"), 0) << log();
  ASSERT_EQ(cli("eval " + run_dir_), 0) << log();
  const std::string metrics = testkit::read_file(run_dir_ + "/metrics.jsonl");
  const std::string weights = testkit::read_file(run_dir_ + "/checkpoints/last/model.pt");
  ASSERT_EQ(metrics_lines(run_dir_, "summary").size(), 1u);

  EXPECT_EQ(train_cli("train.epochs=1"), 1);
  EXPECT_EQ(log(), "error: " + run_dir_ +
                       " already holds a run (step 4 of 4, finished); use --resume to continue it, --overwrite to "
                       "start over, or another output.name\n");
  EXPECT_EQ(testkit::read_file(run_dir_ + "/metrics.jsonl"), metrics);
  EXPECT_EQ(testkit::read_file(run_dir_ + "/checkpoints/last/model.pt"), weights);
  EXPECT_TRUE(fs::exists(run_dir_ + "/eval_test.json"));

  // --resume of the finished run: nothing to do, no second summary.
  EXPECT_EQ(train_cli("train.epochs=1 --resume"), 0) << log();
  EXPECT_NE(log().find("trained " + run_dir_ + ": 4 steps"), std::string::npos) << log();
  EXPECT_EQ(testkit::read_file(run_dir_ + "/metrics.jsonl"), metrics);

  EXPECT_NE(train_cli("train.epochs=1 --resume --overwrite"), 0);
  // --overwrite starts over: one run's metrics, the old evaluation gone.
  EXPECT_EQ(train_cli("train.epochs=2 --overwrite"), 0) << log();
  EXPECT_EQ(metrics_lines(run_dir_, "summary").size(), 1u);
  EXPECT_EQ(metrics_lines(run_dir_, "train").front()["step"], 1);
  EXPECT_EQ(metrics_lines(run_dir_, "train").back()["step"], 8);
  EXPECT_FALSE(fs::exists(run_dir_ + "/eval_test.json"));
  EXPECT_EQ(io::load_train_state(run_dir_ + "/checkpoints/last").step, 8);
}

TEST_F(RunSafety, AnUnfinishedRunIsNamedWithItsPositionAndResumes) {
  // 2 epochs of 4 steps; stopped abruptly after step 6, the last checkpoint holds step 4.
  train(recipe({"train.epochs=2"}), {false, true, 6});
  EXPECT_EQ(train_cli("train.epochs=2"), 1);
  EXPECT_NE(log().find("already holds a run (step 4 of 8); use --resume"), std::string::npos) << log();
  EXPECT_EQ(train_cli("train.epochs=2 --resume"), 0) << log();
  EXPECT_EQ(metrics_lines(run_dir_, "summary").size(), 1u);
  EXPECT_EQ(metrics_lines(run_dir_, "train").size(), 8u);  // log_every 1: each step once
}

TEST_F(RunSafety, ResumedStateThatDoesNotFitTheRecipeIsRefused) {
  train(recipe({"train.epochs=1"}), {false, true, 0});
  const std::string dir = run_dir_ + "/checkpoints/last", state = dir + "/state.json";
  auto j = nlohmann::json::parse(testkit::read_file(state));
  j["window_n"] = 9;  // more losses in the window than steps taken
  const std::string text = j.dump(2) + "\n";
  write_file_atomic(state, text);
  // The manifest made to agree, so the state itself is what is judged.
  auto m = nlohmann::json::parse(testkit::read_file(dir + "/manifest.json"));
  for (auto& f : m["files"])
    if (f["name"] == "state.json") {
      f["size"] = text.size();
      f["md5"] = data::md5_hex(text);
    }
  write_file_atomic(dir + "/manifest.json", m.dump(2) + "\n");
  const std::string e = testkit::error_of([&] { train(recipe({"train.epochs=1"}), {true, true, 0}); });
  EXPECT_NE(e.find(state), std::string::npos) << e;
  EXPECT_NE(e.find("window_n"), std::string::npos) << e;
}

TEST_F(RunSafety, FullDiskAtTheStartLeavesNoEmptyFiles) {
  EXPECT_EQ(train_cli("", "TUNEKIT_FAULT_ENOSPC_AFTER=0"), 1);
  EXPECT_EQ(log().find("error: " + run_dir_ + "/recipe.yaml: cannot write (No space left on device)"), 0u) << log();
  EXPECT_EQ(lines_in(log()), 1) << log();
  EXPECT_FALSE(fs::exists(run_dir_ + "/recipe.yaml"));
  EXPECT_FALSE(fs::exists(run_dir_ + "/metrics.jsonl"));

  // Room for recipe.yaml, none for the first metrics line.
  const size_t recipe_bytes = recipe().resolved_yaml.size();
  EXPECT_EQ(train_cli("", fmt::format("TUNEKIT_FAULT_ENOSPC_AFTER={}", recipe_bytes)), 1);
  EXPECT_EQ(log().find("error: " + run_dir_ + "/metrics.jsonl: cannot write (No space left on device)"), 0u) << log();
  EXPECT_EQ(lines_in(log()), 1) << log();
  EXPECT_EQ(fs::file_size(run_dir_ + "/recipe.yaml"), recipe_bytes);
  EXPECT_FALSE(fs::exists(run_dir_ + "/metrics.jsonl"));

  // A file-size limit fails the write (EFBIG) instead of killing the process with SIGXFSZ.
  const std::string cmd = "bash -o pipefail -c '(ulimit -f 0; exec " + std::string(TUNEKIT_CLI) + " train " +
                          recipe_path_ + " output.name=limited -q) 2>&1 | cat > " + log_path_ + "'";
  const int rc = std::system(cmd.c_str());
  EXPECT_EQ(WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, 1) << log();
  EXPECT_EQ(log().find("error: " + (runs_ / "limited/recipe.yaml") + ": cannot write (File too large)"), 0u) << log();
  EXPECT_EQ(lines_in(log()), 1) << log();

  // Nothing there posed as a run: a plain train now runs.
  EXPECT_EQ(train_cli("train.epochs=1"), 0) << log();
}

TEST_F(RunSafety, DivergenceStopsBeforeAnythingNonFiniteIsWritten) {
  // A starting point whose head overflows float32 (every lr a recipe accepts, <= 100, is too small
  // to blow up the tiny model within a few steps): the first loss is not finite.
  const std::string start = runs_ / "huge";
  {
    RunModel rm = build_run_model(recipe({"output.name=huge"}), /*load_init=*/false);
    torch::NoGradGuard no_grad;
    for (auto& p : rm.model->named_parameters())
      if (p.key().rfind("head.", 0) == 0) p.value().fill_(3.0e38);
    io::save_checkpoint(start + "/checkpoints/best", *rm.model, nullptr, io::TrainState{});
  }
  struct Case {
    std::string overrides, hint;
  };
  const std::vector<Case> cases{
      {"train.clip_grad_norm=0",
       "at step 1: the loss is NaN; set train.clip_grad_norm (e.g. 1.0) or lower optimizer.lr (now 0.003)"},
      {"train.clip_grad_norm=1.0",
       "at step 1: the loss is NaN; lower optimizer.lr (now 0.003) or check the data (clipping at 1 is already on)"}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.overrides);
    ASSERT_EQ(train_cli("train.checkpoint_every=1 --overwrite init_from.run=" + start + " " + c.overrides), 1) << log();
    const std::string message = log();
    EXPECT_EQ(message.find("error: training diverged at step "), 0u) << message;
    EXPECT_NE(message.find(c.hint), std::string::npos) << message;
    EXPECT_EQ(lines_in(message), 1) << message;
    // What is on disk is finite: no NaN/inf checkpoint, no null in the metrics, no summary.
    for (const char* which : {"last", "best"})
      if (io::checkpoint_exists(run_dir_ + "/checkpoints/" + which))
        EXPECT_TRUE(checkpoint_finite(run_dir_, which)) << which;
    const std::string metrics = testkit::read_file(run_dir_ + "/metrics.jsonl");
    EXPECT_EQ(metrics.find("null"), std::string::npos) << metrics;
    EXPECT_EQ(metrics.find("summary"), std::string::npos) << metrics;
  }
}

TEST_F(RunSafety, ResumedRunLogsTheSameCurveAsAnUninterruptedOne) {
  // 3 epochs of 4 steps, a "train" line every 5 steps; checkpoints at steps 3, 4, 6, 8, 9.
  const std::vector<std::string> common{"train.log_every=5", "train.checkpoint_every=3", "model.dropout=0.1"};
  auto with = [&](const std::string& name) {
    auto o = common;
    o.push_back("output.name=" + name);
    return recipe(o);
  };
  train(with("full"), {false, true, 0});
  // Stopped after step 7: resumed from step 6, between two log lines.
  train(with("resumed"), {false, true, 7});
  EXPECT_EQ(io::load_train_state(runs_ / "resumed/checkpoints/last").step, 6);
  train(with("resumed"), {true, true, 0});

  const auto full = metrics_lines(runs_ / "full"), resumed = metrics_lines(runs_ / "resumed");
  ASSERT_EQ(full.size(), resumed.size());
  std::vector<int64_t> train_steps;
  for (size_t i = 0; i < full.size(); ++i) {
    SCOPED_TRACE(full[i].dump());
    EXPECT_EQ(full[i]["type"], resumed[i]["type"]);
    EXPECT_EQ(full[i]["step"], resumed[i]["step"]);
    if (full[i]["type"] == "train") {
      train_steps.push_back(full[i]["step"]);
      EXPECT_EQ(full[i]["loss"].get<double>(), resumed[i]["loss"].get<double>());  // bit for bit
      EXPECT_EQ(full[i]["lr"].get<double>(), resumed[i]["lr"].get<double>());
    }
    if (full[i]["type"] == "eval") {
      EXPECT_EQ(full[i]["loss"].get<double>(), resumed[i]["loss"].get<double>());
      EXPECT_EQ(full[i]["accuracy"].get<double>(), resumed[i]["accuracy"].get<double>());
    }
  }
  EXPECT_EQ(train_steps, (std::vector<int64_t>{5, 10, 12}));
  EXPECT_EQ(metrics_lines(runs_ / "resumed", "summary").size(), 1u);
}
