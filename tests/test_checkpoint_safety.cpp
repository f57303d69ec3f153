// Checkpoints and files that survive a full disk, damage and hostile contents (issue 15): the
// write layer's fault hook, RLIMIT_FSIZE and a tiny tmpfs; flipped and truncated files against
// the manifest; hostile state.json values; a reader beside a writer; adapter tensors.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "adapters/attach.h"
#include "data/md5.h"
#include "models/vit.h"
#include "src/from_recipe/adapters.h"
#include "src/io/adapter_file.h"
#include "src/io/checkpoint.h"
#include "src/io/safetensors.h"
#include "tests/helpers.h"
#include "util/error.h"
#include "util/file.h"

using namespace tunekit;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct NetImpl : torch::nn::Module {
  explicit NetImpl(int64_t width = 32) {
    a = register_module("a", torch::nn::Linear(width, 16));
    b = register_module("b", torch::nn::Linear(16, 4));
    register_buffer("count", torch::zeros({1}));
  }
  torch::Tensor forward(const torch::Tensor& x) { return b->forward(torch::relu(a->forward(x))); }
  torch::nn::Linear a{nullptr}, b{nullptr};
};
TORCH_MODULE(Net);

// Writes a checkpoint of step `step` whose every parameter holds the value `step`.
void save_step(const std::string& dir, Net& net, torch::optim::Optimizer& opt, int64_t step,
               const std::function<void(const std::string&)>& extra = {}) {
  {
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters()) p.fill_(static_cast<double>(step));
  }
  io::TrainState s;
  s.step = step;
  s.epoch = 1;
  s.samples = step * 8;
  io::save_checkpoint(dir, *net, &opt, s, extra);
}

// The step a checkpoint says, after checking that its weights are that step's.
int64_t loaded_step(const std::string& dir, int64_t width = 32) {
  io::Checkpoint ck(dir);
  Net net(width);
  ck.load_weights(*net, {}, true, false);
  for (const auto& p : net->parameters())
    if (!torch::all(p == static_cast<double>(ck.state().step)).item<bool>()) return -1;
  return ck.state().step;
}

