// Hugging Face checkpoints: config.json into the family Options, weights found, matched, checked
// and streamed into the model, and the model written back as a Hugging Face directory. The
// checkpoints in the real layouts come from tests/hf_reference.py (its own safetensors writer
// and reference forwards, sharing no code with tunekit); error cases edit files tunekit wrote.
#include <gtest/gtest.h>
#include <malloc.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/hf/families.h"
#include "models/init_guard.h"
#include "models/linear.h"
#include "models/precision.h"
#include "src/hf/config.h"
#include "src/hf/load.h"
#include "src/hf/save.h"
#include "src/io/safetensors.h"
#include "tests/helpers.h"
#include "util/error.h"
#include "util/memory.h"

using namespace tunekit;
namespace fs = std::filesystem;
using json = nlohmann::json;
using models::hf::Family;

namespace {

void write_json(const std::string& path, const json& j) { std::ofstream(path) << j.dump(2); }
json read_json(const std::string& path) { return json::parse(testkit::read_file(path)); }

// Runs tests/hf_reference.py with `args`; its one-line error (if any) is in the failure message.
void reference(const std::string& args) {
  static const std::string script = std::string(TUNEKIT_SOURCE_DIR) + "/tests/hf_reference.py";
  testkit::TempDir logs;
  const std::string log = logs / "log.txt";
  const std::string cmd = std::string(TUNEKIT_PYTHON) + " " + script + " " + args + " > " + log + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd << "\n" << testkit::read_file(log);
}

io::SafetensorsFile reference_outputs(const std::string& file) { return io::read_safetensors(file); }

torch::Tensor logits_of(models::hf::HfModel& model, const torch::Tensor& input) {
  torch::NoGradGuard g;
  model.eval();
  return model.forward(input);
}

// A small Llama-family config.json, as transformers writes one.
json llama_config(const std::string& type = "llama") {
  return {{"architectures",
           {type == "qwen2"     ? "Qwen2ForCausalLM"
            : type == "mistral" ? "MistralForCausalLM"
                                : "LlamaForCausalLM"}},
          {"model_type", type},
          {"vocab_size", 64},
          {"hidden_size", 32},
          {"intermediate_size", 48},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"max_position_embeddings", 64},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"rope_scaling", nullptr},
          {"hidden_act", "silu"},
          {"tie_word_embeddings", false},
          {"torch_dtype", "float32"}};
}

json gpt2_config() {
  return {{"architectures", {"GPT2LMHeadModel"}},
          {"model_type", "gpt2"},
          {"vocab_size", 50},
          {"n_positions", 32},
          {"n_embd", 16},
          {"n_layer", 2},
          {"n_head", 2},
          {"n_inner", nullptr},
          {"layer_norm_epsilon", 1e-5},
          {"activation_function", "gelu_new"},
          {"torch_dtype", "float32"}};
}

json vit_config() {
  return {{"architectures", {"ViTForImageClassification"}},
          {"model_type", "vit"},
          {"image_size", 8},
          {"patch_size", 4},
          {"num_channels", 3},
          {"hidden_size", 16},
          {"num_hidden_layers", 1},
          {"num_attention_heads", 2},
          {"intermediate_size", 32},
          {"layer_norm_eps", 1e-12},
          {"qkv_bias", true},
          {"hidden_act", "gelu"},
          {"id2label", {{"0", "cat"}, {"1", "dog"}, {"2", "bird"}}},
          {"label2id", {{"cat", 0}, {"dog", 1}, {"bird", 2}}},
          {"torch_dtype", "float32"}};
}

hf::HfConfig config_from(const testkit::TempDir& dir, const json& j, int64_t context = 0) {
  write_json(dir / "config.json", j);
  return hf::read_hf_config(dir.path(), context);
}

// Every hf tensor of a model, by name, as float32 copies.
std::map<std::string, torch::Tensor> weights_of(models::hf::HfModel& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& t : m.hf_tensors()) out[t.name] = t.tensor.detach().to(torch::kFloat).clone();
  return out;
}

// A random model of `config` with weights unlike any initialisation (so a load that skipped a
// tensor shows), saved by tunekit as a Hugging Face directory.
std::shared_ptr<models::hf::HfModel> saved_model(const hf::HfConfig& config, const std::string& out,
                                                 torch::ScalarType dtype = torch::kFloat, uint64_t seed = 7) {
  torch::manual_seed(seed);
  auto m = hf::build_hf_model(config);
  torch::NoGradGuard g;
  for (auto& t : m->hf_tensors()) t.tensor.normal_(0, 0.5);
  hf::save_hf_model(*m, config, out, dtype);
  return m;
}

// A tiny Llama checkpoint written by tunekit, for the error cases.
std::string tiny_llama(const testkit::TempDir& src, const testkit::TempDir& out) {
  saved_model(config_from(src, llama_config()), out.path());
  return out.path();
}

// Rewrites `dir`/model.safetensors with `edit` applied to its tensors.
void edit_weights(const std::string& dir,
                  const std::function<void(std::vector<std::pair<std::string, torch::Tensor>>&)>& edit) {
  auto f = io::read_safetensors(dir + "/model.safetensors");
  edit(f.tensors);
  io::write_safetensors(dir + "/model.safetensors", f.tensors, f.metadata);
}

