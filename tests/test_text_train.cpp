// Language end to end: LM pre-training (loss falls, perplexity, generation), a classifier
// fine-tuned from it with LoRA (tokenizer carried over, per-group accuracy), export parity of the
// text classifier in C++ and Python, and the text recipe checks.
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/import.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "src/from_recipe/data.h"
#include "src/eval/evaluator.h"
#include "src/eval/generate.h"
#include "src/export/export.h"
#include "src/recipe/recipe.h"
#include "src/train/objective.h"
#include "src/train/setup.h"
#include "src/train/trainer.h"
#include "util/error.h"
#include "tests/eval_parts.h"
#include "tests/helpers.h"
#include "tests/text_helpers.h"

using namespace tunekit;
namespace fs = std::filesystem;

namespace {

void write_corpus(const std::string& dir) {
  auto c = testkit::synthetic_mails(400, 5);
  testkit::write_jsonl(dir + "/train.jsonl", c, 0, 320);
  testkit::write_jsonl(dir + "/val.jsonl", c, 320, 360);
  testkit::write_jsonl(dir + "/test.jsonl", c, 360, 400);
}

int run(const std::string& cmd) { return WEXITSTATUS(std::system(cmd.c_str())); }

}  // namespace

TEST(TextTrain, LanguageModelLossFallsGeneratesAndSeedsAClassifier) {
  testkit::TempDir data, runs;
  write_corpus(data.path());
  Recipe lm = parse_recipe(testkit::tiny_text_recipe_yaml(data.path(), runs.path(), "causal_lm"), "lm.yaml");
  EXPECT_EQ(make_objective(lm)->name(), "next_token");
  TrainResult r = train(lm, {false, true, 0});
  ASSERT_GT(r.losses.size(), 40u);
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) first += r.losses[i].second / 5, last += r.losses[r.losses.size() - 1 - i].second / 5;
  EXPECT_GT(first, 5.0);  // ~log(vocab) at the start
  EXPECT_LT(last, first - 2.0) << "first " << first << " last " << last;
  EXPECT_TRUE(r.lm);
  EXPECT_GT(r.tokens_per_second, 0);
  const std::string run_dir = runs / "tiny_causal_lm";
  EXPECT_TRUE(fs::exists(run_dir + "/tokenizer.model"));
  EXPECT_EQ(testkit::read_file(run_dir + "/tokenizer.model"), testkit::read_file(run_dir + "/checkpoints/best/tokenizer.model"));

  LoadedRun loaded = load_run(run_dir);
  auto splits = load_data(loaded.recipe, run_dir);
  EvalResult ev = evaluate(*loaded.run.model, splits.test, loaded.recipe);
  EXPECT_TRUE(ev.lm);
  EXPECT_GT(ev.tokens, 500);
  EXPECT_NEAR(ev.perplexity, std::exp(ev.loss), 1e-6 * ev.perplexity);
  EXPECT_LT(ev.perplexity, 60.0);  // from ~400 (uniform) at the start
  EXPECT_NEAR(std::abs(r.best_val_loss - evaluate(*loaded.run.model, splits.val, loaded.recipe).loss), 0, 1e-5);
  {  // split among ranks (data parallel), as validation is: the parts summed are the whole split
    const EvalResult parts = testkit::evaluate_in_parts(*make_objective(loaded.recipe), *loaded.run.model, splits.test,
                                                        loaded.recipe.data.eval_batch_size, 3);
    EXPECT_EQ(parts.tokens, ev.tokens);
    EXPECT_NEAR(parts.loss, ev.loss, 1e-6 * ev.loss);
    EXPECT_DOUBLE_EQ(parts.accuracy, ev.accuracy);
    EXPECT_NEAR(parts.perplexity, ev.perplexity, 1e-5 * ev.perplexity);
  }

  // Generation: greedy is deterministic; sampling is reproducible by seed.
  auto tok = from_recipe::run_tokenizer(loaded.recipe, run_dir);
  GenerateOptions g;
  g.prompt = "Subject: Re offer";
  g.max_new_tokens = 12;
  g.temperature = 0;
  auto a = generate(*loaded.run.model, tok, 32, g), b = generate(*loaded.run.model, tok, 32, g);
  EXPECT_EQ(a.text, b.text);
  EXPECT_EQ(a.text.rfind("Subject: Re offer", 0), 0u) << a.text;
  g.temperature = 1.0;
  g.top_k = 20;
  g.seed = 9;
  g.max_new_tokens = 40;  // longer than the context: the window slides
  EXPECT_EQ(generate(*loaded.run.model, tok, 32, g).new_ids, generate(*loaded.run.model, tok, 32, g).new_ids);
  std::string out = runs / "gen.txt";
  ASSERT_EQ(run(std::string(TUNEKIT_CLI) + " generate " + run_dir + " --prompt 'Subject: Re meeting' --max-new-tokens 8 "
                "--temperature 0 > " + out + " 2>/dev/null"), 0);
  EXPECT_EQ(testkit::read_file(out).rfind("Subject: Re meeting", 0), 0u) << testkit::read_file(out);

  // A classifier from the LM: its tokenizer and weights carry over; LoRA adapts it.
  Recipe cls = parse_recipe(testkit::tiny_text_recipe_yaml(data.path(), runs.path(), "classify",
                                                           "init_from: {run: \"" + run_dir + "\", exclude: [\"head.*\"]}\n"
                                                           "adapter: {kind: lora, r: 4, alpha: 8, targets: [\"blocks.*.attn.q\", "
                                                           "\"blocks.*.attn.v\"], modules_to_save: [head]}\n"),
                            "cls.yaml", {"optimizer.lr=1e-2"});
  TrainResult rc = train(cls, {false, true, 0});
  const std::string cls_dir = runs / "tiny_classify";
  EXPECT_EQ(testkit::read_file(cls_dir + "/tokenizer.model"), testkit::read_file(run_dir + "/tokenizer.model"));
  EXPECT_TRUE(fs::exists(cls_dir + "/checkpoints/best/adapter_model.safetensors"));
  EXPECT_GT(rc.best_val_accuracy, 0.85);
  LoadedRun lc = load_run(cls_dir);
  EvalResult ec = evaluate(*lc.run.model, load_data(lc.recipe, cls_dir).test, lc.recipe);
  EXPECT_GT(ec.accuracy, 0.85);
  EXPECT_GE(ec.f1, 0.0);
  ASSERT_EQ(ec.groups.size(), 4u);  // ham-a, ham-b, spam-a, spam-b
  int64_t total = 0;
  for (const auto& grp : ec.groups) total += grp.n;
  EXPECT_EQ(total, ec.n);
  const EvalResult ec_parts = testkit::evaluate_in_parts(*make_objective(lc.recipe), *lc.run.model,
                                                         load_data(lc.recipe, cls_dir).test, lc.recipe.data.eval_batch_size, 2);
  EXPECT_TRUE(torch::equal(ec_parts.confusion, ec.confusion));
  EXPECT_DOUBLE_EQ(ec_parts.f1, ec.f1);
  ASSERT_EQ(ec_parts.groups.size(), ec.groups.size());
  for (size_t g = 0; g < ec.groups.size(); ++g) {
    EXPECT_EQ(ec_parts.groups[g].n, ec.groups[g].n);
    EXPECT_DOUBLE_EQ(ec_parts.groups[g].accuracy, ec.groups[g].accuracy);
  }
  auto j = nlohmann::json::parse(ec.json());
  EXPECT_TRUE(j.contains("group_accuracy"));
  EXPECT_TRUE(j.contains("f1"));

  // Export through the CLI: adapters merged, tokenizer beside the model, parity in Python.
  ASSERT_EQ(run(std::string(TUNEKIT_CLI) + " export " + cls_dir + " --batch 6 > " + (runs / "export.log") + " 2>&1"), 0)
      << testkit::read_file(runs / "export.log");
  EXPECT_EQ(testkit::read_file(cls_dir + "/export/tokenizer.model"), testkit::read_file(run_dir + "/tokenizer.model"));
  std::string script = runs / "check.py";
  std::ofstream(script) << "import sys, torch\n"
                           "m = torch.jit.load(sys.argv[1]); s = torch.jit.load(sys.argv[2])\n"
                           "assert s.input.dtype == torch.int64, s.input.dtype\n"
                           "d = (m(s.input) - s.output).abs().max().item()\n"
                           "d2 = (m(s.input[:2, :20]) - m(s.input[:2, :20])).abs().max().item()\n"
                           "print('python max abs diff', d)\n"
                           "sys.exit(0 if d <= 1e-5 and d2 == 0 else 3)\n";
  EXPECT_EQ(run(std::string(TUNEKIT_PYTHON) + " " + script + " " + cls_dir + "/export/model.pt " + cls_dir +
                "/export/model.sample.pt"), 0);
  // And in C++: the reloaded module on ids of another batch size and length.
  auto module = torch::jit::load(cls_dir + "/export/model.pt");
  auto ids = load_data(lc.recipe, cls_dir).test.inputs.slice(0, 0, 3);
  torch::NoGradGuard no_grad;
  lc.run.model->eval();
  EXPECT_LE((module.forward({ids}).toTensor() - lc.run.model->forward(ids)).abs().max().item<double>(), 1e-5);
}

