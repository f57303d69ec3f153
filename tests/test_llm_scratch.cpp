// Pre-training a Hugging Face family from a config.json (model.from_config) and writing it out as
// a Hugging Face directory: the family's shapes and transformers' initialisation statistics, a
// short run merged with `tunekit merge --format hf` and loaded back (tunekit's loader and the
// independent tests/hf_reference.py give its logits; its tokenizer reads the same ids), the chat
// records `tunekit prepare spam_chat` writes from prepared SpamAssassin splits, and recipe errors.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/md5.h"
#include "data/spam_chat.h"
#include "data/tokenizer.h"
#include "models/linear.h"
#include "models/precision.h"
#include "src/from_recipe/model.h"
#include "src/hf/load.h"
#include "src/hf/scratch.h"
#include "src/io/safetensors.h"
#include "src/recipe/recipe.h"
#include "src/train/setup.h"
#include "tests/helpers.h"
#include "tests/text_helpers.h"
#include "util/error.h"

using namespace tunekit;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

int run(const std::string& cmd) { return WEXITSTATUS(std::system(cmd.c_str())); }
int tunekit_cli(const std::string& args, const std::string& log) {
  return run(std::string(TUNEKIT_CLI) + " " + args + " > " + log + " 2>&1");
}
json json_of(const std::string& path) { return json::parse(testkit::read_file(path)); }

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// A small Llama config.json (untied head, grouped-query attention).
json llama_config(int64_t vocab) {
  return {{"model_type", "llama"},       {"architectures", {"LlamaForCausalLM"}},
          {"vocab_size", vocab},         {"hidden_size", 64},
          {"intermediate_size", 96},     {"num_hidden_layers", 2},
          {"num_attention_heads", 4},    {"num_key_value_heads", 2},
          {"max_position_embeddings", 48}, {"rms_norm_eps", 1e-5},
          {"initializer_range", 0.05},   {"pad_token_id", 3},
          {"tie_word_embeddings", false}};
}

std::string write_config(const testkit::TempDir& d, const std::string& name, const json& config) {
  fs::create_directories(d / name);
  write_text(d / (name + "/config.json"), config.dump(2));
  return d / name;
}

torch::Tensor tensor_named(models::hf::HfModel& m, const std::string& name) {
  for (auto& t : m.hf_tensors())
    if (t.name == name) return t.tensor;
  ADD_FAILURE() << "no tensor " << name;
  return torch::zeros({1});
}

std::string scratch_recipe(const testkit::TempDir& d, const std::string& model, const std::string& extra = "") {
  return fmt::format(R"(seed: 1
threads: {{torch: 1, blas: 1}}
model: {{{1}}}
data: {{dataset: text, train_file: "{0}/train.jsonl", val_file: "{0}/val.jsonl", batch_size: 8,
        tokenizer: {{type: bpe, vocab_size: 300}}}}
optimizer: {{lr: 1.0e-2}}
train: {{max_steps: 6, log_every: 2, checkpoint_every: 3}}
output: {{dir: "{0}/runs", name: scratch}}
{2}
)",
                     d.path(), model, extra);
}

}  // namespace