std::string load_error(const std::string& dir, const hf::HfLoadOptions& options = {}) {
  return testkit::error_of([&] { hf::load_hf(dir, options); });
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

// ---- config.json ----

TEST(HfCheckpoint, ReadsEachFamilysConfigKeys) {
  testkit::TempDir d;
  auto g = gpt2_config();
  g["n_inner"] = 40;
  g["activation_function"] = "gelu_pytorch_tanh";
  auto c = config_from(d, g, 16);
  EXPECT_EQ(c.family, Family::Gpt2);
  EXPECT_EQ(c.architecture, "GPT2LMHeadModel");
  EXPECT_FALSE(c.base_model);
  EXPECT_EQ(c.gpt2.vocab_size(), 50);
  EXPECT_EQ(c.gpt2.n_positions(), 32);
  EXPECT_EQ(c.gpt2.n_inner(), 40);
  EXPECT_EQ(c.gpt2.activation(), models::hf::Gpt2Activation::GeluNew);
  EXPECT_EQ(c.gpt2.max_seq_len(), 16);

  auto l = llama_config();
  l["attention_bias"] = true;
  l["mlp_bias"] = true;
  l["head_dim"] = 16;
  l["torch_dtype"] = "bfloat16";
  l.erase("rope_theta");
  l["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 500000.0}};  // newer files
  c = config_from(d, l);
  EXPECT_EQ(c.family, Family::Llama);
  EXPECT_EQ(c.dtype, torch::kBFloat16);
  EXPECT_EQ(c.llama.num_key_value_heads(), 2);
  EXPECT_EQ(c.llama.head_dim(), 16);
  EXPECT_DOUBLE_EQ(c.llama.rope_theta(), 500000.0);
  EXPECT_DOUBLE_EQ(c.llama.rms_norm_eps(), 1e-5);
  EXPECT_TRUE(c.llama.qkv_bias());
  EXPECT_TRUE(c.llama.o_bias());
  EXPECT_TRUE(c.llama.mlp_bias());
  EXPECT_EQ(c.llama.max_seq_len(), 64);  // no context given: the checkpoint's maximum

  auto q = llama_config("qwen2");
  q["tie_word_embeddings"] = true;
  q["use_sliding_window"] = false;
  q["sliding_window"] = 8;  // off: no limit on the context
  c = config_from(d, q, 48);
  EXPECT_EQ(c.family, Family::Qwen2);
  EXPECT_EQ(c.llama.family(), Family::Qwen2);
  EXPECT_TRUE(c.llama.qkv_bias());
  EXPECT_FALSE(c.llama.o_bias());
  EXPECT_TRUE(c.llama.tie_word_embeddings());
  EXPECT_EQ(c.llama.max_seq_len(), 48);

  auto m = llama_config("mistral");
  m["sliding_window"] = 32;
  c = config_from(d, m);  // no context: the window is the longest exact one
  EXPECT_EQ(c.llama.max_seq_len(), 32);
  m["sliding_window"] = nullptr;
  EXPECT_EQ(config_from(d, m).llama.max_seq_len(), 64);

  c = config_from(d, vit_config());
  EXPECT_EQ(c.family, Family::Vit);
  EXPECT_EQ(c.vit.num_labels(), 3);
  EXPECT_EQ(c.labels, (std::vector<std::string>{"cat", "dog", "bird"}));
  EXPECT_FALSE(c.image.found);
  write_json(d / "preprocessor_config.json", {{"do_normalize", true},
                                              {"do_rescale", true},
                                              {"do_resize", true},
                                              {"image_mean", {0.485, 0.456, 0.406}},
                                              {"image_std", {0.229, 0.224, 0.225}},
                                              {"rescale_factor", 1.0 / 255},
                                              {"size", {{"height", 8}, {"width", 8}}}});
  c = hf::read_hf_config(d.path());
  EXPECT_TRUE(c.image.found);
  EXPECT_EQ(c.image.height, 8);
  EXPECT_EQ(c.image.mean, (std::vector<double>{0.485, 0.456, 0.406}));
  EXPECT_EQ(c.image.std, (std::vector<double>{0.229, 0.224, 0.225}));
}

TEST(HfCheckpoint, UnsupportedConfigsAreOneLineErrorsNamingFileAndKey) {
  testkit::TempDir d;
  const std::string path = d / "config.json";
  auto error = [&](json j, int64_t context = 0) {
    auto e = testkit::error_of([&] { config_from(d, j, context); });
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;  // one line
    return e;
  };
  auto bert = llama_config();
  bert["model_type"] = "bert";
  auto e = error(bert);
  EXPECT_TRUE(has(e, path + ": model_type bert is not supported (supported: gpt2, llama, mistral, qwen2, vit)")) << e;

  auto scaled = llama_config();
  scaled["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  e = error(scaled);
  EXPECT_TRUE(has(e, path + ": rope_scaling {type: linear} is not supported (only none)")) << e;
  auto yarn = llama_config();
  yarn["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 1e6}};
  EXPECT_TRUE(has(error(yarn), "rope_parameters {rope_type: yarn} is not supported"));

  auto mistral = llama_config("mistral");
  mistral["sliding_window"] = 16;
  e = error(mistral, 32);
  EXPECT_TRUE(has(e, path + ": sliding_window 16 is shorter than the context 32")) << e;
  EXPECT_EQ(error(mistral, 16), "");
  auto qwen = llama_config("qwen2");
  qwen["use_sliding_window"] = true;
  qwen["sliding_window"] = 16;
  qwen["max_window_layers"] = 1;  // layer 1 slides
  EXPECT_TRUE(has(error(qwen, 32), "sliding_window 16 is shorter than the context 32"));
  qwen["max_window_layers"] = 2;  // no layer slides
  EXPECT_EQ(error(qwen, 32), "");

  auto g = gpt2_config();
  g["scale_attn_by_inverse_layer_idx"] = true;
  EXPECT_TRUE(has(error(g), path + ": scale_attn_by_inverse_layer_idx true is not supported"));
  g = gpt2_config();
  g["activation_function"] = "quick_gelu";
  EXPECT_TRUE(has(error(g), "activation_function quick_gelu is not supported"));
  EXPECT_TRUE(has(error(gpt2_config(), 64), "the context 64 exceeds n_positions 32"));
  auto act = llama_config();
  act["hidden_act"] = "gelu";
  EXPECT_TRUE(has(error(act), path + ": hidden_act gelu is not supported (only silu)"));
  auto heads = llama_config();
  heads["num_key_value_heads"] = 3;
  EXPECT_TRUE(has(error(heads), "num_attention_heads 4 is not a multiple of num_key_value_heads 3"));
  auto dtype = llama_config();
  dtype["torch_dtype"] = "int8";
  EXPECT_TRUE(has(error(dtype), path + ": torch_dtype int8 is not supported"));
  auto arch = llama_config();
  arch["architectures"] = {"LlamaForSequenceClassification"};
  EXPECT_TRUE(has(error(arch), "architectures LlamaForSequenceClassification is not supported"));
  auto vit = vit_config();
  vit["hidden_act"] = "relu";
  EXPECT_TRUE(has(error(vit), "hidden_act relu is not supported (only gelu)"));
  write_json(d / "preprocessor_config.json", {{"size", {{"height", 16}, {"width", 16}}}});
  EXPECT_TRUE(has(error(vit_config()),
                  (d / "preprocessor_config.json") + ": size 16x16 differs from config.json's image_size 8"));
  fs::remove(d / "preprocessor_config.json");
  std::ofstream(path) << "{not json";
  EXPECT_TRUE(has(testkit::error_of([&] { hf::read_hf_config(d.path()); }), path + ": not valid JSON"));
}

// ---- the safetensors streaming reader and writer ----

TEST(HfCheckpoint, StreamingReaderConvertsAndTransposesThroughSmallBlocks) {
  testkit::TempDir d;
  torch::manual_seed(0);
  auto a = torch::randn({37, 11}), b = torch::randn({5}).to(torch::kBFloat16), s = torch::tensor(2.5);
  io::write_safetensors(d / "x.safetensors", {{"a", a.to(torch::kHalf)}, {"b", b}, {"s", s}});
  io::SafetensorsReader r(d / "x.safetensors");
  ASSERT_EQ(r.entries().size(), 3u);
  auto dst = torch::empty({37, 11});
  r.read_into(*r.find("a"), dst, 64);  // blocks of 64 bytes: many partial reads
  EXPECT_TRUE(dst.equal(a.to(torch::kHalf).to(torch::kFloat)));
  auto t = torch::empty({11, 37});  // into a transposed view, as a Conv1D weight is loaded
  r.read_into(*r.find("a"), t.t(), 100);
  EXPECT_TRUE(t.t().equal(a.to(torch::kHalf).to(torch::kFloat)));
  auto bb = torch::empty({5}, torch::kBFloat16);
  r.read_into(*r.find("b"), bb);  // same dtype: straight into the storage
  EXPECT_TRUE(bb.equal(b));
  auto ss = torch::empty({});
  r.read_into(*r.find("s"), ss, 1);
  EXPECT_EQ(ss.item<float>(), 2.5f);
  EXPECT_TRUE(has(testkit::error_of([&] { r.read_into(*r.find("a"), torch::empty({11, 37})); }), "has shape [37, 11]"));

  // The reader checks the header against the file on disk before any data is read.
  auto handmade = [&](const std::string& header, size_t data_len) {
    std::string bytes;
    for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
    std::ofstream(d / "bad.safetensors", std::ios::binary) << bytes + header + std::string(data_len, '\0');
    return testkit::error_of([&] { io::SafetensorsReader bad(d / "bad.safetensors"); });
  };
  EXPECT_TRUE(has(handmade(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                           8),
                  "overlap or gap"));
  EXPECT_TRUE(
      has(handmade(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8), "reach past the 8 data bytes"));

  // The streaming writer converts in blocks, from strided views too, and matches the reader.
  std::vector<io::SafetensorsWriter::Spec> specs{{"at", torch::kBFloat16, {11, 37}}, {"s", torch::kHalf, {}}};
  {
    io::SafetensorsWriter w(d / "y.safetensors", specs, {{"format", "pt"}});
    w.write(a.t(), 50);
    w.write(s, 1);
    w.finish();
  }
  auto y = io::read_safetensors(d / "y.safetensors");
  EXPECT_TRUE(y.find("at")->equal(a.t().to(torch::kBFloat16)));
  EXPECT_EQ(y.find("s")->item<float>(), 2.5f);
  EXPECT_EQ(y.metadata.at("format"), "pt");
  {
    io::SafetensorsWriter w(d / "z.safetensors", specs);
    w.write(a.t());
  }  // abandoned: neither the file nor its temporary remains
  EXPECT_FALSE(fs::exists(d / "z.safetensors"));
  EXPECT_FALSE(fs::exists(d / "z.safetensors.tmp"));
}

// ---- loading the reference checkpoints (tests/hf_reference.py) ----

struct ReferenceCase {
  const char* label;
  const char* args;
};
// How GoogleTest (and so ctest's test list) prints a case: its label, not its bytes.
void PrintTo(const ReferenceCase& c, std::ostream* os) { *os << c.label; }

class HfCheckpointReference : public ::testing::TestWithParam<ReferenceCase> {};

TEST_P(HfCheckpointReference, LogitsMatchTheReferenceForward) {
  testkit::TempDir d;
  reference(std::string("make --out ") + d.path() + " " + GetParam().args);
  auto loaded = hf::load_hf(d.path());
  auto ref = reference_outputs(d / "reference.safetensors");
  const auto& input = *ref.find("input");
  torch::Tensor got;
  if (loaded.config.family == Family::Vit) {
    // As the data gives the images: the model resizes and normalises them itself.
    auto opts = hf::HfLoadOptions().build(hf::HfBuildOptions()
                                              .preprocess_images(true)
                                              .data_mean({ref.find("data_mean")->item<double>()})
                                              .data_std({ref.find("data_std")->item<double>()}));
    auto m = hf::load_hf_model(d.path(), opts);
    got = logits_of(*m, input);
    // And the preprocessed pixels straight into the checkpoint's model.
    auto direct = logits_of(*loaded.model, *ref.find("pixel_values"));
    EXPECT_LE((direct - *ref.find("logits")).abs().max().item<double>(), 1e-4);
  } else {
    got = logits_of(*loaded.model, input);
  }
  const auto& want = *ref.find("logits");
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_LE((got - want).abs().max().item<double>(), 1e-4) << GetParam().label;
  EXPECT_EQ(loaded.report.tensors, static_cast<int64_t>(loaded.model->hf_tensors().size()));
  EXPECT_TRUE(loaded.report.fresh.empty());
}

INSTANTIATE_TEST_SUITE_P(
    HfCheckpoint, HfCheckpointReference,
    ::testing::Values(ReferenceCase{"gpt2", "--family gpt2"},
                      ReferenceCase{"gpt2_noprefix_buffers_f16", "--family gpt2 --no-prefix --buffers --dtype f16"},
                      ReferenceCase{"gpt2_model_class_bf16", "--family gpt2 --model-class base --buffers --dtype bf16"},
                      ReferenceCase{"gpt2_gelu_inner", "--family gpt2 --activation gelu --intermediate 40 --shards 2"},
                      ReferenceCase{"llama_untied_gqa_bf16_shards",
                                    "--family llama --untied --kv-heads 2 --dtype bf16 --shards 3 --buffers"},
                      ReferenceCase{
                          "llama_tied_biases_headdim",
                          "--family llama --tied --attention-bias --mlp-bias --head-dim 16 --rope-parameters"},
                      ReferenceCase{"llama_noprefix", "--family llama --no-prefix --kv-heads 1"},
                      ReferenceCase{"mistral_mqa", "--family mistral --kv-heads 1 --dtype f16"},
                      ReferenceCase{"qwen2_tied_f16_shards", "--family qwen2 --kv-heads 2 --dtype f16 --shards 2"},
                      ReferenceCase{"qwen2_untied", "--family qwen2 --untied --rope-theta 5000"},
                      ReferenceCase{"vit", "--family vit"},
                      ReferenceCase{"vit_noprefix_f16", "--family vit --no-prefix --dtype f16"},
                      ReferenceCase{"vit_bf16_noqkvbias", "--family vit --dtype bf16 --no-qkv-bias --shards 2"}),
    [](const ::testing::TestParamInfo<ReferenceCase>& info) { return std::string(info.param.label); });

TEST(HfCheckpoint, HeadlessViTModelGetsAFreshClassifierAndSkipsThePooler) {
  testkit::TempDir d;
  reference(std::string("make --family vit --model-class base --out ") + d.path());
  auto loaded = hf::load_hf(d.path(), hf::HfLoadOptions().build(hf::HfBuildOptions().num_labels(4)));
  EXPECT_TRUE(loaded.config.base_model);
  EXPECT_EQ(loaded.report.fresh, (std::vector<std::string>{"classifier.weight", "classifier.bias"}));
  EXPECT_NE(std::find(loaded.report.skipped.begin(), loaded.report.skipped.end(), "pooler.dense.weight"),
            loaded.report.skipped.end());
  auto ref = reference_outputs(d / "reference.safetensors");
  auto logits = logits_of(*loaded.model, *ref.find("pixel_values"));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 4}));
}

TEST(HfCheckpoint, ANewViTClassifierStaysFreshAndTheRestLoads) {
  testkit::TempDir d;
  reference(std::string("make --family vit --labels 5 --out ") + d.path());
  torch::manual_seed(3);
  auto loaded = hf::load_hf(d.path(), hf::HfLoadOptions().build(hf::HfBuildOptions().num_labels(10)));
  auto w = weights_of(*loaded.model);
  EXPECT_EQ(w.at("classifier.weight").size(0), 10);
  EXPECT_EQ(loaded.report.fresh, (std::vector<std::string>{"classifier.weight", "classifier.bias"}));
  // Initialised as Hugging Face does (the model is built without random values first): weights
  // N(0, 0.02), bias zero; the same seed gives the same head.
  const auto& head = w.at("classifier.weight");
  EXPECT_TRUE(torch::isfinite(head).all().item<bool>());
  EXPECT_NEAR(head.std().item<double>(), 0.02, 0.006);
  EXPECT_TRUE(w.at("classifier.bias").eq(0).all().item<bool>());
  torch::manual_seed(3);
  auto again = hf::load_hf(d.path(), hf::HfLoadOptions().build(hf::HfBuildOptions().num_labels(10)));
  EXPECT_TRUE(weights_of(*again.model).at("classifier.weight").equal(head));
  auto file = io::read_safetensors(d / "model.safetensors");
  EXPECT_TRUE(w.at("vit.layernorm.weight").equal(file.find("vit.layernorm.weight")->to(torch::kFloat)));
  // Without the new count the classifier's shape is the file's.
  EXPECT_EQ(weights_of(*hf::load_hf_model(d.path())).at("classifier.weight").size(0), 5);
}

// ---- writing: the round trip and what transformers would read ----

TEST(HfCheckpoint, RoundTripGivesIdenticalWeightsInEachDtype) {
  testkit::TempDir src, f32, f16, bf16;
  for (const json& j : {llama_config("qwen2"), gpt2_config(), vit_config()}) {
    auto config = config_from(src, j);
    auto m = saved_model(config, f32.path(), torch::kFloat);
    auto original = weights_of(*m);
    auto back = weights_of(*hf::load_hf_model(f32.path()));
    ASSERT_EQ(back.size(), original.size());
    for (const auto& [name, t] : original) EXPECT_TRUE(back.at(name).equal(t)) << name;  // bit-exact
    for (auto [dir, dtype] : {std::pair{f16.path(), torch::kHalf}, std::pair{bf16.path(), torch::kBFloat16}}) {
      hf::save_hf_model(*m, config, dir, dtype);
      EXPECT_EQ(read_json(dir + "/config.json")["torch_dtype"], hf::hf_dtype_name(dtype));
      auto again = weights_of(*hf::load_hf_model(dir));
      for (const auto& [name, t] : original) EXPECT_TRUE(again.at(name).equal(t.to(dtype).to(torch::kFloat))) << name;
      // Written again in the same dtype, the file is the same bytes.
      auto first = testkit::read_file(dir + "/model.safetensors");
      hf::save_hf_model(*hf::load_hf_model(dir), hf::read_hf_config(dir), dir + "_2");
      EXPECT_EQ(testkit::read_file(dir + "_2/model.safetensors"), first);
      fs::remove_all(dir + "_2");
    }
  }
}

TEST(HfCheckpoint, SavedDirectoryKeepsTheFamilysLayoutAndCopiesTokenizerFiles) {
  testkit::TempDir src, out;
  auto g = gpt2_config();
  write_json(src / "config.json", g);
  std::ofstream(src / "vocab.json") << "{\"a\": 0}";
  std::ofstream(src / "merges.txt") << "#version: 0.2\n";
  std::ofstream(src / "tokenizer_config.json") << "{}";
  auto config = hf::read_hf_config(src.path());
  auto report = hf::save_hf_model(*saved_model(config, out.path()), config, out.path(), torch::kHalf);
  EXPECT_EQ(report.copied, (std::vector<std::string>{"tokenizer_config.json", "vocab.json", "merges.txt"}));
  EXPECT_EQ(testkit::read_file(out / "merges.txt"), "#version: 0.2\n");
  io::SafetensorsReader r(out / "model.safetensors");
  EXPECT_EQ(r.metadata().at("format"), "pt");
  const auto* c_attn = r.find("transformer.h.0.attn.c_attn.weight");
  ASSERT_NE(c_attn, nullptr);
  EXPECT_EQ(c_attn->shape, (std::vector<int64_t>{16, 48}));  // Conv1D: [in, out]
  EXPECT_EQ(c_attn->dtype_name, "F16");
  EXPECT_EQ(r.find("lm_head.weight"), nullptr);  // tied: not written
  auto written = read_json(out / "config.json");
  EXPECT_EQ(written["torch_dtype"], "float16");
  EXPECT_EQ(written["n_embd"], 16);
  EXPECT_TRUE(has(testkit::error_of([&] { hf::save_hf_model(*hf::load_hf_model(out.path()), config, src.path()); }),
                  "is the source directory"));

  // A GPT2Model source is written back without `transformer.`.
  g["architectures"] = {"GPT2Model"};
  auto base = config_from(src, g);
  testkit::TempDir out2;
  saved_model(base, out2.path());
  io::SafetensorsReader r2(out2 / "model.safetensors");
  EXPECT_NE(r2.find("h.0.attn.c_attn.weight"), nullptr);
  EXPECT_EQ(r2.find("transformer.wte.weight"), nullptr);
}

TEST(HfCheckpoint, ANewViTHeadIsWrittenWithItsLabels) {
  testkit::TempDir src, out;
  auto config = config_from(src, vit_config());
  auto m = hf::build_hf_model(config, hf::HfBuildOptions().num_labels(4));
  hf::save_hf_model(*m, config, out.path());
  auto written = read_json(out / "config.json");
  EXPECT_EQ(written["id2label"].size(), 4u);
  EXPECT_EQ(written["id2label"]["3"], "LABEL_3");
  EXPECT_EQ(written["label2id"]["LABEL_3"], 3);
  EXPECT_EQ(hf::read_hf_config(out.path()).vit.num_labels(), 4);
  // The source's own labels stay when the head keeps its size.
  testkit::TempDir out3;
  saved_model(config, out3.path());
  EXPECT_EQ(hf::read_hf_config(out3.path()).labels, (std::vector<std::string>{"cat", "dog", "bird"}));
}

TEST(HfCheckpoint, TheReferenceReadsWhatTunekitWrites) {
  // tests/hf_reference.py's strict loader on tunekit's output gives tunekit's logits.
  for (const char* args :
       {"--family gpt2 --dtype bf16", "--family llama --untied --kv-heads 2 --shards 2", "--family vit"}) {
    testkit::TempDir src, out, logs;
    reference(std::string("make --out ") + src.path() + " " + args);
    auto loaded = hf::load_hf(src.path());
    torch::NoGradGuard g;
    for (auto& t : loaded.model->hf_tensors()) t.tensor.add_(0.01);  // "trained"
    hf::save_hf_model(*loaded.model, loaded.config, out.path());
    reference("forward --model " + out.path() + " --input " + (src / "reference.safetensors") +
              " --pixel-values --out " + (logs / "out.safetensors"));
    auto ref = reference_outputs(src / "reference.safetensors");
    auto input = loaded.config.family == Family::Vit ? *ref.find("pixel_values") : *ref.find("input");
    auto want = logits_of(*hf::load_hf_model(out.path()), input);  // as saved (in the source's dtype)
    auto got = *reference_outputs(logs / "out.safetensors").find("logits");
    EXPECT_LE((got - want).abs().max().item<double>(), 1e-4) << args;
  }
}

// ---- one clear error per broken checkpoint ----

TEST(HfCheckpoint, TruncatedFileIsAnError) {
  testkit::TempDir src, out;
  auto dir = tiny_llama(src, out);
  const std::string file = dir + "/model.safetensors";
  fs::resize_file(file, fs::file_size(file) - 10);
  auto e = load_error(dir);
  EXPECT_TRUE(has(e, file + ": not a valid safetensors file")) << e;
  EXPECT_TRUE(has(e, "truncated file?")) << e;
}

TEST(HfCheckpoint, MisShapedTensorIsAnError) {
  testkit::TempDir src, out;
  auto dir = tiny_llama(src, out);
  edit_weights(dir, [](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "model.layers.1.self_attn.k_proj.weight") t = torch::zeros({32, 32});
  });
  auto e = load_error(dir);
  EXPECT_TRUE(has(e, dir + "/model.safetensors: tensor 'model.layers.1.self_attn.k_proj.weight' has shape [32, 32], "
                           "config.json implies [16, 32]"))
      << e;
}