TEST(TextTrain, ClassifierFromScratchOnCsvWithInferredLabels) {
  testkit::TempDir data, runs;
  auto c = testkit::synthetic_mails(300, 8);
  for (const std::string split : {"train", "test"}) {
    std::ofstream out(data / (split + ".csv"));
    out << "sentence,category\n";
    int begin = split == "train" ? 0 : 240, end = split == "train" ? 240 : 300;
    for (int i = begin; i < end; ++i) out << "\"" << c.texts[i] << "\"," << c.labels[i] << "\n";
  }
  std::string yaml = R"(seed: 1
threads: {torch: 1, blas: 1}
model: {kind: text, task: classify, num_classes: 2, vocab_size: 300, max_seq_len: 24, dim: 32, depth: 1, heads: 2, causal: false}
data:
  dataset: text
  train_file: ")" + (data / "train.csv") + R"("
  test_file: ")" + (data / "test.csv") + R"("
  text_field: sentence
  label_field: category
  val_fraction: 0.2
  tokenizer: {type: bpe}
  batch_size: 16
optimizer: {lr: 5.0e-3}
train: {epochs: 5}
output: {dir: ")" + runs.path() + R"(", name: csv}
)";
  Recipe r = parse_recipe(yaml, "csv.yaml");
  TrainResult tr = train(r, {false, true, 0});
  EXPECT_GT(tr.best_val_accuracy, 0.85);
  LoadedRun lr = load_run(runs / "csv");
  auto splits = load_data(lr.recipe, runs / "csv");
  EXPECT_EQ(splits.train.size() + splits.val.size(), 240);
  EXPECT_EQ(splits.test.class_names, (std::vector<std::string>{"ham", "spam"}));  // sorted training labels
  EXPECT_FALSE(splits.test.groups.defined());
  EXPECT_GT(evaluate(*lr.run.model, splits.test, lr.recipe).accuracy, 0.85);

  // A fresh run with other tokenizer settings makes a new tokenizer; --resume keeps it.
  const std::string bpe = testkit::read_file(runs / "csv/tokenizer.model");
  train(parse_recipe(yaml, "csv.yaml", {"data.tokenizer.type=unigram", "train.max_steps=2"}),
        {false, true, 0, /*overwrite=*/true});
  const std::string unigram = testkit::read_file(runs / "csv/tokenizer.model");
  EXPECT_NE(unigram, bpe);
  train(parse_recipe(yaml, "csv.yaml", {"data.tokenizer.type=bpe", "train.max_steps=3"}), {true, true, 0});
  EXPECT_EQ(testkit::read_file(runs / "csv/tokenizer.model"), unigram);

  // A test label the training file never had is named with its file and line.
  {
    std::ofstream out(data / "test.csv", std::ios::app);
    out << "\"free cash now\",maybe\n";
  }
  try {
    load_data(lr.recipe, runs / "csv");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(data / "test.csv:62: label 'maybe' is not one of ham, spam"), std::string::npos)
        << e.what();
  }
}

