// Hugging Face checkpoints end to end, through the `tunekit` command as a user runs it: a tiny
// Llama directory (written by tests/hf_reference.py, an implementation independent of tunekit)
// is fine-tuned with LoRA from a recipe (model.from_hf), evaluated, sampled, exported to
// TorchScript and merged back into a Hugging Face directory; the adapter tunekit writes is
// applied by the reference script as PEFT would apply it, and a PEFT adapter the script writes is
// merged and exported by tunekit. A tiny ViT directory is fine-tuned on Fashion-MNIST-shaped
// images (resized and normalised as its preprocessor_config.json says). Recipe errors last.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/import.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "adapters/lowrank.h"
#include "data/tokenizer.h"
#include "models/linear.h"
#include "models/precision.h"
#include "src/io/safetensors.h"
#include "src/recipe/recipe.h"
#include "src/train/setup.h"
#include "util/error.h"
#include "tests/helpers.h"
#include "tests/text_helpers.h"

using namespace tunekit;
namespace fs = std::filesystem;

namespace {

const std::string kReference = std::string(TUNEKIT_SOURCE_DIR) + "/tests/hf_reference.py";

int run(const std::string& cmd) { return WEXITSTATUS(std::system(cmd.c_str())); }

// Runs `tunekit ARGS`, its output into `log`; returns the exit code.
int tunekit_cli(const std::string& args, const std::string& log) {
  return run(std::string(TUNEKIT_CLI) + " " + args + " > " + log + " 2>&1");
}

int reference(const std::string& args, const std::string& log) {
  return run(std::string(TUNEKIT_PYTHON) + " " + kReference + " " + args + " > " + log + " 2>&1");
}

torch::Tensor tensor_of(const std::string& file, const std::string& name) {
  auto f = io::read_safetensors(file);
  const torch::Tensor* t = f.find(name);
  if (!t) throw std::runtime_error(file + ": no tensor " + name);
  return *t;
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(torch::kFloat) - b.to(torch::kFloat)).abs().max().item<double>();
}

nlohmann::json json_of(const std::string& path) { return nlohmann::json::parse(testkit::read_file(path)); }

// A tiny Llama directory with a sentencepiece tokenizer.model trained on the synthetic mails,
// and the mails as JSONL.
void write_llama_and_corpus(const testkit::TempDir& d) {
  auto c = testkit::synthetic_mails(240, 7);
  testkit::write_jsonl(d / "train.jsonl", c, 0, 200);
  testkit::write_jsonl(d / "val.jsonl", c, 200, 240);
  ASSERT_EQ(reference("make --family llama --out " + (d / "llama") + " --vocab 448 --hidden 32 --heads 4 --kv-heads 2 "
                      "--layers 2 --max-positions 64 --untied --seed 3",
                      d / "make.log"),
            0)
      << testkit::read_file(d / "make.log");
  data::TokenizerTrainOptions o;
  o.type = "bpe";
  o.vocab_size = 400;
  data::Tokenizer::train(c.texts, o, d / "llama/tokenizer.model");
}

std::string llama_recipe(const testkit::TempDir& d, const std::string& extra = "") {
  return fmt::format(R"(seed: 1
threads: {{torch: 1, blas: 1}}
model: {{from_hf: "{0}/llama", max_seq_len: 24}}
adapter: {{kind: lora, r: 4, alpha: 8, targets: [q_proj, v_proj]}}
data: {{dataset: text, train_file: "{0}/train.jsonl", val_file: "{0}/val.jsonl", batch_size: 8}}
optimizer: {{lr: 1.0e-2}}
train: {{max_steps: 8, log_every: 2, checkpoint_every: 4}}
output: {{dir: "{0}/runs", name: llama_lora}}
{1})",
                     d.path(), extra);
}

}  // namespace