TEST(HfCheckpoint, TransposedConv1DWeightIsAnErrorThatSaysSo) {
  testkit::TempDir src, out;
  saved_model(config_from(src, gpt2_config()), out.path());
  edit_weights(out.path(), [](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "transformer.h.0.mlp.c_fc.weight") t = t.t().contiguous();  // [out, in] as nn.Linear
  });
  auto e = load_error(out.path());
  EXPECT_TRUE(has(e, "tensor 'transformer.h.0.mlp.c_fc.weight' has shape [64, 16], config.json implies [16, 64]")) << e;
  EXPECT_TRUE(has(e, "not Conv1D's [in, out]")) << e;
}

TEST(HfCheckpoint, IntegerWeightIsAnError) {
  testkit::TempDir src, out;
  auto dir = tiny_llama(src, out);
  edit_weights(dir, [](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "model.norm.weight") t = t.to(torch::kLong);
  });
  auto e = load_error(dir);
  EXPECT_TRUE(has(e, "tensor 'model.norm.weight' is stored as I64; weights must be F32, F16 or BF16")) << e;
}

TEST(HfCheckpoint, MissingAndUnexpectedTensorsAreErrors) {
  testkit::TempDir src, out;
  auto dir = tiny_llama(src, out);
  auto file = io::read_safetensors(dir + "/model.safetensors");
  edit_weights(dir, [](auto& ts) {
    ts.erase(
        std::remove_if(ts.begin(), ts.end(), [](auto& p) { return p.first == "model.layers.0.mlp.up_proj.weight"; }),
        ts.end());
  });
  auto e = load_error(dir);
  EXPECT_TRUE(has(e, dir + "/model.safetensors: missing tensor 'model.layers.0.mlp.up_proj.weight'")) << e;
  edit_weights(dir, [&](auto& ts) {
    ts.emplace_back("model.layers.0.mlp.up_projj.weight", *file.find("model.layers.0.mlp.up_proj.weight"));
  });
  e = load_error(dir);
  EXPECT_TRUE(has(e,
                  "unexpected tensor 'model.layers.0.mlp.up_projj.weight' (did you mean "
                  "'model.layers.0.mlp.up_proj.weight'?)"))
      << e;
}

