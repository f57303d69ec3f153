// safetensors reader/writer (round trip, a Python reader, malformed files) and PEFT-layout
// adapter files: key names, config, save/load, init_from, `tunekit merge`.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "adapters/attach.h"
#include "models/vit.h"
#include "src/from_recipe/adapters.h"
#include "src/io/adapter_file.h"
#include "src/io/safetensors.h"
#include "src/train/setup.h"
#include "src/train/trainer.h"
#include "util/error.h"
#include "tests/helpers.h"

using namespace tunekit;
namespace fs = std::filesystem;

namespace {
std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A valid file's bytes with a hand-written header (offsets as given) and `data_len` data bytes.
std::string handmade(const std::string& header_json, size_t data_len, uint64_t claimed_len = 0) {
  std::string out;
  uint64_t n = claimed_len ? claimed_len : header_json.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + header_json + std::string(data_len, '\0');
}

std::string error_of(const std::string& bytes) {
  try {
    io::parse_safetensors(bytes, "f.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

AdapterConfig adapter_cfg(AdapterKind kind) {
  AdapterConfig c;
  c.kind = kind;
  c.r = 2;
  c.alpha = 4;
  c.targets = {"blocks.*.attn.q", "blocks.*.attn.v"};
  c.modules_to_save = {"head"};
  c.hypernet.embed = 3;
  c.hypernet.hidden = 4;
  return c;
}

models::ViT vit() {
  return models::ViT(models::ViTOptions().image_size(8).patch(4).dim(8).depth(2).heads(2).num_classes(3));
}

// Moves every trainable parameter away from its initial value (so a loaded adapter is visible).
void perturb_trainable(torch::nn::Module& m) {
  torch::NoGradGuard g;
  for (auto& p : m.parameters())
    if (p.requires_grad()) p.add_(torch::randn_like(p) * 0.1);
}

// Copies the parameters `to` shares by name with `from`.
void copy_parameters(torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard g;
  auto src = from.named_parameters();
  for (auto& p : to.named_parameters()) p.value().copy_(src[p.key()]);
}
}  // namespace

TEST(Safetensors, RoundTripKeepsNamesDtypesShapesAndValues) {
  testkit::TempDir dir;
  std::vector<std::pair<std::string, torch::Tensor>> t{
      {"a.weight", torch::randn({3, 4})},
      {"b", torch::randn({2, 2}, torch::kDouble)},
      {"ids", torch::arange(5, torch::kLong)},
      {"half", torch::randn({4}).to(torch::kBFloat16)},
      {"mask", torch::tensor({true, false, true})},
      {"scalar", torch::tensor(2.5f)},
      {"empty", torch::zeros({0, 3})},
      {"strided", torch::randn({4, 3}).t()},  // non-contiguous input
  };
  io::write_safetensors(dir / "x.safetensors", t, {{"format", "pt"}});
  auto back = io::read_safetensors(dir / "x.safetensors");
  EXPECT_EQ(back.metadata.at("format"), "pt");
  ASSERT_EQ(back.tensors.size(), t.size());
  for (const auto& [name, value] : t) {
    const torch::Tensor* got = back.find(name);
    ASSERT_NE(got, nullptr) << name;
    EXPECT_EQ(got->scalar_type(), value.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(*got, value)) << name;
  }
  // The data starts 8-byte aligned (header padded with spaces).
  std::string bytes = slurp(dir / "x.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
}

TEST(Safetensors, AnIndependentPythonReaderAgrees) {
  // The format read with struct + json + numpy only (no safetensors package on this machine).
  testkit::TempDir dir;
  torch::manual_seed(1);
  auto a = torch::randn({3, 5}), b = torch::randn({7}, torch::kDouble);
  io::write_safetensors(dir / "x.safetensors", {{"a", a}, {"b", b}});
  std::ofstream(dir / "read.py") << R"(import json, struct, sys
import numpy as np
raw = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
h = json.loads(raw[8:8 + n]); data = raw[8 + n:]
kinds = {'F32': '<f4', 'F64': '<f8'}
for k in sorted(h):
    if k == '__metadata__': continue
    s, e = h[k]['data_offsets']
    x = np.frombuffer(data[s:e], dtype=kinds[h[k]['dtype']]).reshape(h[k]['shape'])
    print(k, ' '.join('%.9g' % v for v in x.ravel()))
)";
  std::string out = dir / "out.txt";
  std::string cmd = std::string(TUNEKIT_PYTHON) + " " + (dir / "read.py") + " " + (dir / "x.safetensors") + " > " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(out);
  for (const auto& [name, t] : std::vector<std::pair<std::string, torch::Tensor>>{{"a", a}, {"b", b}}) {
    std::string key;
    in >> key;
    EXPECT_EQ(key, name);
    auto flat = t.reshape(-1).to(torch::kDouble);
    for (int64_t i = 0; i < flat.numel(); ++i) {
      double v;
      in >> v;
      EXPECT_NEAR(v, flat[i].item<double>(), 1e-6);
    }
  }
}

TEST(Safetensors, MalformedFilesAreClearErrors) {
  testkit::TempDir dir;
  io::write_safetensors(dir / "ok.safetensors", {{"w", torch::randn({4, 4})}});
  std::string good = slurp(dir / "ok.safetensors");

  EXPECT_NE(error_of(good.substr(0, 5)).find("shorter than the 8-byte header length"), std::string::npos);
  // Truncated: the data ends early.
  EXPECT_NE(error_of(good.substr(0, good.size() - 10)).find("reach past"), std::string::npos);
  // Truncated inside the header.
  EXPECT_NE(error_of(good.substr(0, 20)).find("larger than the"), std::string::npos);
  // A header length larger than the file.
  EXPECT_NE(error_of(handmade("{}", 0, 1ull << 40)).find("header length 1099511627776 is larger"), std::string::npos);
  // Offsets past the end of the data.
  EXPECT_NE(error_of(handmade(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4)).find("reach past"),
            std::string::npos);
  // Offsets that run backwards.
  EXPECT_NE(error_of(handmade(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8)).find("backwards"),
            std::string::npos);
  // Size that does not match the shape.
  EXPECT_NE(error_of(handmade(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)).find("needs 12 bytes"),
            std::string::npos);
  // Overlapping tensors.
  EXPECT_NE(error_of(handmade(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                              8))
                .find("overlap or gap"),
            std::string::npos);
  // Bytes nobody owns at the end.
  EXPECT_NE(error_of(handmade(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 12)).find("cover 4 data bytes"),
            std::string::npos);
  // Negative dims, unknown dtypes, bad JSON.
  EXPECT_NE(error_of(handmade(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", 0)).find("negative"),
            std::string::npos);
  EXPECT_NE(error_of(handmade(R"({"w":{"dtype":"F7","shape":[1],"data_offsets":[0,4]}})", 4)).find("unsupported dtype"),
            std::string::npos);
  EXPECT_NE(error_of(handmade("{not json", 0)).find("not valid JSON"), std::string::npos);
  // A huge shape whose byte count overflows.
  EXPECT_NE(error_of(handmade(R"({"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0)).find("w"),
            std::string::npos);
  // Every message names the file.
  EXPECT_EQ(error_of(good.substr(0, 5)).rfind("f.safetensors: ", 0), 0u);
  // The reader from disk reports a missing file.
  EXPECT_THROW(io::read_safetensors(dir / "missing.safetensors"), Error);
}

TEST(AdapterFile, PeftKeyNamesForLoraAndDora) {
  auto m = vit();
  adapters::attach_adapters(*m, from_recipe::attach_options(adapter_cfg(AdapterKind::Lora)));
  std::set<std::string> keys;
  for (const auto& [k, t] : io::adapter_state(*m, adapter_cfg(AdapterKind::Lora))) keys.insert(k);
  EXPECT_EQ(keys, (std::set<std::string>{
                      "base_model.model.blocks.0.attn.q.lora_A.weight", "base_model.model.blocks.0.attn.q.lora_B.weight",
                      "base_model.model.blocks.0.attn.v.lora_A.weight", "base_model.model.blocks.0.attn.v.lora_B.weight",
                      "base_model.model.blocks.1.attn.q.lora_A.weight", "base_model.model.blocks.1.attn.q.lora_B.weight",
                      "base_model.model.blocks.1.attn.v.lora_A.weight", "base_model.model.blocks.1.attn.v.lora_B.weight",
                      "base_model.model.head.weight", "base_model.model.head.bias"}));

  auto d = vit();
  auto cfg = adapter_cfg(AdapterKind::Dora);
  auto report = adapters::attach_adapters(*d, from_recipe::attach_options(cfg));
  testkit::TempDir dir;
  io::save_adapter(dir.path(), *d, cfg, report.adapted, "runs/pre");
  auto file = io::read_safetensors(dir / "adapter_model.safetensors");
  ASSERT_NE(file.find("base_model.model.blocks.1.attn.v.lora_magnitude_vector"), nullptr);
  EXPECT_EQ(file.find("base_model.model.blocks.1.attn.v.lora_magnitude_vector")->sizes(), torch::IntArrayRef({8}));
  EXPECT_EQ(file.tensors.size(), 4u * 3 + 2);  // lora_A, lora_B, magnitude per layer + head
  auto config = nlohmann::json::parse(slurp(dir / "adapter_config.json"));
  EXPECT_EQ(config["peft_type"], "LORA");
  EXPECT_EQ(config["use_dora"], true);
  EXPECT_EQ(config["use_rslora"], false);
  EXPECT_EQ(config["r"], 2);
  EXPECT_EQ(config["lora_alpha"], 4.0);
  EXPECT_EQ(config["base_model_name_or_path"], "runs/pre");
  EXPECT_EQ(config["target_modules"].size(), 4u);
  EXPECT_EQ(config["target_modules"][0], "blocks.0.attn.q");
  EXPECT_EQ(config["modules_to_save"][0], "head");
  EXPECT_TRUE(config["task_type"].is_null());
  EXPECT_EQ(config["fan_in_fan_out"], false);
  EXPECT_FALSE(config.contains("tunekit"));  // a PEFT LORA file: tunekit's section is in the safetensors metadata
  EXPECT_EQ(nlohmann::json::parse(file.metadata.at("tunekit"))["kind"], "dora");
}

TEST(AdapterFile, OlderTunekitConfigsAndPeftsMagnitudeWithWeightSuffixLoad) {
  // Files written before the tunekit section left adapter_config.json still name their kind
  // there; some PEFT versions' tools save DoRA's magnitude as ".lora_magnitude_vector.weight".
  torch::manual_seed(4);
  auto cfg = adapter_cfg(AdapterKind::Dora);
  auto a = vit();
  auto report = adapters::attach_adapters(*a, from_recipe::attach_options(cfg));
  perturb_trainable(*a);
  testkit::TempDir dir;
  io::save_adapter(dir.path(), *a, cfg, report.adapted, "");
  auto config = nlohmann::json::parse(slurp(dir / "adapter_config.json"));
  config["tunekit"] = {{"kind", "dora"}, {"targets", cfg.targets}, {"detach_norm", true}, {"format_version", 1}};
  std::ofstream(dir / "adapter_config.json") << config.dump(2);
  auto file = io::read_safetensors(dir / "adapter_model.safetensors");
  for (auto& [name, t] : file.tensors)
    if (name.size() > 22 && name.compare(name.size() - 22, 22, ".lora_magnitude_vector") == 0) name += ".weight";
  io::write_safetensors(dir / "adapter_model.safetensors", file.tensors);

  auto b = vit();
  copy_parameters(*a, *b);
  adapters::attach_adapters(*b, from_recipe::attach_options(cfg));
  EXPECT_EQ(io::load_adapter(dir.path(), *b, cfg), static_cast<int64_t>(file.tensors.size()));
  auto x = torch::randn({2, 1, 8, 8});
  a->eval();
  b->eval();
  EXPECT_TRUE(torch::equal(a(x), b(x)));
  // The kind in that section is checked like the one use_dora gives.
  auto lora = adapter_cfg(AdapterKind::Lora);
  auto c = vit();
  adapters::attach_adapters(*c, from_recipe::attach_options(lora));
  EXPECT_NE(testkit::error_of([&] { io::load_adapter(dir.path(), *c, lora); })
                .find("holds a dora adapter but adapter.kind is lora"),
            std::string::npos);
}

TEST(AdapterFile, SaveLoadRoundTripForEveryKind) {
  for (auto kind : {AdapterKind::Lora, AdapterKind::Dora, AdapterKind::Hora, AdapterKind::Doran}) {
    SCOPED_TRACE(to_string(kind));
    torch::manual_seed(2);
    auto cfg = adapter_cfg(kind);
    cfg.hypernet.share = kind == AdapterKind::Doran ? HypernetShare::Model : HypernetShare::Parent;
    cfg.hypernet.share_seeds = kind == AdapterKind::Hora;
    auto a = vit();
    auto report = adapters::attach_adapters(*a, from_recipe::attach_options(cfg));
    perturb_trainable(*a);
    testkit::TempDir dir;
    io::save_adapter(dir.path(), *a, cfg, report.adapted, "");
    auto config = nlohmann::json::parse(slurp(dir / "adapter_config.json"));
    EXPECT_EQ(config["peft_type"],
              kind == AdapterKind::Hora ? "HORA" : kind == AdapterKind::Doran ? "DORAN" : "LORA");

    // Same base weights, fresh adapter, then load: identical outputs.
    auto b = vit();
    copy_parameters(*a, *b);
    adapters::attach_adapters(*b, from_recipe::attach_options(cfg));
    auto x = torch::randn({2, 1, 8, 8});
    a->eval();
    b->eval();
    EXPECT_FALSE(torch::allclose(a(x), b(x)));
    int64_t n = io::load_adapter(dir.path(), *b, cfg);
    EXPECT_EQ(n, static_cast<int64_t>(io::adapter_state(*a, cfg).size()));
    EXPECT_TRUE(torch::equal(a(x), b(x)));
  }
}

TEST(AdapterFile, RsLoraIsWrittenAsUseRsloraAndLoadsWithItsScale) {
  torch::manual_seed(3);
  auto cfg = adapter_cfg(AdapterKind::Lora);
  cfg.rslora = true;
  auto a = vit();
  auto report = adapters::attach_adapters(*a, from_recipe::attach_options(cfg));
  perturb_trainable(*a);
  testkit::TempDir dir;
  io::save_adapter(dir.path(), *a, cfg, report.adapted, "");
  EXPECT_EQ(nlohmann::json::parse(slurp(dir / "adapter_config.json"))["use_rslora"], true);
  auto b = vit();
  copy_parameters(*a, *b);
  adapters::attach_adapters(*b, from_recipe::attach_options(cfg));
  io::load_adapter(dir.path(), *b, cfg);
  auto x = torch::randn({2, 1, 8, 8});
  a->eval();
  b->eval();
  EXPECT_TRUE(torch::equal(a(x), b(x)));
  // The same tensors under plain LoRA's alpha/r give another output (r = 2: scale 2 vs 2.83).
  auto no_rs = adapter_cfg(AdapterKind::Lora);
  auto plain = vit();
  adapters::attach_adapters(*plain, from_recipe::attach_options(no_rs));
  copy_parameters(*a, *plain);
  plain->eval();
  EXPECT_FALSE(torch::allclose(a(x), plain(x)));
}

TEST(AdapterFile, MismatchesAreClearErrors) {
  auto cfg = adapter_cfg(AdapterKind::Lora);
  auto a = vit();
  auto report = adapters::attach_adapters(*a, from_recipe::attach_options(cfg));
  testkit::TempDir dir;
  io::save_adapter(dir.path(), *a, cfg, report.adapted, "");
  auto expect_error = [&](AdapterConfig other, const std::string& needle) {
    auto b = vit();
    adapters::attach_adapters(*b, from_recipe::attach_options(other));
    try {
      io::load_adapter(dir.path(), *b, other);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto dora = adapter_cfg(AdapterKind::Dora);
  expect_error(dora, "holds a lora adapter but adapter.kind is dora");
  auto r4 = cfg;
  r4.r = 4;
  expect_error(r4, "has r=2 but adapter.r is 4");
  auto rs = cfg;  // a file written without rsLoRA read with it would take the wrong scale
  rs.rslora = true;
  expect_error(rs, "was trained with use_rslora: false (scale alpha/r) but adapter.rslora is true");
  auto fewer = cfg;
  fewer.targets = {"blocks.*.attn.q"};
  expect_error(fewer, "has no place in this model");
  auto more = cfg;
  more.targets = {"blocks.*.attn.q", "blocks.*.attn.v", "blocks.*.attn.k"};
  expect_error(more, "no tensor 'base_model.model.blocks.0.attn.k.lora_A.weight'");
  try {
    io::resolve_adapter_dir(dir / "nowhere");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no such directory"), std::string::npos);
  }
}

class AdapterRuns : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new testkit::TempDir();
    testkit::write_synthetic_fmnist(data_->path(), 12, 4);
  }
  static void TearDownTestSuite() { delete data_; }
  Recipe recipe(const std::vector<std::string>& overrides, const std::string& extra = "") {
    return parse_recipe(testkit::tiny_recipe_yaml(data_->path(), runs_.path(), extra), "tiny.yaml", overrides);
  }
  static testkit::TempDir* data_;
  testkit::TempDir runs_;
};
testkit::TempDir* AdapterRuns::data_ = nullptr;

TEST_F(AdapterRuns, EveryKindTrainsSavesResumesFromFileAndMerges) {
  train(recipe({"output.name=pre", "train.epochs=1"}), {false, true, 0});
  for (std::string kind : {"dora", "hora", "doran", "prompt_expert", "prefix"}) {
    SCOPED_TRACE(kind);
    const bool folds = kind != "prompt_expert" && kind != "prefix";
    std::string targets = kind == "prompt_expert" ? "[\"blocks.*.mlp\", head]"
                          : kind == "prefix"      ? "[\"blocks.*.attn\"]"
                                                  : "[\"blocks.*.attn.q\", \"blocks.*.attn.v\"]";
    std::string extra = "init_from: {run: \"" + runs_ / "pre" + "\"}\nadapter: {kind: " + kind +
                        ", r: 2, prefix_length: 3, targets: " + targets + ", modules_to_save: [head]}\n";
    auto r = recipe({"output.name=" + kind, "train.epochs=4"}, extra);
    auto result = train(r, {false, true, 0});
    EXPECT_GT(result.best_val_accuracy, 0.3);
    std::string best = runs_ / (kind + "/checkpoints/best");
    ASSERT_TRUE(fs::exists(best + "/adapter_model.safetensors"));
    ASSERT_TRUE(fs::exists(best + "/adapter_config.json"));

    // adapter.init_from: a new run starting from the saved adapter computes what the run did.
    auto again = recipe({"output.name=" + kind + "_again", "adapter.init_from=" + runs_ / kind}, extra);
    auto started = build_run_model(again, /*load_init=*/true);
    EXPECT_NE(started.init_message.find("adapter: loaded"), std::string::npos) << started.init_message;
    auto done = load_run(runs_ / kind);
    auto x = torch::randn({3, 1, 28, 28});
    started.model->eval();
    done.run.model->eval();
    EXPECT_TRUE(torch::allclose(started.model->forward(x), done.run.model->forward(x), 1e-6, 1e-6));

    // tunekit merge: a run directory with a plain checkpoint that evaluates like the adapted run.
    std::string log = runs_ / "merge.log";
    std::string cmd = std::string(TUNEKIT_CLI) + " merge " + runs_ / kind + " > " + log + " 2>&1";
    if (!folds) {  // prompt experts and prefixes cannot fold: merge refuses, export writes modules
      EXPECT_NE(std::system(cmd.c_str()), 0) << cmd;
      std::string exp = std::string(TUNEKIT_CLI) + " export " + runs_ / kind + " --batch 4 > " + log + " 2>&1";
      EXPECT_EQ(std::system(exp.c_str()), 0) << exp;
      continue;
    }
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    auto merged = load_run(runs_ / (kind + "_merged"));
    EXPECT_EQ(merged.recipe.adapter.kind, AdapterKind::None);
    EXPECT_TRUE(merged.run.report.adapted.empty());
    merged.run.model->eval();
    EXPECT_TRUE(torch::allclose(merged.run.model->forward(x), done.run.model->forward(x), 1e-5, 1e-5));
  }
}