std::unique_ptr<torch::optim::Adam> adam_of(Net& net) {
  auto opt = std::make_unique<torch::optim::Adam>(net->parameters(), torch::optim::AdamOptions(1e-3));
  net->forward(torch::randn({2, net->a->options.in_features()})).sum().backward();
  opt->step();  // so the optimizer has state to save
  return opt;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void spit(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

bool leftovers(const std::string& parent) {
  for (const auto& e : fs::recursive_directory_iterator(parent)) {
    const std::string name = e.path().filename().string();
    if (name.size() >= 4 && name.substr(name.size() - 4) == ".tmp") return true;
  }
  return false;
}

// Rewrites state.json with `edit` applied and the manifest updated to match: a checkpoint that
// passes its checksums, so only the field checks stand between the values and the run.
void rewrite_state(const std::string& dir, const std::function<void(json&)>& edit, const std::string& raw = "") {
  json state = json::parse(slurp(dir + "/state.json"));
  edit(state);
  const std::string text = raw.empty() ? state.dump(2) : raw;
  spit(dir + "/state.json", text);
  json manifest = json::parse(slurp(dir + "/manifest.json"));
  for (auto& f : manifest["files"])
    if (f["name"] == "state.json") {
      f["size"] = text.size();
      f["md5"] = data::md5_hex(text);
    }
  spit(dir + "/manifest.json", manifest.dump(2));
}

class CheckpointSafety : public ::testing::Test {
 protected:
  void SetUp() override {
    net_ = Net();
    opt_ = adam_of(net_);
    dir_ = tmp_ / "checkpoints/last";
    save_step(dir_, net_, *opt_, 1);
  }
  void TearDown() override { set_write_fault(-1); }
  testkit::TempDir tmp_;
  Net net_{nullptr};
  std::unique_ptr<torch::optim::Adam> opt_;
  std::string dir_;
};

}  // namespace

// (a) ENOSPC at offsets spanning the whole checkpoint: one error naming the file, the previous
// checkpoint intact and loadable, no temporary left.
TEST_F(CheckpointSafety, FullDiskAnywhereKeepsThePreviousCheckpoint) {
  int64_t total = 0;
  for (const auto& e : fs::directory_iterator(dir_)) total += static_cast<int64_t>(e.file_size());
  std::vector<int64_t> offsets{0, 1, total - 1};
  for (int k = 1; k < 24; ++k) offsets.push_back(total * k / 24);
  int64_t start = 0;  // a few bytes into each file, in the order they are written
  for (const char* f : {"model.pt", "optimizer.pt", "rng.pt", "state.json", "manifest.json"}) {
    offsets.push_back(start + 5);
    start += static_cast<int64_t>(fs::file_size(dir_ + "/" + f));
  }
  std::set<std::string> named;
  for (int64_t n : offsets) {
    set_write_fault(n);
    const std::string err = testkit::error_of([&] { save_step(dir_, net_, *opt_, 2); });
    set_write_fault(-1);
    ASSERT_NE(err.find("No space left on device"), std::string::npos) << "at " << n << ": " << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
    EXPECT_NE(err.find("previous checkpoint there is kept"), std::string::npos) << err;
    for (const char* f : {"model.pt", "optimizer.pt", "rng.pt", "state.json", "manifest.json"})
      if (err.find(dir_ + "/" + f + ":") != std::string::npos) named.insert(f);
    EXPECT_EQ(loaded_step(dir_), 1) << "at " << n;
    EXPECT_FALSE(leftovers(tmp_.path())) << "at " << n;
    EXPECT_FALSE(fs::exists(tmp_ / "checkpoints/.last.tmp"));
  }
  for (const char* f : {"model.pt", "optimizer.pt", "state.json", "manifest.json"}) EXPECT_TRUE(named.count(f)) << f;
  set_write_fault(total + 1000);  // room enough: the save goes through
  save_step(dir_, net_, *opt_, 2);
  set_write_fault(-1);
  EXPECT_EQ(loaded_step(dir_), 2);
}

// (b) The process's file size limit (RLIMIT_FSIZE, EFBIG) in a forked child.
TEST_F(CheckpointSafety, FileSizeLimitIsAnErrorAndKeepsThePreviousCheckpoint) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim {1500, 1500};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    std::string err = testkit::error_of([&] { save_step(dir_, net_, *opt_, 2); });
    if (::write(fds[1], err.data(), err.size()) < 0) ::_exit(3);
    ::_exit(err.empty() ? 1 : 0);
  }
  ::close(fds[1]);
  std::string err;
  char buf[512];
  for (ssize_t r; (r = ::read(fds[0], buf, sizeof buf)) > 0;) err.append(buf, static_cast<size_t>(r));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << err;
  EXPECT_NE(err.find(dir_ + "/model.pt: cannot write (File too large)"), std::string::npos) << err;
  EXPECT_EQ(loaded_step(dir_), 1);
  EXPECT_FALSE(leftovers(tmp_.path()));
}

// (c) A real full disk: a 128 KiB tmpfs (needs root and mount; skipped otherwise).
TEST(CheckpointSafetyTmpfs, SavingUntilTheDiskIsFull) {
  if (::geteuid() != 0) GTEST_SKIP() << "not root: cannot mount a tmpfs";
  testkit::TempDir tmp;
  const std::string mnt = tmp / "disk";
  fs::create_directories(mnt);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=128k") != 0)
    GTEST_SKIP() << "mount -t tmpfs failed: " << std::strerror(errno);
  struct Unmount {
    std::string dir;
    ~Unmount() { ::umount2(dir.c_str(), MNT_DETACH); }
  } unmount{mnt};
  const std::string dir = mnt + "/last";
  Net small;
  auto small_opt = adam_of(small);
  save_step(dir, small, *small_opt, 1);
  ASSERT_EQ(loaded_step(dir), 1);
  Net big(2048);  // 2048x16 floats (128 KiB), and twice that in Adam's moments: more than the disk holds
  auto big_opt = adam_of(big);
  const std::string err = testkit::error_of([&] { save_step(dir, big, *big_opt, 2); });
  EXPECT_NE(err.find("No space left on device"), std::string::npos) << err;
  EXPECT_NE(err.find(dir + "/"), std::string::npos) << err;
  EXPECT_EQ(loaded_step(dir), 1);
  EXPECT_FALSE(leftovers(mnt));
  save_step(dir, small, *small_opt, 3);  // the space the failed save took is free again
  EXPECT_EQ(loaded_step(dir), 3);
}