TEST(HfCheckpoint, MissingShardIsAnError) {
  testkit::TempDir d;
  reference(std::string("make --family llama --shards 3 --out ") + d.path());
  fs::remove(d / "model-00002-of-00003.safetensors");
  auto e = load_error(d.path());
  EXPECT_TRUE(has(e, (d / "model.safetensors.index.json") + ": shard model-00002-of-00003.safetensors is missing"))
      << e;
}

TEST(HfCheckpoint, IndexThatDisagreesWithItsShardsIsAnError) {
  testkit::TempDir d;
  reference(std::string("make --family llama --shards 2 --out ") + d.path());
  auto index = read_json(d / "model.safetensors.index.json");
  index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors";
  auto where = index["weight_map"]["model.layers.0.self_attn.q_proj.weight"].get<std::string>();
  write_json(d / "model.safetensors.index.json", index);
  auto e = load_error(d.path());
  EXPECT_TRUE(has(e, "tensor 'model.norm.weight' is mapped to model-00001-of-00002.safetensors")) << e;
  (void)where;
}

TEST(HfCheckpoint, PytorchBinOnlyAndEmptyDirectoriesSaySafetensorsIsNeeded) {
  testkit::TempDir d;
  write_json(d / "config.json", llama_config());
  EXPECT_TRUE(has(load_error(d.path()), "no model.safetensors or model.safetensors.index.json"));
  std::ofstream(d / "pytorch_model.bin") << "x";
  auto e = load_error(d.path());
  EXPECT_TRUE(has(e, "only pytorch_model.bin found; tunekit reads safetensors weights")) << e;
}

