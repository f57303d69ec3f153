// Hostile recipe values (tunekit issue 15): every number range-checked, names restricted, duplicate
// keys and unterminated quotes refused, each error naming file:line:col and the key, never the
// text of yaml-cpp or LibTorch. Plus the edge values that must still be accepted.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "src/recipe/recipe.h"
#include "src/train/setup.h"
#include "util/error.h"

using namespace tunekit;

namespace {

std::string error_of(const std::string& yaml, const std::string& source = "r.yaml",
                     const std::vector<std::string>& overrides = {}) {
  try {
    parse_recipe(yaml, source, overrides);
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("(not a tunekit::Error) ") + e.what();
  }
  return "(no error)";
}

// One hostile recipe. `yaml` marks the expected error position with '@' (removed before parsing);
// the error must read "r.yaml:LINE:COL: <key>: ..." and contain `says`.
struct Hostile {
  std::string yaml, key, says;
};

// "r.yaml:L:C" of the '@' in text, and the text without it.
std::pair<std::string, std::string> locate(const std::string& text) {
  const size_t at = text.find('@');
  EXPECT_NE(at, std::string::npos) << text;
  int line = 1, col = 1;
  for (size_t i = 0; i < at; ++i) {
    if (text[i] == '\n') ++line, col = 1;
    else ++col;
  }
  std::string clean = text;
  clean.erase(at, 1);
  return {"r.yaml:" + std::to_string(line) + ":" + std::to_string(col), clean};
}

// Text of the libraries below the recipe, which must never reach the user bare.
void expect_no_library_text(const std::string& e) {
  for (const char* bad : {"yaml-cpp", "bad conversion", "bad_alloc", "c10::", "Exception raised from", "nlohmann",
                          "[json.exception", "terminate called"})
    EXPECT_EQ(e.find(bad), std::string::npos) << e;
}

const char* kLora = "adapter:\n  kind: lora\n  targets: [\"blocks.*.attn.q\"]\n";
const char* kText = "model:\n  kind: text\n";
const char* kLab =
    "lab:\n  truth: {experts: 2, dim: 1, beta: [1, 2], bias: [0, 0], a: [1, 2], c: [0, 0], sigma: [0.5, 0.5]}\n";

std::vector<Hostile> hostile_cases() {
  const std::string lora = kLora, text = kText, lab = kLab;
  return {
      // nan / inf / overflow in every kind of real
      {"optimizer:\n  lr: @nan\n", "optimizer.lr", "expected a finite number, got 'nan'"},
      {"optimizer:\n  lr: @inf\n", "optimizer.lr", "expected a finite number, got 'inf'"},
      {"optimizer:\n  lr: @1e400\n", "optimizer.lr", "expected a finite number, got '1e400'"},
      {"optimizer:\n  lr: @.nan\n", "optimizer.lr", "expected a finite number, got '.nan'"},
      {"optimizer:\n  lr: @-.inf\n", "optimizer.lr", "expected a finite number"},
      {"optimizer:\n  lr: @-1e-3\n", "optimizer.lr", "must be in (0, 100], got -0.001"},
      {"optimizer:\n  lr: @1e9\n", "optimizer.lr", "must be in (0, 100]"},
      {"optimizer:\n  weight_decay: @NaN\n", "optimizer.weight_decay", "finite number"},
      {"optimizer:\n  weight_decay: @-0.1\n", "optimizer.weight_decay", "must be in [0, 100], got -0.1"},
      {"optimizer:\n  betas: @[0.9, 1.0]\n", "optimizer.betas", "betas[1] must be in [0, 1), got 1"},
      {"optimizer:\n  betas: @[-0.1, 0.999]\n", "optimizer.betas", "betas[0] must be in [0, 1)"},
      {"optimizer:\n  betas: [@nan, 0.999]\n", "optimizer.betas[0]", "finite number"},
      {"optimizer:\n  betas: @[0.9]\n", "optimizer.betas", "expected a list of 2 numbers, got 1"},
      {"optimizer:\n  eps: @0\n", "optimizer.eps", "must be in (0, 1], got 0"},
      {"optimizer:\n  eps: @-1e-8\n", "optimizer.eps", "must be in (0, 1]"},
      {"optimizer:\n  momentum: @1.0\n", "optimizer.momentum", "must be in [0, 1), got 1"},
      {"optimizer:\n  momentum: @-0.5\n", "optimizer.momentum", "must be in [0, 1)"},
      {"schedule:\n  min_lr_ratio: @nan\n", "schedule.min_lr_ratio", "finite number"},
      {"schedule:\n  min_lr_ratio: @1.5\n", "schedule.min_lr_ratio", "must be in [0, 1], got 1.5"},
      {"schedule:\n  warmup_steps: @-5\n", "schedule.warmup_steps", "must be >= 0, got -5"},
      {"train:\n  clip_grad_norm: @nan\n", "train.clip_grad_norm", "finite number"},
      {"train:\n  clip_grad_norm: @inf\n", "train.clip_grad_norm", "finite number"},
      {"train:\n  clip_grad_norm: @-1\n", "train.clip_grad_norm", "must be >= 0, got -1"},
      {"train:\n  epochs: @0\n", "train.epochs", "must be in 1..1000000, got 0"},
      {"train:\n  epochs: @99999999999999999999\n", "train.epochs", "expected an integer in"},
      {"train:\n  grad_accum: @1000000\n", "train.grad_accum", "must be in 1..65536"},
      {"train:\n  log_every: @0\n", "train.log_every", "must be in 1.."},
      {"data:\n  val_fraction: @nan\n", "data.val_fraction", "finite number"},
      {"data:\n  val_fraction: @1\n", "data.val_fraction", "must be in [0, 1), got 1"},
      {"data:\n  batch_size: @0\n", "data.batch_size", "must be in 1..1048576, got 0"},
      {"data:\n  batch_size: @100000000\n", "data.batch_size", "must be in 1..1048576"},
      {"data:\n  eval_batch_size: @-1\n", "data.eval_batch_size", "must be in 1..1048576"},
      {"data:\n  limit_train: @-1\n", "data.limit_train", "must be >= 0"},
      {text + "data:\n  tokenizer: {character_coverage: @.nan}\n", "data.tokenizer.character_coverage", "finite"},
      {text + "data:\n  tokenizer: {character_coverage: @1.5}\n", "data.tokenizer.character_coverage",
       "must be in (0, 1]"},
      // model sizes: bounds before LibTorch allocates anything
      {"model:\n  dropout: @nan\n", "model.dropout", "finite number"},
      {"model:\n  dropout: @1\n", "model.dropout", "must be in [0, 1), got 1"},
      {"model:\n  dropout: @-0.1\n", "model.dropout", "must be in [0, 1)"},
      {"model:\n  mlp_ratio: @1e-9\n", "model.mlp_ratio", "gives an MLP of width 0"},
      {"model:\n  mlp_ratio: @0\n", "model.mlp_ratio", "must be in (0, 64], got 0"},
      {"model:\n  mlp_ratio: @1000\n", "model.mlp_ratio", "must be in (0, 64]"},
      {"model:\n  dim: @4000000\n", "model.dim", "must be in 1..65536, got 4000000"},
      {"model:\n  dim: @0\n", "model.dim", "must be in 1..65536, got 0"},
      {"model:\n  dim: @4294967297\n", "model.dim", "must be in 1..65536, got 4294967297"},
      {"model:\n  dim: @16384\n  depth: 1024\n", "model.dim", "billion parameters"},
      {"model:\n  depth: @100000\n", "model.depth", "must be in 1..1024"},
      {"model:\n  heads: @1000\n", "model.heads", "must be in 1..128 (model.dim), got 1000"},
      {"model:\n  image_size: @100000\n", "model.image_size", "must be in 1..4096"},
      {"model:\n  channels: @3\n", "model.channels", "data.dataset fashion_mnist has 1 channel"},
      {"model:\n  image_size: @32\n", "model.image_size", "fashion_mnist has 28x28 images"},
      {"model:\n  patch: @5\n", "model.patch", "image_size 28 is not a multiple of patch 5"},
      {"model:\n  patch: @56\n", "model.patch", "must be in 1..28 (model.image_size)"},
      {"model:\n  num_classes: @0\n", "model.num_classes", "must be in 1..1048576, got 0"},
      {"model:\n  attention: {score: sigmoid, sigmoid_bias: @nan}\n", "model.attention.sigmoid_bias",
       "expected a finite number, got 'nan'"},
      {text + "  vocab_size: @100000000\n", "model.vocab_size", "must be in 1..2097152"},
      {text + "  max_seq_len: @1000000\n", "model.max_seq_len", "must be in 1..131072"},
      // threads: a cap, and no wrap-around
      {"threads:\n  torch: @100000\n", "threads.torch", "must be in 0..1024 (0 = all cores; 1024 is tunekit's cap)"},
      {"threads:\n  torch: @4294967297\n", "threads.torch", "expected an integer in -2147483648..2147483647"},
      {"threads:\n  blas: @-1\n", "threads.blas", "must be in 0..1024"},
      {"threads: @5000\n", "threads", "must be in 0..1024"},
      // adapter
      {lora + "  r: @1000\n", "adapter.r", "must be at most model.dim = 128"},
      {lora + "  r: @0\n", "adapter.r", "must be positive, got 0"},
      {lora + "  alpha: @nan\n", "adapter.alpha", "finite number"},
      {lora + "  alpha: @0\n", "adapter.alpha", "must be > 0, got 0"},
      {lora + "  dropout: @inf\n", "adapter.dropout", "finite number"},
      {lora + "  dropout: @1\n", "adapter.dropout", "must be in [0, 1)"},
      {"adapter:\n  kind: prompt_expert\n  targets: [head]\n  experts: @1000000\n", "adapter.experts",
       "must be in 1..256"},
      {"adapter:\n  kind: prefix\n  targets: [\"blocks.*.attn\"]\n  prefix_length: @1000000\n", "adapter.prefix_length",
       "must be in 1..4096"},
      {"adapter:\n  kind: prompt_expert\n  targets: [head]\n  gate: {temperature: @nan}\n", "adapter.gate.temperature",
       "finite number"},
      {"adapter:\n  kind: prompt_expert\n  targets: [head]\n  gate: {tau2: @-1}\n", "adapter.gate.tau2", "must be >= 0"},
      {"adapter:\n  kind: hora\n  targets: [\"blocks.*.attn.q\"]\n  hypernet: {embed: @10000000}\n",
       "adapter.hypernet.embed", "must be in 1..65536"},
      // seeds
      {"seed: @-1\n", "seed", "must be in 0..9223372036854775807, got -1"},
      {"seed: @99999999999999999999\n", "seed", "expected an integer in"},
      {"sweep:\n  seeds: @[1, 2, 1]\n", "sweep.seeds", "seed 1 is listed twice"},
      {"sweep:\n  seeds: @[-3]\n", "sweep.seeds", "seed -3 is negative"},
      // lab
      {lab + "  replications: @1000000000\n", "lab.replications", "must be in 1..100000"},
      {lab + "  n: @[1000000000000]\n", "lab.n", "above tunekit's cap"},
      {lab + "  fit: {tolerance: @nan}\n", "lab.fit.tolerance", "finite number"},
      {lab + "  fit: {iterations: @0}\n", "lab.fit.iterations", "must be in 1..10000000"},
      {lab + "  theory_slope: @inf\n", "lab.theory_slope", "finite number"},
      {lab + "  classes: @5000\n", "lab.classes", "must be in 0..1000"},
      // names that become directories
      {"output:\n  name: @\"..\"\n", "output.name", "'..' is not a valid run name: use letters, digits and . _ + -"},
      {"output:\n  name: @.\n", "output.name", "is not a valid run name"},
      {"output:\n  name: @a/b\n", "output.name", "is not a valid run name"},
      {"output:\n  name: @-rf\n", "output.name", "is not a valid run name"},
      {"output:\n  name: @.hidden\n", "output.name", "is not a valid run name"},
      {"output:\n  name: @\"a b\"\n", "output.name", "is not a valid run name"},
      {"output:\n  name: @" + std::string(256, 'x') + "\n", "output.name", "at most 255 characters"},
      {"output:\n  name: @\"a\\0b\"\n", "output.name", "control character (byte 0x00 at offset 1) in 'a\\x00b'"},
      {"output:\n  name: @\"a\\eb\"\n", "output.name", "control character (byte 0x1b"},
      {"output:\n  name: @\"tab\\there\"\n", "output.name", "control character (byte 0x09"},
      {"output:\n  name: @\"abc \"\n", "output.name", "leading or trailing spaces"},
      {"output:\n  name: @\"abc\n", "output.name", "the quoted string has no closing quote"},
      {"output:\n  name: @'abc \n", "output.name", "the quoted string has no closing quote"},
      {"output:\n  dir: @\"runs\\nx\"\n", "output.dir", "control character (byte 0x0a"},
      {"output:\n  dir: @\"\"\n", "output.dir", "must name a directory"},
      {lora + "  modules_to_save: [@\"head\\0\"]\n", "adapter.modules_to_save[0]", "control character"},
      {text + "data:\n  dataset: text\n  train_file: @\"a\\x01.jsonl\"\n", "data.train_file", "control character"},
      {"sweep:\n  variants:\n    - {name: @\"a\\x07\", adapter.r: 4}\n", "sweep.variants[0].name", "control character"},
      {"sweep:\n  grid:\n    train.epochs: [1, @\"2\\0\"]\n", "sweep.grid.train.epochs[1]", "control character"},
      // duplicate keys and sections; keys that are not names
      {"optimizer:\n  lr: 0.1\n  @lr: 0.2\n", "optimizer.lr", "duplicate key (first at r.yaml:2:3)"},
      {"model:\n  dim: 64\n@model:\n  dim: 32\n", "model", "duplicate key (first at r.yaml:1:1)"},
      {"model: {dim: 64, @dim: 32}\n", "model.dim", "duplicate key (first at r.yaml:1:9)"},
      {"sweep:\n  variants:\n    - {adapter.r: 4, @adapter.r: 8}\n", "sweep.variants[0].adapter.r",
       "duplicate key (first at r.yaml:3:8)"},
      {"? @[a, b]\n: 1\n", "recipe", "a key must be a plain name, not a list"},
      {"@\"a\\x01\": 1\n", "recipe", "key 'a\\x01' contains a control character"},
  };
}

}  // namespace