TEST(HfCli, LlamaLoraTrainEvalGenerateExportMergeAndPeftApply) {
  testkit::TempDir d;
  write_llama_and_corpus(d);
  std::ofstream(d / "llama_lora.yaml") << llama_recipe(d);
  ASSERT_EQ(tunekit_cli("train " + (d / "llama_lora.yaml") + " -q", d / "train.log"), 0) << testkit::read_file(d / "train.log");
  const std::string run_dir = d / "runs/llama_lora", best = run_dir + "/checkpoints/best";

  // The adapter as PEFT writes it, named after the directory (not an absolute path).
  auto config = json_of(best + "/adapter_config.json");
  EXPECT_EQ(config["peft_type"], "LORA");
  EXPECT_EQ(config["task_type"], "CAUSAL_LM");
  EXPECT_EQ(config["base_model_name_or_path"], "llama");
  EXPECT_EQ(config["r"], 4);
  auto adapter = io::read_safetensors(best + "/adapter_model.safetensors");
  ASSERT_NE(adapter.find("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"), nullptr);
  EXPECT_EQ(adapter.find("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")->sizes(),
            torch::IntArrayRef({4, 32}));
  // The checkpoint holds what was trained, not the frozen base.
  EXPECT_LT(fs::file_size(best + "/model.pt") * 4, fs::file_size(d / "llama/model.safetensors"));

  ASSERT_EQ(tunekit_cli("eval " + run_dir + " --split val", d / "eval.log"), 0) << testkit::read_file(d / "eval.log");
  EXPECT_NE(testkit::read_file(d / "eval.log").find("perplexity"), std::string::npos);
  ASSERT_EQ(tunekit_cli("generate " + run_dir + " --prompt hello --max-new-tokens 4 --temperature 0", d / "gen.log"), 0)
      << testkit::read_file(d / "gen.log");

  // tunekit's adapted model on the reference input.
  LoadedRun loaded = load_run(run_dir);
  loaded.run.model->eval();
  torch::Tensor input = tensor_of(d / "llama/reference.safetensors", "input");
  torch::Tensor ours;
  {
    torch::NoGradGuard no_grad;
    ours = loaded.run.model->forward(input);
  }
  EXPECT_GT(max_diff(ours, tensor_of(d / "llama/reference.safetensors", "logits")), 1e-4) << "the adapter changed nothing";

  // PEFT's view of tunekit's adapter: applied to the base by the reference script.
  ASSERT_EQ(reference("apply --base " + (d / "llama") + " --adapter " + best + " --out " + (d / "applied.safetensors"),
                      d / "apply.log"),
            0)
      << testkit::read_file(d / "apply.log");
  EXPECT_LT(max_diff(ours, tensor_of(d / "applied.safetensors", "logits")), 1e-4);

  // Merged back into a Hugging Face directory: the reference reads it like the original.
  ASSERT_EQ(tunekit_cli("merge " + run_dir + " --format hf --out " + (d / "merged"), d / "merge.log"), 0)
      << testkit::read_file(d / "merge.log");
  EXPECT_TRUE(fs::exists(d / "merged/tokenizer.model"));
  EXPECT_EQ(json_of(d / "merged/config.json")["model_type"], "llama");
  ASSERT_EQ(reference("forward --model " + (d / "merged") + " --input " + (d / "llama/reference.safetensors") + " --out " +
                          (d / "merged_logits.safetensors"),
                      d / "forward.log"),
            0)
      << testkit::read_file(d / "forward.log");
  EXPECT_LT(max_diff(ours, tensor_of(d / "merged_logits.safetensors", "logits")), 1e-4);

  // TorchScript of the base with tunekit's adapter merged in, loaded back in C++.
  ASSERT_EQ(tunekit_cli("export " + (d / "llama") + " --adapter " + best + " --out " + (d / "llama.pt"), d / "export.log"), 0)
      << testkit::read_file(d / "export.log");
  auto script = torch::jit::load(d / "llama.pt");
  EXPECT_LT(max_diff(script.forward({input}).toTensor(), ours), 1e-4);
}