TEST(HfCheckpoint, ATiedHeadInTheFileMustBeTheEmbedding) {
  testkit::TempDir src, out;
  auto j = llama_config();
  j["tie_word_embeddings"] = true;
  saved_model(config_from(src, j), out.path());
  auto file = io::read_safetensors(out / "model.safetensors");
  auto embedding = *file.find("model.embed_tokens.weight");
  edit_weights(out.path(), [&](auto& ts) { ts.emplace_back("lm_head.weight", embedding.clone()); });
  EXPECT_EQ(load_error(out.path()), "");
  edit_weights(out.path(), [&](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "lm_head.weight") t = t + 1;
  });
  EXPECT_TRUE(has(load_error(out.path()), "tensor 'lm_head.weight' differs from the embedding it is tied to"));
}

TEST(HfCheckpoint, ExcludedTensorsMayBeAbsentOrOfAnotherShape) {
  testkit::TempDir src, out;
  auto dir = tiny_llama(src, out);
  edit_weights(dir, [](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "lm_head.weight") t = torch::zeros({3, 32});
  });
  EXPECT_TRUE(has(load_error(dir), "tensor 'lm_head.weight' has shape [3, 32], config.json implies [64, 32]"));
  auto loaded = hf::load_hf(dir, hf::HfLoadOptions().exclude({"lm_head.*"}));
  EXPECT_EQ(loaded.report.fresh, (std::vector<std::string>{"lm_head.weight"}));
}