TEST(RecipeStrict, HostileValuesNameFileLineColumnAndKey) {
  const auto cases = hostile_cases();
  for (const auto& c : cases) {
    auto [where, yaml] = locate(c.yaml);
    SCOPED_TRACE(yaml);
    const std::string e = error_of(yaml);
    const std::string prefix = where + ": " + c.key + ": ";
    EXPECT_EQ(e.rfind(prefix, 0), 0u) << "expected to start with '" << prefix << "', got: " << e;
    EXPECT_NE(e.find(c.says), std::string::npos) << "expected '" << c.says << "' in: " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << "one line: " << e;
    EXPECT_EQ(e.find('\0'), std::string::npos);
    expect_no_library_text(e);
  }
  EXPECT_GE(cases.size(), 100u);
}

TEST(RecipeStrict, OverridesAreCheckedTheSameWay) {
  auto over = [](const std::string& o) { return error_of("", "r.yaml", {o}); };
  EXPECT_EQ(over("optimizer.lr=nan"), "override 'optimizer.lr=nan': optimizer.lr: expected a finite number, got 'nan'");
  EXPECT_EQ(over("output.name=.."),
            "override 'output.name=..': output.name: '..' is not a valid run name: use letters, digits and . _ + - "
            "(not starting with . or -), at most 255 characters");
  EXPECT_EQ(over("threads.torch=4294967297"),
            "override 'threads.torch=4294967297': threads.torch: expected an integer in -2147483648..2147483647, got "
            "'4294967297'");
  EXPECT_EQ(over("model={dim: 1, dim: 2}"),
            "override 'model={dim: 1, dim: 2}': model.dim: duplicate key (first at override 'model={dim: 1, dim: 2}')");
  EXPECT_EQ(over("output.name=\"abc"),
            "override 'output.name=\"abc': output.name: cannot parse value: illegal EOF in scalar");
  expect_no_library_text(over("output.name=\"abc"));
}