TEST(LlmScratch, FromConfigBuildsTheFamilysShapesWithTransformersInit) {
  testkit::TempDir d;
  const std::string dir = write_config(d, "llama", llama_config(500));
  Recipe r = parse_recipe(fmt::format("model: {{from_config: \"{}/config.json\"}}\ndata: {{dataset: text, train_file: x.jsonl}}\n", dir),
                          "r.yaml");
  EXPECT_EQ(r.model.kind, ModelKind::Llama);
  EXPECT_EQ(r.model.vocab_size, 500);
  EXPECT_EQ(r.model.max_seq_len, 48);  // max_position_embeddings (below 1024)
  EXPECT_EQ(r.model.pad_id, -1);
  EXPECT_TRUE(r.model.is_lm());
  torch::manual_seed(0);
  auto model = std::dynamic_pointer_cast<models::hf::HfModel>(from_recipe::build_model(r.model));
  ASSERT_TRUE(model);
  // Shapes: head_dim 16, 2 key/value heads.
  const std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"model.embed_tokens.weight", {500, 64}},          {"model.layers.0.self_attn.q_proj.weight", {64, 64}},
      {"model.layers.0.self_attn.k_proj.weight", {32, 64}}, {"model.layers.1.self_attn.v_proj.weight", {32, 64}},
      {"model.layers.1.self_attn.o_proj.weight", {64, 64}}, {"model.layers.0.mlp.gate_proj.weight", {96, 64}},
      {"model.layers.0.mlp.down_proj.weight", {64, 96}},    {"model.layers.1.input_layernorm.weight", {64}},
      {"model.norm.weight", {64}},                          {"lm_head.weight", {500, 64}}};
  for (const auto& [name, shape] : shapes) EXPECT_EQ(tensor_named(*model, name).sizes().vec(), shape) << name;
  EXPECT_EQ(model->hf_tensors().size(), 1u + 2 * 9 + 1 + 1);
  // normal(0, initializer_range): every weight matrix, the embedding too; the pad row zero; norms one.
  for (const char* name : {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight", "lm_head.weight"}) {
    auto w = tensor_named(*model, name);
    EXPECT_NEAR(w.std().item<double>(), 0.05, 0.05 * 0.06) << name;
    EXPECT_NEAR(w.mean().item<double>(), 0.0, 0.005) << name;
  }
  auto emb = tensor_named(*model, "model.embed_tokens.weight");
  EXPECT_EQ(emb[3].abs().max().item<double>(), 0.0);  // pad_token_id 3: nn.Embedding's padding_idx row
  EXPECT_NEAR(emb.slice(0, 4).std().item<double>(), 0.05, 0.003);
  for (const char* name : {"model.norm.weight", "model.layers.0.post_attention_layernorm.weight"})
    EXPECT_TRUE(torch::equal(tensor_named(*model, name), torch::ones({64}))) << name;

  // GPT-2: Conv1D c_proj weights scaled by 1/sqrt(2 n_layer), LayerNorm one/zero, biases zero.
  const std::string gdir = write_config(d, "gpt2", {{"model_type", "gpt2"}, {"vocab_size", 300}, {"n_positions", 32},
                                                    {"n_embd", 64}, {"n_layer", 8}, {"n_head", 4}});
  Recipe g = parse_recipe(fmt::format("model: {{from_config: \"{}\"}}\ndata: {{dataset: text, train_file: x.jsonl}}\n", gdir), "g.yaml");
  EXPECT_EQ(g.model.kind, ModelKind::Gpt2);
  EXPECT_EQ(g.model.max_seq_len, 32);
  auto gpt2 = std::dynamic_pointer_cast<models::hf::HfModel>(from_recipe::build_model(g.model));
  ASSERT_TRUE(gpt2);
  EXPECT_NEAR(tensor_named(*gpt2, "transformer.h.0.attn.c_attn.weight").std().item<double>(), 0.02, 0.02 * 0.05);
  EXPECT_NEAR(tensor_named(*gpt2, "transformer.h.3.mlp.c_proj.weight").std().item<double>(), 0.02 / 4.0, 0.005 * 0.06);
  EXPECT_NEAR(tensor_named(*gpt2, "transformer.h.7.attn.c_proj.weight").std().item<double>(), 0.02 / 4.0, 0.005 * 0.08);
  EXPECT_EQ(tensor_named(*gpt2, "transformer.h.0.attn.c_attn.bias").abs().max().item<double>(), 0.0);
  EXPECT_TRUE(torch::equal(tensor_named(*gpt2, "transformer.ln_f.weight"), torch::ones({64})));
  EXPECT_EQ(tensor_named(*gpt2, "transformer.ln_f.bias").abs().max().item<double>(), 0.0);

  // The shipped pre-training recipe builds its Llama (1.3 M parameters, tied head).
  const std::string src = TUNEKIT_SOURCE_DIR;
  Recipe shipped = load_recipe(src + "/recipes/llm/llama_pretrain_spam.yaml",
                               {"model.from_config=" + src + "/recipes/llm/llama_tiny/config.json"});
  EXPECT_EQ(shipped.model.kind, ModelKind::Llama);
  EXPECT_EQ(shipped.model.max_seq_len, 256);
  EXPECT_EQ(shipped.data.tokenizer.vocab_size, 4000);
  RunModel built = build_run_model(shipped, /*load_init=*/false);
  int64_t params = 0;
  for (const auto& p : built.model->parameters()) params += p.numel();
  EXPECT_EQ(params, 4000 * 128 + 4 * (128 * 128 * 2 + 128 * 64 * 2 + 3 * 128 * 384 + 2 * 128) + 128);
}