TEST(TextRecipe, ChecksKindsFieldsAndTokenizer) {
  auto err = [](const std::string& yaml, std::vector<std::string> overrides = {}) -> std::string {
    try {
      parse_recipe(yaml, "r.yaml", overrides);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  const std::string text = "model: {kind: text, task: classify, num_classes: 2}\n";
  EXPECT_EQ(err(text), "");  // spam_assassin is the default text dataset
  EXPECT_NE(err(text + "data: {dataset: fashion_mnist}\n").find("data.dataset: 'fashion_mnist' does not fit model.kind text"),
            std::string::npos);
  EXPECT_NE(err("model: {kind: text, patch: 4}\n").find("model.patch: only applies to model.kind vit"), std::string::npos);
  EXPECT_NE(err("model: {kind: vit, vocab_size: 4}\n").find("model.vocab_size: only applies to model.kind text"),
            std::string::npos);
  EXPECT_NE(err("model: {kind: text, task: classify, num_classes: 3}\n").find("model.num_classes: is 3 but data.labels selects 2"),
            std::string::npos);
  EXPECT_NE(err(text + "data: {tokenizer: {vocab_size: 100}}\n").find("data.tokenizer.vocab_size: is 100 but model.vocab_size is 4000"),
            std::string::npos);
  EXPECT_NE(err(text + "data: {dataset: text}\n").find("data.train_file: dataset text needs"), std::string::npos);
  EXPECT_NE(err(text + "data: {tokenizer: {tipe: bpe}}\n").find("data.tokenizer.tipe: unknown key (did you mean 'type'?)"),
            std::string::npos);
  EXPECT_NE(err(text, {"data.text_field=sentence"}).find("data.text_field: is fixed for spam_assassin"), std::string::npos);
  EXPECT_NE(err("model: {kind: text, task: causal_lm, causal: false}\n").find("a causal LM needs causal attention"),
            std::string::npos);
  EXPECT_NE(err("model: {kind: text, pad_id: 4000}\n").find("model.pad_id: 4000 is outside the vocabulary"),
            std::string::npos);
}