// model.frozen_dtype while training: the frozen base is stored narrow as the checkpoint is read
// (src/hf/load.h), and the model is the one narrowing after the load gives: every Linear weight
// the same bytes, adapter.modules_to_save (the untied lm_head here) float32 and trained, LoRA's
// factors the same. DoRA's magnitude starts at the stored weight's row norms, so the adapted model
// starts exactly at the stored base. Then `tunekit train` says what it did.
TEST(HfCli, FrozenBaseStoredNarrowWhileLoading) {
  testkit::TempDir d;
  write_llama_and_corpus(d);
  std::ofstream(d / "llama_lora.yaml") << llama_recipe(d);
  for (const std::string kind : {"lora", "dora"})
    for (const std::string dtype : {"bf16", "int8"}) {
      const std::string what = kind + " " + dtype;
      Recipe r = load_recipe(d / "llama_lora.yaml", {"adapter.kind=" + kind, "model.frozen_dtype=" + dtype,
                                                     "adapter.modules_to_save=[lm_head]"});
      torch::manual_seed(5);
      RunModel at_load = build_run_model(r, /*load_init=*/true, /*store_frozen=*/true);
      torch::manual_seed(5);
      RunModel after = build_run_model(r, /*load_init=*/true, /*store_frozen=*/false);
      models::store_frozen_weights(*after.model, r.model.frozen_dtype);
      EXPECT_GT(at_load.narrowed_at_load, 0) << what;
      EXPECT_EQ(at_load.narrowed_at_load, models::frozen_bytes_saved(*after.model)) << what;
      EXPECT_EQ(after.narrowed_at_load, 0) << what;
      auto after_modules = after.model->named_modules("", false);
      std::map<std::string, torch::Tensor> stored;
      for (const auto& item : at_load.model->named_modules("", false)) {
        auto* lin = dynamic_cast<models::LinearImpl*>(item.value().get());
        if (!lin) continue;
        auto* ref = dynamic_cast<models::LinearImpl*>(after_modules[item.key()].get());
        ASSERT_NE(ref, nullptr) << what << " " << item.key();
        EXPECT_TRUE(torch::equal(lin->weight, ref->weight)) << what << " " << item.key();
        const bool head = item.key() == "lm_head";
        EXPECT_EQ(models::narrow_weight(lin->weight), !head) << what << " " << item.key();
        EXPECT_EQ(lin->weight.requires_grad(), head) << what << " " << item.key();
        stored[item.key()] = lin->weight;
      }
      auto ref_params = after.model->named_parameters();
      int magnitudes = 0;
      for (const auto& p : at_load.model->named_parameters()) {
        const std::string tail = ".adapter.lora_magnitude_vector";
        if (p.key().size() > tail.size() && p.key().compare(p.key().size() - tail.size(), tail.size(), tail) == 0) {
          const auto& W = stored.at(p.key().substr(0, p.key().size() - tail.size()));
          EXPECT_TRUE(torch::allclose(p.value(), adapters::row_norm(W), 1e-6, 0)) << what << " " << p.key();
          ++magnitudes;
        } else if (p.value().scalar_type() == torch::kFloat) {
          EXPECT_TRUE(torch::equal(p.value(), ref_params[p.key()])) << what << " " << p.key();
        }
      }
      EXPECT_EQ(magnitudes, kind == "dora" ? 4 : 0) << what;  // q_proj and v_proj of 2 layers
    }
  ASSERT_EQ(tunekit_cli("train " + (d / "llama_lora.yaml") + " model.frozen_dtype=int8 adapter.kind=dora",
                        d / "train.log"),
            0)
      << testkit::read_file(d / "train.log");
  const std::string log = testkit::read_file(d / "train.log");
  EXPECT_NE(log.find("frozen base stored in int8 ("), std::string::npos) << log;
  EXPECT_NE(log.find("converted as it was read"), std::string::npos) << log;
}