// hf::NarrowBuild (bench_llm's frozen base): the picked weights drawn straight into bf16 or int8
// storage, row block by row block, from transformers' normal (GPT-2's c_proj scaled), frozen; the
// rest initialised as without it. down_proj and gate_proj here span two 4 MiB row blocks each.
TEST(LlmScratch, NarrowBuildDrawsThePickedWeightsStraightIntoTheirNarrowStorage) {
  testkit::TempDir d;
  json big = llama_config(500);
  big["hidden_size"] = 256;
  big["intermediate_size"] = 8192;
  big["num_hidden_layers"] = 1;
  const hf::HfConfig llama = hf::read_config_source(write_config(d, "llama", big));
  const hf::HfConfig gpt2 = hf::read_config_source(write_config(
      d, "gpt2", {{"model_type", "gpt2"}, {"vocab_size", 300}, {"n_positions", 32}, {"n_embd", 64}, {"n_layer", 8}, {"n_head", 4}}));
  hf::NarrowBuild narrow;
  narrow.select = [](torch::nn::Module& m) {
    std::vector<torch::Tensor> out;
    for (const auto& item : m.named_modules("", false))
      if (auto* lin = dynamic_cast<models::LinearImpl*>(item.value().get())) out.push_back(lin->weight);
    return out;
  };
  for (const auto dtype : {models::FrozenDtype::Bf16, models::FrozenDtype::Int8}) {
    SCOPED_TRACE(static_cast<int>(dtype));
    narrow.dtype = dtype;
    torch::manual_seed(0);
    auto model = hf::build_from_config(llama, {}, narrow);
    int64_t linear_bytes = 0;
    for (const auto& item : model->named_modules("", false)) {
      auto* lin = dynamic_cast<models::LinearImpl*>(item.value().get());
      if (!lin) continue;
      EXPECT_TRUE(models::narrow_weight(lin->weight)) << item.key();
      EXPECT_FALSE(lin->weight.requires_grad()) << item.key();
      linear_bytes += lin->options.in_features() * lin->options.out_features() * 4;
      const auto w = models::widen_weight(lin->weight, torch::kFloat);
      EXPECT_EQ(w.sizes().vec(), (std::vector<int64_t>{lin->options.out_features(), lin->options.in_features()}));
      // every row block drawn: each half of the rows has the init's spread
      const int64_t half = w.size(0) / 2;
      for (const auto& part : {w.slice(0, 0, half), w.slice(0, half)})
        EXPECT_NEAR(part.std().item<double>(), 0.05, 0.05 * 0.06) << item.key();
    }
    const int64_t narrow_bytes = dtype == models::FrozenDtype::Bf16 ? linear_bytes / 2 : 0;
    if (dtype == models::FrozenDtype::Bf16) EXPECT_EQ(models::frozen_bytes_saved(*model), linear_bytes - narrow_bytes);
    else EXPECT_GT(models::frozen_bytes_saved(*model), linear_bytes * 7 / 10);  // int8 rows + a scale each
    auto emb = tensor_named(*model, "model.embed_tokens.weight");
    EXPECT_EQ(emb.scalar_type(), torch::kFloat);
    EXPECT_EQ(emb[3].abs().max().item<double>(), 0.0);  // pad row
    EXPECT_NEAR(emb.slice(0, 4).std().item<double>(), 0.05, 0.003);
    EXPECT_TRUE(torch::equal(tensor_named(*model, "model.norm.weight"), torch::ones({256})));
    // The model computes: a forward gives finite logits.
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::isfinite(model->forward(torch::randint(0, 500, {1, 8}))).all().item<bool>());

    torch::manual_seed(0);
    auto g = hf::build_from_config(gpt2, {}, narrow);
    EXPECT_NEAR(models::widen_weight(tensor_named(*g, "transformer.h.3.mlp.c_proj.weight"), torch::kFloat).std().item<double>(),
                0.02 / 4.0, 0.005 * 0.06);
    EXPECT_NEAR(models::widen_weight(tensor_named(*g, "transformer.h.0.attn.c_attn.weight"), torch::kFloat).std().item<double>(),
                0.02, 0.02 * 0.06);
    EXPECT_EQ(tensor_named(*g, "transformer.h.0.attn.c_attn.bias").abs().max().item<double>(), 0.0);
    EXPECT_EQ(tensor_named(*g, "transformer.wte.weight").scalar_type(), torch::kFloat);
  }
}