// (d) A flipped byte in any file of the checkpoint, a truncated file, a missing manifest.
TEST_F(CheckpointSafety, DamagedFilesAreNamed) {
  const auto extra = [](const std::string& d) {
    io::write_safetensors(d + "/adapter_model.safetensors", {{"w", torch::ones({4, 4})}});
  };
  save_step(dir_, net_, *opt_, 2, extra);
  const std::string good = tmp_ / "good";
  fs::copy(dir_, good);
  for (const char* f : {"model.pt", "optimizer.pt", "state.json", "rng.pt", "adapter_model.safetensors"}) {
    fs::remove_all(dir_);
    fs::copy(good, dir_);
    std::string bytes = slurp(dir_ + "/" + f);
    bytes[bytes.size() / 2] ^= 0x10;
    spit(dir_ + "/" + f, bytes);
    const std::string want = dir_ + "/" + f + ": checksum mismatch";
    EXPECT_NE(testkit::error_of([&] { io::Checkpoint ck(dir_); }).find(want), std::string::npos) << f;
    Net other;
    EXPECT_NE(testkit::error_of([&] { io::load_weights(dir_, *other, {}, true, false); }).find(want),
              std::string::npos)
        << f;
    EXPECT_NE(testkit::error_of([&] { io::load_train_state(dir_); }).find(want), std::string::npos) << f;
    if (std::string(f) == "adapter_model.safetensors") {  // adapter.init_from pointing into a checkpoint
      AdapterConfig cfg;
      const std::string err = testkit::error_of([&] { io::load_adapter(dir_, *other, cfg); });
      EXPECT_NE(err.find(want), std::string::npos) << err;
    }
  }
  fs::remove_all(dir_);
  fs::copy(good, dir_);
  fs::resize_file(dir_ + "/model.pt", fs::file_size(dir_ + "/model.pt") - 100);
  EXPECT_NE(testkit::error_of([&] { io::load_train_state(dir_); }).find("model.pt: "), std::string::npos);
  EXPECT_NE(testkit::error_of([&] { io::load_train_state(dir_); }).find("manifest.json says"), std::string::npos);
  fs::remove(dir_ + "/model.pt");
  EXPECT_NE(testkit::error_of([&] { io::load_train_state(dir_); }).find(dir_ + "/model.pt: missing"),
            std::string::npos);
  fs::remove_all(dir_);
  fs::copy(good, dir_);
  fs::remove(dir_ + "/manifest.json");
  EXPECT_NE(testkit::error_of([&] { io::load_train_state(dir_); }).find(dir_ + "/manifest.json: missing"),
            std::string::npos);
  // A checkpoint from before manifests (no "format" in state.json) still loads, with a warning.
  rewrite_state(good, [](json& j) { j.erase("format"); });
  fs::remove(good + "/manifest.json");
  EXPECT_EQ(loaded_step(good), 2);
}

// (e) Hostile values in state.json (with a manifest that matches them): an error naming the key.
TEST_F(CheckpointSafety, HostileStateValuesAreRefused) {
  const std::string good = tmp_ / "good";
  fs::copy(dir_, good);
  struct Case {
    std::function<void(json&)> edit;
    std::string raw, want;
  };
  const std::vector<Case> cases{
      {[](json& j) { j["epoch"] = -3; }, "", "state.json: epoch: must be an integer from 0"},
      {[](json& j) { j["step"] = int64_t(1) << 62; }, "", "state.json: step: must be an integer from 0"},
      {[](json& j) { j["step"] = uint64_t(1) << 63; }, "", "state.json: step: must be an integer"},
      {[](json& j) { j["batch_in_epoch"] = -5; }, "", "state.json: batch_in_epoch: must be"},
      {[](json& j) { j["samples"] = "12"; }, "", "state.json: samples: must be an integer"},
      {[](json& j) { j["step"] = 2.5; }, "", "state.json: step: must be an integer"},
      {[](json& j) { j["best_metric"] = nullptr; }, "", "state.json: best_metric: must be a finite number"},
      {[](json& j) { j["window_n"] = -1; }, "", "state.json: window_n: must be"},
      {[](json& j) { j["best_epoch"] = -2; }, "", "state.json: best_epoch: must be"},
      {[](json& j) { j["trainable_only"] = "yes"; }, "", "state.json: trainable_only: must be true or false"},
      {[](json& j) { j.erase("step"); }, "", "state.json: step: missing"},
      {[](json& j) { j["stpe"] = 3; }, "", "state.json: stpe: unknown key"},
      {[](json& j) { j["format"] = 99; }, "", "state.json: format: 99 is not one this tunekit reads"},
      {[](json&) {}, "{\"epoch\": 1, \"best_metric\": NaN}", "state.json: not valid JSON"},
      {[](json&) {}, "[1, 2]", "state.json: not a JSON object"},
  };
  for (const auto& c : cases) {
    fs::remove_all(dir_);
    fs::copy(good, dir_);
    rewrite_state(dir_, c.edit, c.raw);
    const std::string err = testkit::error_of([&] { io::load_train_state(dir_); });
    EXPECT_NE(err.find(dir_ + "/" + c.want), std::string::npos) << "want " << c.want << ", got " << err;
  }
}