// ---- memory: the model is never held twice ----

namespace {
// Peak RSS growth while loading a random Llama-shaped checkpoint stored as `dtype`, over the
// model's float32 bytes. The file is written tensor by tensor (never a whole model), and freed
// heap is handed back before the baseline, so the growth is the load's own.
double load_peak_ratio(torch::ScalarType dtype, const json& shape, double* seconds,
                       const hf::HfLoadOptions& options = {}) {
  testkit::TempDir src;
  auto config = config_from(src, shape);
  int64_t params = 0;
  double build_seconds = 0;
  {
    std::vector<io::SafetensorsWriter::Spec> specs;
    auto built = std::chrono::steady_clock::now();
    auto m = hf::build_hf_model(config);  // only to learn the names and shapes, freed below
    build_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - built).count();
    for (const auto& t : m->hf_tensors()) {
      specs.push_back({t.name, dtype, t.tensor.sizes().vec()});
      params += t.tensor.numel();
    }
    m.reset();
    malloc_trim(0);
    io::SafetensorsWriter w(src / "model.safetensors", specs, {{"format", "pt"}});
    torch::manual_seed(0);
    for (const auto& s : specs) w.write(torch::randn(s.shape).mul_(0.02));
    w.finish();
  }
  malloc_trim(0);
  if (!reset_peak_rss()) return -1;
  const double base = peak_rss_mib();
  auto start = std::chrono::steady_clock::now();
  auto m = hf::load_hf_model(src.path(), options);
  *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double peak = peak_rss_mib();
  const double model_mib = params * 4.0 / (1 << 20);
  std::printf(
      "[ peak RSS ] %s file, model %.0f MiB in float32, frozen base stored %s: load grew RSS by %.0f MiB = %.3f x "
      "the model (%.2f s, of which building the randomly initialised model %.2f s)\n",
      c10::toString(dtype), model_mib, to_string(options.frozen_dtype()).c_str(), peak - base,
      (peak - base) / model_mib, *seconds, build_seconds);
  return (peak - base) / model_mib;
}