TEST(LlmScratch, TrainMergeHfAndLoadBackWithIdenticalLogitsAndTokenizer) {
  testkit::TempDir d;
  auto c = testkit::synthetic_mails(240, 5);
  testkit::write_jsonl(d / "train.jsonl", c, 0, 200);
  testkit::write_jsonl(d / "val.jsonl", c, 200, 240);
  write_config(d, "cfg", llama_config(320));
  write_text(d / "r.yaml", scratch_recipe(d, fmt::format("from_config: \"{}/cfg\", max_seq_len: 32", d.path())));
  ASSERT_EQ(tunekit_cli("train " + (d / "r.yaml"), d / "train.log"), 0) << testkit::read_file(d / "train.log");
  const std::string run_dir = d / "runs/scratch", out = d / "hf";
  ASSERT_EQ(tunekit_cli(fmt::format("merge {} --format hf --out {}", run_dir, out), d / "merge.log"), 0)
      << testkit::read_file(d / "merge.log");
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json",
                        "special_tokens_map.json", "generation_config.json"})
    EXPECT_TRUE(fs::exists(fs::path(out) / f)) << f;

  data::Tokenizer tok = data::Tokenizer::load(run_dir + "/tokenizer.model");
  const json config = json_of(out + "/config.json");
  EXPECT_EQ(config["architectures"], json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(config["torch_dtype"], "float32");
  EXPECT_EQ(config["bos_token_id"], tok.bos_id());
  EXPECT_EQ(config["eos_token_id"], tok.eos_id());
  EXPECT_EQ(config["pad_token_id"], tok.pad_id());
  EXPECT_EQ(config["hidden_size"], 64);
  const json tc = json_of(out + "/tokenizer_config.json");
  EXPECT_EQ(tc["tokenizer_class"], "LlamaTokenizer");
  EXPECT_EQ(tc["add_bos_token"], true);
  EXPECT_EQ(tc["bos_token"], tok.piece(tok.bos_id()));
  EXPECT_EQ(tc["eos_token"], tok.piece(tok.eos_id()));
  EXPECT_EQ(tc["pad_token"], tok.piece(tok.pad_id()));
  EXPECT_EQ(tc["unk_token"], tok.piece(tok.unk_id()));
  EXPECT_EQ(json_of(out + "/special_tokens_map.json")["eos_token"], "</s>");
  const json gen = json_of(out + "/generation_config.json");
  EXPECT_EQ(gen["bos_token_id"], 1);
  EXPECT_EQ(gen["eos_token_id"], 2);
  EXPECT_EQ(gen["pad_token_id"], 3);

  // The run's model (every weight in its checkpoint) and the directory give the same logits.
  LoadedRun trained = load_run(run_dir, "best");
  trained.run.model->eval();
  auto ids = torch::randint(320, {2, 12}, torch::kLong);
  auto again = hf::load_hf_model(out, hf::HfLoadOptions().max_seq_len(32));
  again->eval();
  torch::NoGradGuard no_grad;
  auto expected = trained.run.model->forward(ids), got = again->forward(ids);
  EXPECT_EQ((expected - got).abs().max().item<double>(), 0.0);
  // ... and so does a forward written without tunekit (tests/hf_reference.py).
  io::write_safetensors(d / "input.safetensors", {{"input", ids}});
  ASSERT_EQ(run(fmt::format("{} {}/tests/hf_reference.py forward --model {} --input {} --out {} > {} 2>&1",
                            TUNEKIT_PYTHON, TUNEKIT_SOURCE_DIR, out, d / "input.safetensors", d / "ref.safetensors",
                            d / "ref.log")),
            0)
      << testkit::read_file(d / "ref.log");
  auto ref = io::read_safetensors(d / "ref.safetensors");
  ASSERT_TRUE(ref.find("logits"));
  EXPECT_LT((*ref.find("logits") - expected).abs().max().item<double>(), 1e-4);

  // The directory's tokenizer: the same ids, bos and eos.
  data::Tokenizer dir_tok = data::Tokenizer::load(out + "/tokenizer.model");
  for (int i = 0; i < 20; ++i) EXPECT_EQ(dir_tok.encode(c.texts[i]), tok.encode(c.texts[i])) << c.texts[i];
  EXPECT_EQ(dir_tok.bos_id(), tok.bos_id());
  EXPECT_EQ(dir_tok.eos_id(), tok.eos_id());
  // model.from_hf reads the directory (its tokenizer included) as a checkpoint.
  Recipe ft = parse_recipe(fmt::format(R"(model: {{from_hf: "{0}", max_seq_len: 32}}
adapter: {{kind: lora, r: 4, targets: [q_proj, v_proj]}}
data: {{dataset: text, train_file: "{1}/train.jsonl", val_file: "{1}/val.jsonl"}}
)",
                                       out, d.path()),
                           "ft.yaml");
  EXPECT_EQ(ft.model.kind, ModelKind::Llama);
  RunModel m = build_run_model(ft, true);
  m.model->eval();
  EXPECT_LT((m.model->forward(ids) - expected).abs().max().item<double>(), 1e-6);  // LoRA's B starts at zero
}