TEST(HfCli, PeftAdapterFromElsewhereMergesAndExports) {
  testkit::TempDir d;
  ASSERT_EQ(reference("make --family qwen2 --out " + (d / "qwen") + " --dtype bf16 --seed 5", d / "make.log"), 0)
      << testkit::read_file(d / "make.log");
  ASSERT_EQ(reference("peft --base " + (d / "qwen") + " --out " + (d / "adapter") +
                          " --r 4 --alpha 16 --targets q_proj,v_proj,down_proj --dora --seed 2",
                      d / "peft.log"),
            0)
      << testkit::read_file(d / "peft.log");
  torch::Tensor input = tensor_of(d / "adapter/reference.safetensors", "input");
  torch::Tensor expected = tensor_of(d / "adapter/reference.safetensors", "logits");

  ASSERT_EQ(tunekit_cli("export " + (d / "qwen") + " --adapter " + (d / "adapter") + " --out " + (d / "qwen.pt"),
                        d / "export.log"),
            0)
      << testkit::read_file(d / "export.log");
  EXPECT_LT(max_diff(torch::jit::load(d / "qwen.pt").forward({input}).toTensor(), expected), 1e-4);

  ASSERT_EQ(tunekit_cli("merge " + (d / "qwen") + " --adapter " + (d / "adapter") + " --format hf --dtype float32 --out " +
                            (d / "merged"),
                        d / "merge.log"),
            0)
      << testkit::read_file(d / "merge.log");
  EXPECT_EQ(json_of(d / "merged/config.json")["torch_dtype"], "float32");
  ASSERT_EQ(reference("forward --model " + (d / "merged") + " --input " + (d / "adapter/reference.safetensors") +
                          " --out " + (d / "merged_logits.safetensors"),
                      d / "forward.log"),
            0)
      << testkit::read_file(d / "forward.log");
  EXPECT_LT(max_diff(tensor_of(d / "merged_logits.safetensors", "logits"), expected), 1e-4);

  // Without --dtype the source's storage (bfloat16) is kept.
  ASSERT_EQ(tunekit_cli("merge " + (d / "qwen") + " --adapter " + (d / "adapter") + " --format hf --out " + (d / "bf16"),
                        d / "merge16.log"),
            0)
      << testkit::read_file(d / "merge16.log");
  EXPECT_EQ(json_of(d / "bf16/config.json")["torch_dtype"], "bfloat16");
  EXPECT_EQ(io::read_safetensors(d / "bf16/model.safetensors").tensors[0].second.scalar_type(), torch::kBFloat16);
}

TEST(HfCli, VitFineTunesOnFashionMnistShapedImages) {
  testkit::TempDir d;
  testkit::write_synthetic_fmnist(d / "fmnist", 12, 4, 1);
  ASSERT_EQ(reference("make --family vit --out " + (d / "vit") + " --image-size 16 --patch-size 4 --labels 5 --seed 4",
                      d / "make.log"),
            0)
      << testkit::read_file(d / "make.log");
  std::ofstream(d / "vit.yaml") << fmt::format(R"(seed: 2
threads: {{torch: 1, blas: 1}}
model: {{from_hf: "{0}/vit", num_classes: 4}}
adapter: {{kind: lora, r: 4, alpha: 4, targets: [query, value], modules_to_save: [classifier]}}
data: {{root: "{0}/fmnist", classes: [0, 1, 2, 3], val_fraction: 0.2, batch_size: 8}}
optimizer: {{lr: 1.0e-2}}
train: {{max_steps: 6, log_every: 2}}
output: {{dir: "{0}/runs", name: vit_lora}}
)",
                                              d.path());
  ASSERT_EQ(tunekit_cli("train " + (d / "vit.yaml") + " -q", d / "train.log"), 0) << testkit::read_file(d / "train.log");
  const std::string run_dir = d / "runs/vit_lora";
  auto config = json_of(run_dir + "/checkpoints/best/adapter_config.json");
  EXPECT_EQ(config["base_model_name_or_path"], "vit");
  EXPECT_EQ(config["modules_to_save"], nlohmann::json::array({"classifier"}));
  ASSERT_EQ(tunekit_cli("eval " + run_dir, d / "eval.log"), 0) << testkit::read_file(d / "eval.log");
  ASSERT_EQ(tunekit_cli("export " + run_dir + " --batch 4", d / "export.log"), 0) << testkit::read_file(d / "export.log");
  ASSERT_EQ(tunekit_cli("merge " + run_dir + " --format hf --out " + (d / "merged"), d / "merge.log"), 0)
      << testkit::read_file(d / "merge.log");
  auto merged = json_of(d / "merged/config.json");
  EXPECT_EQ(merged["id2label"].size(), 4u);  // the new classifier's classes
  EXPECT_TRUE(fs::exists(d / "merged/preprocessor_config.json"));
  // The reference reads the merged directory (4 classes) like any ViT checkpoint.
  ASSERT_EQ(reference("forward --model " + (d / "merged") + " --input " + (d / "vit/reference.safetensors") + " --out " +
                          (d / "merged_logits.safetensors"),
                      d / "forward.log"),
            0)
      << testkit::read_file(d / "forward.log");
  EXPECT_EQ(tensor_of(d / "merged_logits.safetensors", "logits").size(1), 4);
}