TEST_F(CheckpointSafety, StateIsCheckedAgainstTheRun) {
  io::TrainState s;
  s.epoch = 2;
  s.batch_in_epoch = 3;
  s.step = 20;
  EXPECT_EQ(testkit::error_of([&] { io::check_train_state(s, 3, 10, 30, "d"); }), "");
  EXPECT_NE(testkit::error_of([&] { io::check_train_state(s, 1, 10, 30, "d"); }).find("d/state.json: epoch: 2 is past"),
            std::string::npos);
  EXPECT_NE(testkit::error_of([&] { io::check_train_state(s, 3, 2, 30, "d"); }).find("batch_in_epoch: 3 is past"),
            std::string::npos);
  EXPECT_NE(testkit::error_of([&] { io::check_train_state(s, 3, 10, 19, "d"); }).find("step: 20 is past"),
            std::string::npos);
}

// Non-finite weights in model.pt (whatever wrote them) are refused, naming the tensor.
TEST_F(CheckpointSafety, NonFiniteWeightsAreRefused) {
  {
    torch::NoGradGuard no_grad;
    net_->b->bias[1] = std::numeric_limits<float>::quiet_NaN();
  }
  io::save_checkpoint(dir_, *net_, nullptr, io::TrainState{});
  Net other;
  EXPECT_NE(testkit::error_of([&] { io::load_weights(dir_, *other, {}, true, false); })
                .find("model.pt: tensor 'b.bias' holds NaN or Inf"),
            std::string::npos);
}

// A checkpoint of a gated ViT from before issue 19 (the gate with tunekit's bias) loaded into the
// default, bias-free gate: refused, naming the key that loads it, not silently dropped.
TEST_F(CheckpointSafety, GateBiasTheModelLacksIsRefused) {
  auto vit = [](bool gate_bias) {
    models::AttentionVariant v;
    v.gate = models::Gate::SdpaElementwise;
    v.gate_bias = gate_bias;
    return models::ViT(models::ViTOptions().image_size(8).patch(4).dim(8).depth(1).heads(2).num_classes(3).attention(v));
  };
  auto old = vit(true);
  io::save_checkpoint(dir_, *old, nullptr, io::TrainState{});
  auto now = vit(false);
  EXPECT_NE(testkit::error_of([&] { io::load_weights(dir_, *now, {}, true, false); })
                .find("model.pt: tensor 'blocks.0.attn.gate.bias' is a gate bias this model does not have"),
            std::string::npos);
  auto same = vit(true);
  EXPECT_GT(io::load_weights(dir_, *same, {}, true, false), 0);
  EXPECT_TRUE(torch::equal(same->blocks[0]->attn->gate->bias, old->blocks[0]->attn->gate->bias));
}

// (f) A run replacing the checkpoint again and again while another process reads it: every read
// gets one whole checkpoint (its state and its weights agree).
TEST_F(CheckpointSafety, ReaderBesideAWriterSeesWholeCheckpoints) {
  std::atomic<bool> done{false};
  std::string writer_error;
  std::thread writer([&] {
    try {
      for (int64_t step = 2; step <= 40; ++step) save_step(dir_, net_, *opt_, step);
    } catch (const std::exception& e) {
      writer_error = e.what();
    }
    done = true;
  });
  int reads = 0, failures = 0;
  int64_t last = 0;
  std::string first_failure;
  while (!done || reads < 3) {
    try {
      const int64_t step = loaded_step(dir_);
      if (step < last || step < 1) ++failures;
      last = std::max(last, step);
    } catch (const std::exception& e) {
      if (first_failure.empty()) first_failure = e.what();
      ++failures;
    }
    ++reads;
  }
  writer.join();
  EXPECT_EQ(writer_error, "");
  EXPECT_EQ(failures, 0) << first_failure;
  EXPECT_GE(reads, 3);
  EXPECT_EQ(loaded_step(dir_), 40);
}