namespace {
// A prepared SpamAssassin directory (split files + MANIFEST.json with their sizes and MD5s).
void write_prepared_split(const std::string& dir, const std::vector<std::vector<json>>& splits) {
  fs::create_directories(dir);
  json manifest{{"files", json::object()}};
  const char* names[] = {"train.jsonl", "val.jsonl", "test.jsonl"};
  for (size_t s = 0; s < 3; ++s) {
    std::string out;
    for (const auto& j : splits[s]) out += j.dump() + "\n";
    write_text(dir + "/" + names[s], out);
    manifest["files"][names[s]] = {{"md5", data::md5_hex(out)}, {"bytes", out.size()}};
  }
  write_text(dir + "/MANIFEST.json", manifest.dump(2));
}
json mail(const std::string& id, const std::string& label, const std::string& text) {
  return {{"id", id}, {"group", label + "-1"}, {"label", label}, {"text", text}};
}
std::string record(const std::string& id, const std::string& task, const std::string& prompt, const std::string& answer) {
  return json{{"id", id},
              {"task", task},
              {"messages", json::array({json{{"role", "user"}, {"content", prompt}},
                                        json{{"role", "assistant"}, {"content", answer}}})}}
             .dump() +
         "\n";
}
}  // namespace

TEST(LlmScratch, SpamChatRecordsFromPreparedSplits) {
  // Characters, not bytes: "é" is two bytes, "€" three; a cut never splits one.
  EXPECT_EQ(data::cut_characters("caf\xc3\xa9 \xe2\x82\xac" "5", 4), "caf\xc3\xa9");
  EXPECT_EQ(data::cut_characters("caf\xc3\xa9 \xe2\x82\xac" "5", 6), "caf\xc3\xa9 \xe2\x82\xac");
  EXPECT_EQ(data::cut_characters("ab\xff" "cd", 3), "ab\xff");  // an invalid byte counts as one
  EXPECT_EQ(data::cut_characters("abc", 10), "abc");

  testkit::TempDir d;
  const std::string src = d / "spam-assassin", dest = d / "spam-chat";
  write_prepared_split(
      src, {{mail("easy-ham-1/00001", "ham", "Subject: Re: meeting notes\nSee you at ten.\nBring the draft."),
             mail("spam-1/00007", "spam", "Subject: \nFREE money now!")},                        // no subject
            {mail("spam-2/00003", "spam", "Subject: Cheap loans\n")},                               // no body
            {mail("easy-ham-2/00009", "ham", "Subject: Caf\xc3\xa9 \xe2\x82\xac\nThe caf\xc3\xa9 is open.")}});
  data::SpamChatOptions o;
  o.source = src;
  o.dest = dest;
  o.max_chars = 30;
  const std::string summary = data::prepare_spam_chat(o);
  EXPECT_NE(summary.find("train 2 mails: 3 records (2 spam/ham, 1 subject)"), std::string::npos) << summary;
  const std::string q = "Is this mail spam? Answer spam or ham.\n\n", w = "Write a subject line for this mail.\n\n";
  EXPECT_EQ(testkit::read_file(dest + "/train.jsonl"),
            record("easy-ham-1/00001", "spam", q + "Subject: Re: meeting notes\nSee", "ham") +
                record("easy-ham-1/00001", "subject", w + "See you at ten.\nBring the draf", "Re: meeting notes") +
                record("spam-1/00007", "spam", q + "Subject: \nFREE money now!", "spam"));
  EXPECT_EQ(testkit::read_file(dest + "/val.jsonl"), record("spam-2/00003", "spam", q + "Subject: Cheap loans", "spam"));
  const std::string t1 = record("easy-ham-2/00009", "spam", q + "Subject: Caf\xc3\xa9 \xe2\x82\xac\nThe caf\xc3\xa9 is op", "ham");
  const std::string t2 = record("easy-ham-2/00009", "subject", w + "The caf\xc3\xa9 is open.", "Caf\xc3\xa9 \xe2\x82\xac");
  EXPECT_EQ(testkit::read_file(dest + "/test.jsonl"), t1 + t2);
  EXPECT_EQ(testkit::read_file(dest + "/test_spam.jsonl"), t1);
  EXPECT_EQ(testkit::read_file(dest + "/test_subject.jsonl"), t2);
  const json m = json_of(dest + "/MANIFEST.json");
  EXPECT_EQ(m["files"]["train.jsonl"]["records"], 3);
  EXPECT_EQ(m["files"]["test.jsonl"]["md5"], data::md5_hex(t1 + t2));
  EXPECT_EQ(testkit::error_of([&] { data::check_spam_chat(dest); }), "");

  // Deterministic and kept when intact; a damaged output is redone; a damaged source is an error.
  EXPECT_NE(data::prepare_spam_chat(o).find("kept"), std::string::npos);
  write_text(dest + "/val.jsonl", "{}\n");
  EXPECT_NE(testkit::error_of([&] { data::check_spam_chat(dest); }).find("val.jsonl"), std::string::npos);
  EXPECT_EQ(data::prepare_spam_chat(o).find("kept"), std::string::npos);
  EXPECT_EQ(testkit::read_file(dest + "/val.jsonl"), record("spam-2/00003", "spam", q + "Subject: Cheap loans", "spam"));
  write_text(src + "/test.jsonl", "{\"id\": 1}\n");
  const std::string e = testkit::error_of([&] { data::prepare_spam_chat(o); });
  EXPECT_NE(e.find("test.jsonl"), std::string::npos) << e;
  EXPECT_NE(e.find("MANIFEST.json"), std::string::npos) << e;
}