json big_vocab_llama() {
  auto j = llama_config();
  j["vocab_size"] = 32000;
  j["hidden_size"] = 1024;
  j["intermediate_size"] = 2816;
  j["num_attention_heads"] = 16;
  j["num_key_value_heads"] = 4;
  return j;  // untied, 2 layers: 88M parameters, 350 MB in float32
}
}  // namespace

TEST(HfCheckpoint, PeakMemoryWhileLoadingStaysNearTheModelSize) {
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    double seconds = 0;
    const double ratio = load_peak_ratio(dtype, big_vocab_llama(), &seconds);
    if (ratio < 0) GTEST_SKIP() << "the kernel does not let the peak RSS be reset";
    EXPECT_LT(ratio, 1.3) << c10::toString(dtype);
  }
}

// Every models::Linear weight of a model: what a frozen base stores narrow when no module is
// trained in full.
std::vector<torch::Tensor> all_linear_weights(torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& item : m.named_modules("", false))
    if (auto* lin = dynamic_cast<models::LinearImpl*>(item.value().get())) out.push_back(lin->weight);
  return out;
}

// The float32 bytes of a model's Linear weights and of the rest (the loader's model at `config`).
std::pair<double, double> linear_and_other_bytes(const hf::HfConfig& config) {
  models::SkipInit skip;
  auto m = hf::build_hf_model(config);
  double linear = 0, all = 0;
  for (const auto& w : all_linear_weights(*m)) linear += 4.0 * w.numel();
  for (const auto& t : m->hf_tensors()) all += 4.0 * t.tensor.numel();
  return {linear, all - linear};
}

// A frozen base stored narrow as it is read (model.frozen_dtype while training): the load's peak
// is near the narrow model's size, not the float32 one. big_vocab_llama's head is untied, so
// 63 % of the weights are Linear and the float32 embedding (37 %) stays: bf16 ideally grows RSS
// by 0.69 x the float32 model, int8 by 0.53 x, where a load holding the float32 weights grows
// 1.0 x. The read buffers and narrowing temporaries add a fixed few tens of MiB (measured here:
// 0.78 x and 0.68 x), so the test asks for at least half of the ideal saving.
TEST(HfCheckpoint, PeakMemoryWithTheFrozenBaseStoredNarrowAsRead) {
  testkit::TempDir probe;
  const auto [linear, other] = linear_and_other_bytes(config_from(probe, big_vocab_llama()));
  for (auto frozen : {models::FrozenDtype::Bf16, models::FrozenDtype::Int8}) {
    const double expected = (other + linear / (frozen == models::FrozenDtype::Bf16 ? 2.0 : 4.0)) / (other + linear);
    double seconds = 0;
    const double ratio = load_peak_ratio(torch::kFloat, big_vocab_llama(), &seconds,
                                         hf::HfLoadOptions().frozen_dtype(frozen).frozen_select(all_linear_weights));
    if (ratio < 0) GTEST_SKIP() << "the kernel does not let the peak RSS be reset";
    EXPECT_LT(ratio, expected + 0.5 * (1.0 - expected)) << to_string(frozen) << ": ideally " << expected;
  }
}