// (g) Adapter tensors whose dtype was changed to an integer type, or that hold NaN.
TEST(CheckpointSafetyAdapter, WrongDtypeAndNonFiniteAdapterTensorsAreRefused) {
  AdapterConfig cfg;
  cfg.kind = AdapterKind::Lora;
  cfg.r = 2;
  cfg.alpha = 4;
  cfg.targets = {"blocks.*.attn.q"};
  auto make = [] {
    return models::ViT(models::ViTOptions().image_size(8).patch(4).dim(8).depth(1).heads(2).num_classes(3));
  };
  auto a = make();
  auto report = adapters::attach_adapters(*a, from_recipe::attach_options(cfg));
  testkit::TempDir dir;
  io::save_adapter(dir.path(), *a, cfg, report.adapted, "");
  const std::string weights = dir / "adapter_model.safetensors";
  const auto good = io::read_safetensors(weights);
  ASSERT_FALSE(good.tensors.empty());
  const std::string name = good.tensors[0].first;
  auto load = [&] {
    auto b = make();
    adapters::attach_adapters(*b, from_recipe::attach_options(cfg));
    return testkit::error_of([&] { io::load_adapter(dir.path(), *b, cfg); });
  };
  EXPECT_EQ(load(), "");
  auto as_int = good.tensors;
  as_int[0].second = torch::ones_like(as_int[0].second).to(torch::kInt);
  io::write_safetensors(weights, as_int);
  EXPECT_NE(load().find(weights + ": tensor '" + name + "' is stored as Int"), std::string::npos) << load();
  auto with_nan = good.tensors;
  with_nan[0].second = with_nan[0].second.clone();
  with_nan[0].second.view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
  io::write_safetensors(weights, with_nan);
  EXPECT_NE(load().find(weights + ": tensor '" + name + "' holds NaN or Inf"), std::string::npos) << load();
  io::write_safetensors(weights, good.tensors);
  json config = json::parse(slurp(dir / "adapter_config.json"));
  config["lora_alpha"] = "4";
  spit(dir / "adapter_config.json", config.dump());
  EXPECT_NE(load().find("adapter_config.json: lora_alpha: needs a number"), std::string::npos) << load();
  config["lora_alpha"] = 4;
  config["lora_dropout"] = 3;
  spit(dir / "adapter_config.json", config.dump());
  EXPECT_NE(load().find("adapter_config.json: lora_dropout: needs a number from 0"), std::string::npos) << load();
}

// (h) The write layer itself.
TEST(AtomicWrites, UncommittedOrFailedWritesKeepTheOldContent) {
  testkit::TempDir dir;
  const std::string path = dir / "f.txt";
  write_file_atomic(path, "old\n");
  {
    AtomicFile f(path);
    f.write("new content\n");
  }  // destroyed without commit
  EXPECT_EQ(slurp(path), "old\n");
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  set_write_fault(3);
  const std::string err = testkit::error_of([&] { write_file_atomic(path, "new content\n"); });
  set_write_fault(-1);
  EXPECT_NE(err.find(path + ": cannot write (No space left on device)"), std::string::npos) << err;
  EXPECT_EQ(slurp(path), "old\n");
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  // A safetensors file goes through the same layer.
  const std::string st = dir / "x.safetensors";
  io::write_safetensors(st, {{"w", torch::ones({8})}});
  const std::string before = slurp(st);
  set_write_fault(20);
  EXPECT_NE(testkit::error_of([&] { io::write_safetensors(st, {{"w", torch::zeros({8})}}); }).find(st + ": cannot write"),
            std::string::npos);
  set_write_fault(-1);
  EXPECT_EQ(slurp(st), before);
  EXPECT_FALSE(fs::exists(st + ".tmp"));
}

TEST(AtomicWrites, AFailedAppendLeavesTheWholeLinesBefore) {
  testkit::TempDir dir;
  const std::string path = dir / "log.jsonl";
  {
    AppendFile log(path);
    log.append("{\"a\": 1}\n");
    set_write_fault(4);
    const std::string err = testkit::error_of([&] { log.append("{\"b\": 2}\n"); });
    set_write_fault(-1);
    EXPECT_NE(err.find(path + ": cannot write (No space left on device)"), std::string::npos) << err;
    log.append("{\"c\": 3}\n");
  }
  EXPECT_EQ(slurp(path), "{\"a\": 1}\n{\"c\": 3}\n");
}