TEST(LlmScratch, RecipeErrorsNameTheKeyWithLineAndColumn) {
  testkit::TempDir d;
  write_config(d, "cfg", llama_config(320));
  auto error = [&](const std::string& model, const std::string& extra = "") {
    return testkit::error_of([&] { parse_recipe(scratch_recipe(d, model, extra), "r.yaml"); });
  };
  const std::string ok = fmt::format("from_config: \"{}/cfg\"", d.path());
  EXPECT_EQ(error(ok), "");
  // A missing config: the key, its line and column, and the path.
  std::string e = error(fmt::format("from_config: \"{}/nowhere\"", d.path()));
  EXPECT_NE(e.find("r.yaml:3:"), std::string::npos) << e;
  EXPECT_NE(e.find("model.from_config"), std::string::npos) << e;
  EXPECT_NE(e.find("nowhere"), std::string::npos) << e;
  // A vocabulary smaller than the tokenizer's pieces (trained: data.tokenizer.vocab_size).
  e = error(ok + ", max_seq_len: 32", "");
  EXPECT_EQ(e, "");
  e = testkit::error_of([&] {
    parse_recipe(scratch_recipe(d, ok), "r.yaml", {"data.tokenizer.vocab_size=400"});
  });
  EXPECT_NE(e.find("data.tokenizer.vocab_size"), std::string::npos) << e;
  EXPECT_NE(e.find("vocab_size is 320"), std::string::npos) << e;
  // ... and a given tokenizer.model with more pieces than config.json's vocab_size.
  auto c = testkit::synthetic_mails(200, 3);
  data::TokenizerTrainOptions t;
  t.type = "bpe";
  t.vocab_size = 400;
  data::Tokenizer::train(c.texts, t, d / "big.model");
  std::string yaml = scratch_recipe(d, ok);
  const std::string trained = "{type: bpe, vocab_size: 300}";
  yaml.replace(yaml.find(trained), trained.size(), fmt::format("{{model: \"{}\"}}", d / "big.model"));
  e = testkit::error_of([&] { parse_recipe(yaml, "r.yaml"); });
  EXPECT_NE(e.find("r.yaml:5:"), std::string::npos) << e;
  EXPECT_NE(e.find("data.tokenizer.model"), std::string::npos) << e;
  EXPECT_NE(e.find("400 pieces"), std::string::npos) << e;
  // Sizes come from the file; from_hf and from_config exclude each other; a ViT config is refused.
  e = error(ok + ", dim: 64");
  EXPECT_NE(e.find("model.dim"), std::string::npos) << e;
  EXPECT_NE(e.find("comes from"), std::string::npos) << e;
  e = error(ok + fmt::format(", from_hf: \"{}/cfg\"", d.path()));
  EXPECT_NE(e.find("either model.from_hf"), std::string::npos) << e;
  e = error(ok + ", max_seq_len: 49");
  EXPECT_NE(e.find("model.max_seq_len"), std::string::npos) << e;
  write_config(d, "vit", {{"model_type", "vit"}, {"image_size", 16}, {"patch_size", 4}, {"hidden_size", 32},
                          {"num_hidden_layers", 1}, {"num_attention_heads", 2}, {"intermediate_size", 64}});
  e = error(fmt::format("from_config: \"{}/vit\"", d.path()));
  EXPECT_NE(e.find("causal-LM families"), std::string::npos) << e;
  write_text(d / "cfg/other.json", "{}");
  e = error(fmt::format("from_config: \"{}/cfg/other.json\"", d.path()));
  EXPECT_NE(e.find("config.json"), std::string::npos) << e;
}