TEST(HfCli, RecipeErrorsNameTheKeyAndTheCheckpoint) {
  testkit::TempDir d;
  write_llama_and_corpus(d);
  // `model_keys` replaces the recipe's "max_seq_len: 24" inside model: {...}.
  auto error = [&](const std::string& model_keys, const std::string& extra = "") {
    std::string yaml = llama_recipe(d, extra);
    yaml.replace(yaml.find("max_seq_len: 24"), 15, model_keys);
    return testkit::error_of([&] { parse_recipe(yaml, "r.yaml"); });
  };
  EXPECT_EQ(error("max_seq_len: 24"), "");
  EXPECT_NE(error("kind: gpt2").find("holds a llama model"), std::string::npos) << error("kind: gpt2");
  EXPECT_NE(error("dim: 64").find("comes from"), std::string::npos) << error("dim: 64");
  EXPECT_NE(error("max_seq_len: 65").find("max_seq_len"), std::string::npos) << error("max_seq_len: 65");
  std::string e = error("max_seq_len: 24", "init_from: {run: somewhere}");
  EXPECT_NE(e.find("init_from.run"), std::string::npos) << e;
  fs::remove(d / "llama/tokenizer.model");
  e = error("max_seq_len: 24");
  EXPECT_NE(e.find("tokenizer.model"), std::string::npos) << e;
  EXPECT_NE(e.find("r.yaml:"), std::string::npos) << e;
  std::string missing = testkit::error_of([&] {
    parse_recipe("model: {from_hf: " + (d / "nowhere") + "}\n", "m.yaml");
  });
  EXPECT_NE(missing.find("nowhere"), std::string::npos) << missing;
  EXPECT_NE(missing.find("m.yaml:1:"), std::string::npos) << missing;
}

TEST(HfCli, ShippedHfRecipesBuildOnTinyCheckpoints) {
  testkit::TempDir d;
  write_llama_and_corpus(d);
  ASSERT_EQ(reference("make --family vit --out " + (d / "vit") + " --image-size 16 --patch-size 4 --seed 4", d / "make.log"), 0)
      << testkit::read_file(d / "make.log");
  const std::string recipes = std::string(TUNEKIT_SOURCE_DIR) + "/recipes/hf/";
  int n = 0;
  // The tiny Llama has 64 positions, the shipped recipe trains at 256.
  for (const auto& [file, overrides] :
       {std::pair<std::string, std::vector<std::string>>{"llama_lora_spam.yaml",
                                                         {"model.from_hf=" + (d / "llama"), "model.max_seq_len=32"}},
        {"vit_lora_fmnist.yaml", {"model.from_hf=" + (d / "vit")}}}) {
    SCOPED_TRACE(file);
    Recipe r = load_recipe(recipes + file, overrides);
    RunModel m = build_run_model(r, /*load_init=*/true);
    EXPECT_FALSE(m.report.adapted.empty());
    ++n;
  }
  EXPECT_EQ(n, 2);
}