// Qwen2.5-0.5B's shape (494M parameters, 2 GB in float32): run by hand for the issue's figure,
// --gtest_also_run_disabled_tests --gtest_filter='HfCheckpoint.DISABLED_PeakMemoryQwen25Shape*'.
// TUNEKIT_TEST_FROZEN=bf16|int8 stores the frozen base narrow as it is read (every Linear weight;
// the tied embedding stays float32).
TEST(HfCheckpoint, DISABLED_PeakMemoryQwen25Shape) {
  json j = llama_config("qwen2");
  j["vocab_size"] = 151936;
  j["hidden_size"] = 896;
  j["intermediate_size"] = 4864;
  j["num_hidden_layers"] = 24;
  j["num_attention_heads"] = 14;
  j["num_key_value_heads"] = 2;
  j["max_position_embeddings"] = 32768;
  j["tie_word_embeddings"] = true;
  j["torch_dtype"] = "bfloat16";
  hf::HfLoadOptions options;
  if (const char* frozen = std::getenv("TUNEKIT_TEST_FROZEN"))
    options.frozen_dtype(std::string(frozen) == "int8" ? models::FrozenDtype::Int8 : models::FrozenDtype::Bf16)
        .frozen_select(all_linear_weights);
  double seconds = 0;
  const double ratio = load_peak_ratio(torch::kBFloat16, j, &seconds, options);
  if (ratio < 0) GTEST_SKIP() << "the kernel does not let the peak RSS be reset";
  EXPECT_LT(ratio, 1.3);
}

// The loader's narrow storage against reading in float32 and narrowing after: the same bytes,
// for Llama (row blocks: a 200-byte buffer cuts every weight into many), GPT-2 (Conv1D weights
// stored [in, out], read transposed) and ViT, float32 and bfloat16 files; the tensors not picked
// (here every q_proj / c_attn / query) stay float32 and equal, and the report counts what it saved.
TEST(HfCheckpoint, FrozenWeightsStoredNarrowAsReadEqualNarrowingAfter) {
  struct Case {
    std::string what;
    json config;
    std::string kept;  // a name part: the Linear weights containing it are not picked
  };
  const std::vector<Case> cases{{"llama", llama_config(), "q_proj"}, {"gpt2", gpt2_config(), "c_attn"},
                                {"vit", vit_config(), "query"}};
  for (const auto& c : cases)
    for (auto file_dtype : {torch::kFloat, torch::kBFloat16})
      for (auto frozen : {models::FrozenDtype::Bf16, models::FrozenDtype::Int8}) {
        const std::string what = c.what + " " + c10::toString(file_dtype) + " file, " + to_string(frozen);
        testkit::TempDir src, out;
        const auto config = config_from(src, c.config);
        saved_model(config, out.path(), file_dtype);
        const auto read = hf::read_hf_config(out.path());
        auto wide = hf::build_hf_model(read);
        hf::load_hf_weights(read, *wide);
        auto narrow = hf::build_hf_model(read);
        std::vector<torch::Tensor> picked;
        std::map<std::string, bool> is_picked;
        for (const auto& item : narrow->named_modules("", false))
          if (auto* lin = dynamic_cast<models::LinearImpl*>(item.value().get())) {
            const bool pick = item.key().find(c.kept) == std::string::npos;
            is_picked[item.key()] = pick;
            if (pick) picked.push_back(lin->weight);
          }
        auto report = hf::load_hf_weights(
            read, *narrow, hf::HfWeightsOptions().narrow(picked).narrow_dtype(frozen).chunk_bytes(200));
        EXPECT_EQ(report.narrowed, static_cast<int64_t>(picked.size())) << what;
        int64_t saved = 0, seen = 0;
        auto wide_modules = wide->named_modules("", false);
        for (const auto& item : narrow->named_modules("", false)) {
          auto* lin = dynamic_cast<models::LinearImpl*>(item.value().get());
          if (!lin) continue;
          auto* ref = dynamic_cast<models::LinearImpl*>(wide_modules[item.key()].get());
          ASSERT_NE(ref, nullptr) << what << " " << item.key();
          ++seen;
          if (!is_picked[item.key()]) {
            EXPECT_EQ(lin->weight.scalar_type(), torch::kFloat) << what << " " << item.key();
            EXPECT_TRUE(torch::equal(lin->weight, ref->weight)) << what << " " << item.key();
            continue;
          }
          const auto expected = models::narrow_frozen(ref->weight.detach(), frozen);
          EXPECT_EQ(lin->weight.scalar_type(), expected.scalar_type()) << what << " " << item.key();
          EXPECT_TRUE(torch::equal(lin->weight, expected)) << what << " " << item.key();
          EXPECT_FALSE(lin->weight.requires_grad()) << what << " " << item.key();
          saved += ref->weight.numel() * 4 - expected.numel() * expected.element_size();
        }
        EXPECT_GT(seen, static_cast<int64_t>(picked.size())) << what << ": some weights were not picked";
        EXPECT_EQ(report.narrowed_saved, saved) << what;
        EXPECT_EQ(models::frozen_bytes_saved(*narrow), saved) << what;
        // The rest of the model (embeddings, norms, biases) is read as before.
        auto wn = weights_of(*wide);
        for (const auto& t : narrow->hf_tensors())
          if (t.tensor.scalar_type() == torch::kFloat)
            EXPECT_TRUE(torch::equal(t.tensor, wn[t.name])) << what << " " << t.name;
      }
}