TEST(RecipeStrict, DefaultRunNameFromAnUnsafeFileName) {
  const std::string e = error_of("seed: 1\n", "dir/my run.yaml");
  EXPECT_EQ(e.rfind("dir/my run.yaml: output.name: the recipe file's name 'my run' cannot name the run", 0), 0u) << e;
  EXPECT_NE(e.find("set output.name"), std::string::npos) << e;
  EXPECT_EQ(parse_recipe("output: {name: ok}\n", "dir/my run.yaml").output.name, "ok");
}

TEST(RecipeStrict, EdgeValuesStillAccepted) {
  Recipe r = parse_recipe(
      "seed: 9223372036854775807\n"
      "threads: {torch: 1024, blas: 0}\n"
      "model: {dim: 16, heads: 2, depth: 1, mlp_ratio: 0.0625, dropout: 0.999,\n"
      "        attention: {score: sigmoid, sigmoid_bias: -10}}\n"
      "adapter: {kind: lora, r: 16, alpha: 1e-6, dropout: 0, targets: ['blocks.*.attn.q']}\n"
      "init_from: {exclude: [\"x\\\"y\"]}\n"
      "data: {val_fraction: 0, batch_size: 1048576}\n"
      "optimizer: {lr: 1e-12, weight_decay: 0, betas: [0, 0.999999], eps: 1e-30, momentum: 0}\n"
      "schedule: {min_lr_ratio: 1}\n"
      "train: {clip_grad_norm: 0}\n"
      "sweep: {seeds: [0, 1, 2]}\n"
      "output: {dir: 'my runs/x', name: 'run-1.2_a+b'}\n",
      "r.yaml");
  EXPECT_EQ(r.seed, 9223372036854775807LL);
  EXPECT_EQ(r.threads.torch, 1024);
  EXPECT_EQ(r.adapter.r, 16);
  EXPECT_EQ(r.init_from.exclude[0], "x\"y");
  EXPECT_DOUBLE_EQ(r.optimizer.eps, 1e-30);
  EXPECT_EQ(r.output.dir, "my runs/x");
  EXPECT_EQ(r.output.name, "run-1.2_a+b");
  // The rank equal to the width and an MLP one unit wide still build (what `tunekit validate` does).
  EXPECT_NO_THROW(build_run_model(r, /*load_init=*/false));
  EXPECT_EQ(parse_recipe("threads: 0\n", "r.yaml").threads.blas, 0);
  EXPECT_EQ(parse_recipe("output: {name: " + std::string(255, 'x') + "}\n", "r.yaml").output.name.size(), 255u);
  EXPECT_EQ(parse_recipe("seed: 0\n", "r.yaml").seed, 0);
  // Single-quoted strings with '' inside pass the closing-quote check.
  EXPECT_EQ(parse_recipe("model: {kind: text}\ndata: {dataset: text, train_file: 'it''s.jsonl'}\n", "r.yaml")
                .data.train_file,
            "it's.jsonl");
}

TEST(RecipeStrict, RankAboveATargetedLayerIsRefusedAtValidate) {
  // r 8 fits model.dim 16 (so the parser accepts it) but not the head's 5 classes: building the
  // model, as `tunekit validate` does, names the key and the layer.
  Recipe r = parse_recipe(
      "model: {dim: 16, heads: 2, depth: 1, num_classes: 5}\ndata: {classes: [0, 1, 2, 3, 4]}\n"
      "adapter: {kind: lora, r: 8, targets: [head]}\n",
      "r.yaml");
  std::string e;
  try {
    build_run_model(r, /*load_init=*/false);
  } catch (const Error& x) {
    e = x.what();
  }
  EXPECT_EQ(e, "r.yaml: adapter.r: 8 is above 5, the smaller side of head (16 -> 5 features); use at most 5");
  r.adapter.r = 5;
  EXPECT_NO_THROW(build_run_model(r, false));
}
