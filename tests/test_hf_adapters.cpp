// PEFT adapters across the border: a LoRA/DoRA adapter written here exactly as PEFT's
// save_pretrained writes one applies as W + (α/r)·B·A (DoRA: m·V/‖V‖ per output row, rsLoRA
// α/√r), PEFT's target forms (bare suffixes, one regular expression) select what PEFT selects,
// the PEFT features tunekit does not implement are one-line errors, and the adapter_config.json
// tunekit writes has PEFT's fields.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "adapters/attach.h"
#include "models/linear.h"
#include "models/vit.h"
#include "src/from_recipe/adapters.h"
#include "src/io/adapter_file.h"
#include "src/io/safetensors.h"
#include "tests/helpers.h"
#include "util/error.h"

using namespace tunekit;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {
models::ViT vit() {
  torch::manual_seed(7);
  return models::ViT(models::ViTOptions().image_size(8).patch(4).dim(8).depth(2).heads(2).num_classes(3));
}

std::map<std::string, models::LinearImpl*> linears(torch::nn::Module& m) {
  std::map<std::string, models::LinearImpl*> out;
  for (const auto& item : m.named_modules("", false))
    if (auto* lin = dynamic_cast<models::LinearImpl*>(item.value().get())) out[item.key()] = lin;
  return out;
}

std::map<std::string, torch::Tensor> weights(torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, lin] : linears(m)) out[name] = lin->weight.detach().clone();
  return out;
}

// adapter_config.json as PEFT 0.13's LoraConfig.save_pretrained writes it (every field, sorted).
json peft_config(int64_t r, double alpha, json targets) {
  return json{{"alpha_pattern", json::object()},
              {"auto_mapping", nullptr},
              {"base_model_name_or_path", "google/vit-base-patch16-224"},
              {"bias", "none"},
              {"fan_in_fan_out", false},
              {"inference_mode", true},
              {"init_lora_weights", true},
              {"layer_replication", nullptr},
              {"layers_pattern", nullptr},
              {"layers_to_transform", nullptr},
              {"loftq_config", json::object()},
              {"lora_alpha", alpha},
              {"lora_dropout", 0.1},
              {"megatron_config", nullptr},
              {"megatron_core", "megatron.core"},
              {"modules_to_save", nullptr},
              {"peft_type", "LORA"},
              {"r", r},
              {"rank_pattern", json::object()},
              {"revision", nullptr},
              {"target_modules", targets},
              {"task_type", nullptr},
              {"use_dora", false},
              {"use_rslora", false}};
}

// One adapted layer's tensors as PEFT saves them: lora_A [r, in], lora_B [out, r] (nonzero, as
// after training), DoRA's magnitude [out].
struct Factors {
  torch::Tensor A, B, m;
};

// Writes a PEFT adapter directory for the named layers of `model`; returns their factors.
std::map<std::string, Factors> write_peft(const std::string& dir, torch::nn::Module& model, const json& config,
                                          const std::vector<std::string>& layers,
                                          std::vector<std::pair<std::string, torch::Tensor>> extra = {}) {
  fs::create_directories(dir);
  std::ofstream(fs::path(dir) / "adapter_config.json") << config.dump(2);
  auto lins = linears(model);
  std::map<std::string, Factors> out;
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  const int64_t r = config["r"].get<int64_t>();
  for (const auto& name : layers) {
    const auto& w = lins.at(name)->weight;
    Factors f{torch::randn({r, w.size(1)}) * 0.3, torch::randn({w.size(0), r}) * 0.3,
              torch::rand({w.size(0)}) + 0.5};
    tensors.emplace_back("base_model.model." + name + ".lora_A.weight", f.A);
    tensors.emplace_back("base_model.model." + name + ".lora_B.weight", f.B);
    if (config.value("use_dora", false)) tensors.emplace_back("base_model.model." + name + ".lora_magnitude_vector", f.m);
    out[name] = f;
  }
  for (auto& t : extra) tensors.push_back(t);
  io::write_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), tensors, {{"format", "pt"}});
  return out;
}

// W + s·B·A, and DoRA's m ⊙ V / ‖V‖ per output row, by hand in double.
torch::Tensor lora_by_hand(const torch::Tensor& W, const Factors& f, double s) {
  return W.to(torch::kDouble) + s * torch::matmul(f.B.to(torch::kDouble), f.A.to(torch::kDouble));
}
torch::Tensor dora_by_hand(const torch::Tensor& W, const Factors& f, double s) {
  auto V = lora_by_hand(W, f, s);
  auto norm = V.pow(2).sum(1).sqrt();  // one norm per output row
  return V * (f.m.to(torch::kDouble) / norm).unsqueeze(1);
}

// Attaches the adapter a PEFT directory describes and loads it; returns the adapted names.
std::vector<std::string> apply_peft(const std::string& dir, torch::nn::Module& model, AdapterConfig* out = nullptr) {
  auto cfg = io::peft_adapter_config(dir);
  auto report = adapters::attach_adapters(model, from_recipe::attach_options(cfg));
  io::load_adapter(cfg.init_from, model, cfg);
  if (out) *out = cfg;
  return report.adapted;
}

// After merging, every adapted layer equals `expected(W0, factors)` and every other one W0.
template <typename F>
void expect_merged(torch::nn::Module& model, const std::map<std::string, torch::Tensor>& before,
                   const std::map<std::string, Factors>& factors, F expected) {
  adapters::merge_adapters(model);
  for (const auto& [name, lin] : linears(model)) {
    SCOPED_TRACE(name);
    auto it = factors.find(name);
    if (it == factors.end()) {
      EXPECT_TRUE(torch::equal(lin->weight, before.at(name)));
      continue;
    }
    auto want = expected(before.at(name), it->second);
    EXPECT_LT((lin->weight.to(torch::kDouble) - want).abs().max().template item<double>(), 1e-5);
    EXPECT_GT((want - before.at(name).to(torch::kDouble)).abs().max().template item<double>(), 1e-2);  // it did change
  }
}

std::string error_of(const std::function<void()>& f) { return testkit::error_of(f); }
}  // namespace

TEST(HfAdapters, PeftLoraAppliesAsWPlusScaledBA) {
  auto m = vit();
  auto before = weights(*m);
  testkit::TempDir dir;
  auto factors = write_peft(dir.path(), *m, peft_config(2, 8, {"q", "v"}),
                            {"blocks.0.attn.q", "blocks.0.attn.v", "blocks.1.attn.q", "blocks.1.attn.v"});
  AdapterConfig cfg;
  auto adapted = apply_peft(dir.path(), *m, &cfg);
  EXPECT_EQ(cfg.kind, AdapterKind::Lora);
  EXPECT_EQ(cfg.r, 2);
  EXPECT_EQ(cfg.alpha, 8.0);
  EXPECT_DOUBLE_EQ(cfg.dropout, 0.1);
  EXPECT_FALSE(cfg.rslora);
  EXPECT_EQ(cfg.targets, (std::vector<std::string>{"q", "v"}));
  EXPECT_EQ(cfg.init_from, dir.path());
  // Pattern by pattern, in the model's order within each.
  EXPECT_EQ(adapted, (std::vector<std::string>{"blocks.0.attn.q", "blocks.1.attn.q", "blocks.0.attn.v",
                                               "blocks.1.attn.v"}));
  m->eval();
  auto x = torch::randn({2, 1, 8, 8});
  auto y = m->forward(x);
  expect_merged(*m, before, factors, [](const torch::Tensor& W, const Factors& f) { return lora_by_hand(W, f, 8.0 / 2); });
  EXPECT_TRUE(torch::allclose(m->forward(x), y, 1e-5, 1e-5));  // the merged model computes what the adapter did
}

TEST(HfAdapters, PeftDoraIsMagnitudeTimesRowNormalisedDirection) {
  auto m = vit();
  auto before = weights(*m);
  testkit::TempDir dir;
  auto config = peft_config(2, 4, {"blocks.0.attn.k", "blocks.1.mlp.fc1"});
  config["use_dora"] = true;
  auto factors = write_peft(dir.path(), *m, config, {"blocks.0.attn.k", "blocks.1.mlp.fc1"});
  AdapterConfig cfg;
  apply_peft(dir.path(), *m, &cfg);
  EXPECT_EQ(cfg.kind, AdapterKind::Dora);
  m->eval();
  auto x = torch::randn({2, 1, 8, 8});
  auto y = m->forward(x);
  expect_merged(*m, before, factors, [](const torch::Tensor& W, const Factors& f) { return dora_by_hand(W, f, 4.0 / 2); });
  EXPECT_TRUE(torch::allclose(m->forward(x), y, 1e-5, 1e-5));
}

TEST(HfAdapters, PeftRsLoraScalesByAlphaOverSqrtR) {
  auto m = vit();
  auto before = weights(*m);
  testkit::TempDir dir;
  auto config = peft_config(4, 6, {"fc2"});
  config["use_rslora"] = true;
  auto factors = write_peft(dir.path(), *m, config, {"blocks.0.mlp.fc2", "blocks.1.mlp.fc2"});
  AdapterConfig cfg;
  apply_peft(dir.path(), *m, &cfg);
  EXPECT_TRUE(cfg.rslora);
  expect_merged(*m, before, factors, [](const torch::Tensor& W, const Factors& f) { return lora_by_hand(W, f, 6.0 / 2); });
}

TEST(HfAdapters, PeftDoraWithFanInFanOutAndRsLora) {
  // fan_in_fan_out only says how the base stored its weight (GPT-2's Conv1D): the adapter
  // tensors keep nn.Linear's shapes and the magnitude is one per output row either way.
  auto m = vit();
  auto before = weights(*m);
  testkit::TempDir dir;
  auto config = peft_config(4, 16, {"attn.o"});
  config["use_dora"] = true;
  config["use_rslora"] = true;
  config["fan_in_fan_out"] = true;
  auto factors = write_peft(dir.path(), *m, config, {"blocks.0.attn.o", "blocks.1.attn.o"});
  apply_peft(dir.path(), *m);
  expect_merged(*m, before, factors, [](const torch::Tensor& W, const Factors& f) { return dora_by_hand(W, f, 16.0 / 2); });
}

TEST(HfAdapters, PeftFileLoadsThroughInitFromWithModulesToSave) {
  // adapter.init_from on a recipe whose adapter matches the file (globs in the recipe, PEFT's
  // suffix names in the file), with PEFT's modules_to_save tensors for the head.
  auto m = vit();
  auto before = weights(*m);
  testkit::TempDir dir;
  auto config = peft_config(2, 4, {"q", "v"});
  config["modules_to_save"] = {"head"};
  torch::Tensor head_w = torch::randn({3, 8}), head_b = torch::randn({3});
  auto factors = write_peft(dir.path(), *m, config,
                            {"blocks.0.attn.q", "blocks.0.attn.v", "blocks.1.attn.q", "blocks.1.attn.v"},
                            {{"base_model.model.head.weight", head_w}, {"base_model.model.head.bias", head_b}});
  AdapterConfig cfg;
  cfg.kind = AdapterKind::Lora;
  cfg.r = 2;
  cfg.alpha = 4;
  cfg.targets = {"blocks.*.attn.q", "blocks.*.attn.v"};
  cfg.modules_to_save = {"head"};
  adapters::attach_adapters(*m, from_recipe::attach_options(cfg));
  EXPECT_EQ(io::load_adapter(dir.path(), *m, cfg), 10);
  auto lins = linears(*m);
  EXPECT_TRUE(torch::equal(lins.at("head")->weight, head_w));
  EXPECT_TRUE(torch::equal(lins.at("head")->bias, head_b));
  before["head"] = head_w;  // not adapted: merging leaves the loaded head as it is
  expect_merged(*m, before, factors, [](const torch::Tensor& W, const Factors& f) { return lora_by_hand(W, f, 2.0); });
}

TEST(HfAdapters, ModulesToSaveMismatchIsAClearError) {
  auto m = vit();
  testkit::TempDir dir;
  auto config = peft_config(2, 4, {"q"});
  config["modules_to_save"] = {"head"};
  write_peft(dir.path(), *m, config, {"blocks.0.attn.q", "blocks.1.attn.q"},
             {{"base_model.model.head.weight", torch::randn({3, 8})}, {"base_model.model.head.bias", torch::randn({3})}});
  AdapterConfig cfg;
  cfg.kind = AdapterKind::Lora;
  cfg.r = 2;
  cfg.alpha = 4;
  cfg.targets = {"q"};
  adapters::attach_adapters(*m, from_recipe::attach_options(cfg));
  EXPECT_NE(error_of([&] { io::load_adapter(dir.path(), *m, cfg); })
                .find("has modules_to_save [\"head\"] but adapter.modules_to_save is []"),
            std::string::npos);
}

TEST(HfAdapters, BareNamesAreSuffixTargetsAsInPeft) {
  auto adapted_by = [](std::vector<std::string> targets) {
    auto m = vit();
    AdapterConfig cfg;
    cfg.kind = AdapterKind::Lora;
    cfg.targets = std::move(targets);
    return adapters::attach_adapters(*m, from_recipe::attach_options(cfg)).adapted;
  };
  const std::vector<std::string> qv{"blocks.0.attn.q", "blocks.1.attn.q", "blocks.0.attn.v", "blocks.1.attn.v"};
  EXPECT_EQ(adapted_by({"q", "v"}), qv);                          // PEFT's bare suffix
  EXPECT_EQ(adapted_by({"attn.q", "attn.v"}), qv);                // a longer suffix
  EXPECT_EQ(adapted_by({"blocks.*.attn.q", "blocks.*.attn.v"}), qv);  // globs as before
  EXPECT_EQ(adapted_by({"blocks.1.attn.q"}), (std::vector<std::string>{"blocks.1.attn.q"}));  // an exact name
  // A name that exists means that module only; the suffix rule is for names no module has.
  EXPECT_EQ(adapted_by({"head"}), (std::vector<std::string>{"head"}));
  // A suffix must start after a dot: "ttn.q" is no module's tail.
  auto e = error_of([&] { adapted_by({"ttn.q"}); });
  EXPECT_NE(e.find("adapter.targets: pattern 'ttn.q' matches no Linear layer"), std::string::npos) << e;
  // The did-you-mean also looks at the names' last segments.
  e = error_of([&] { adapted_by({"atn.q"}); });
  EXPECT_NE(e.find("(did you mean 'attn.q'?)"), std::string::npos) << e;
  e = error_of([&] { adapted_by({"fc3"}); });
  EXPECT_NE(e.find("(did you mean 'fc1'?)"), std::string::npos) << e;
  // modules_to_save use the same matcher.
  auto m = vit();
  AdapterConfig cfg;
  cfg.kind = AdapterKind::LinearProbe;
  cfg.modules_to_save = {"fc2"};
  auto report = adapters::attach_adapters(*m, from_recipe::attach_options(cfg));
  EXPECT_EQ(report.saved, (std::vector<std::string>{"blocks.0.mlp.fc2", "blocks.1.mlp.fc2"}));
}

TEST(HfAdapters, RegexTargetModulesMatchWholeNames) {
  auto m = vit();
  auto before = weights(*m);
  testkit::TempDir dir;
  auto factors = write_peft(dir.path(), *m, peft_config(2, 2, R"(blocks\.1\.(attn\.(q|v)|mlp\.fc1))"),
                            {"blocks.1.attn.q", "blocks.1.attn.v", "blocks.1.mlp.fc1"});
  AdapterConfig cfg;
  auto adapted = apply_peft(dir.path(), *m, &cfg);
  EXPECT_EQ(cfg.targets, (std::vector<std::string>{R"(re:blocks\.1\.(attn\.(q|v)|mlp\.fc1))"}));
  EXPECT_EQ(adapted, (std::vector<std::string>{"blocks.1.attn.q", "blocks.1.attn.v", "blocks.1.mlp.fc1"}));
  expect_merged(*m, before, factors, [](const torch::Tensor& W, const Factors& f) { return lora_by_hand(W, f, 1.0); });

  // PEFT matches the whole name (re.fullmatch): a pattern for a part of it selects nothing.
  auto e = error_of([] {
    auto v = vit();
    adapters::attach_adapters(
        *v, from_recipe::attach_options([] {
          AdapterConfig c;
          c.kind = AdapterKind::Lora;
          c.targets = {R"(re:attn\.q)"};
          return c;
        }()));
  });
  EXPECT_NE(e.find(R"(pattern 're:attn\.q' matches no Linear layer)"), std::string::npos) << e;
  std::vector<std::string> names{"blocks.0.attn.q", "blocks.10.attn.q", "head"};
  EXPECT_EQ(adapters::find_targets(R"(re:blocks\.\d+\.attn\.q)", names), (std::vector<size_t>{0, 1}));
  EXPECT_EQ(adapters::find_targets("re:.*", names).size(), 3u);
  e = error_of([&] { adapters::match_targets("re:blocks.(", names, "adapter.targets: pattern", "Linear layer"); });
  EXPECT_NE(e.find("adapter.targets: pattern 're:blocks.(' is not a valid regular expression"), std::string::npos) << e;
}

TEST(HfAdapters, UnsupportedPeftFeaturesAreOneLineErrors) {
  struct Case {
    std::string key;
    json value;
    std::string says;
  };
  const std::vector<Case> cases{
      {"peft_type", "LOHA", "peft_type: \"LOHA\" is not supported"},
      {"rank_pattern", {{"q", 4}}, "rank_pattern: per-module ranks are not supported"},
      {"alpha_pattern", {{"q", 16}}, "alpha_pattern: per-module alphas are not supported"},
      {"layers_to_transform", {0}, "layers_to_transform: is not supported"},
      {"layer_replication", {{0, 1}}, "layer_replication: is not supported"},
      {"exclude_modules", {"v"}, "exclude_modules: is not supported"},
      {"bias", "lora_only", "bias: \"lora_only\" is not supported"},
      {"lora_bias", true, "lora_bias: true is not supported"},
      {"init_lora_weights", "pissa", "init_lora_weights: 'pissa' is not supported (that initialisation changes the base"},
      {"init_lora_weights", "olora", "init_lora_weights: 'olora' is not supported"},
      {"r", "2", "r: needs a positive integer (got \"2\")"},
      {"lora_alpha", nullptr, "lora_alpha: needs a number"},
      {"target_modules", json::array(), "target_modules: needs a list of module names or one regular expression"},
      {"use_dora", "yes", "use_dora: needs true or false"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.key + " = " + c.value.dump());
    auto m = vit();
    testkit::TempDir dir;
    auto config = peft_config(2, 4, {"q"});
    config[c.key] = c.value;
    write_peft(dir.path(), *m, peft_config(2, 4, {"q"}), {"blocks.0.attn.q", "blocks.1.attn.q"});
    std::ofstream(dir / "adapter_config.json") << config.dump(2);
    const std::string where = dir / "adapter_config.json";
    // For `tunekit export/merge --adapter`, and for adapter.init_from on a recipe with that adapter.
    auto e = error_of([&] { io::peft_adapter_config(dir.path()); });
    EXPECT_EQ(e.rfind(where + ": " + c.says, 0), 0u) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    AdapterConfig cfg;
    cfg.kind = AdapterKind::Lora;
    cfg.r = 2;
    cfg.alpha = 4;
    cfg.targets = {"q"};
    adapters::attach_adapters(*m, from_recipe::attach_options(cfg));
    e = error_of([&] { io::load_adapter(dir.path(), *m, cfg); });
    EXPECT_EQ(e.rfind(where + ": " + c.says, 0), 0u) << e;
  }
  // What PEFT writes by default, and initialisations that only choose where A and B start, load.
  for (json init : {json(true), json(false), json("gaussian")}) {
    auto m = vit();
    testkit::TempDir dir;
    auto config = peft_config(2, 4, {"q"});
    config["init_lora_weights"] = init;
    write_peft(dir.path(), *m, config, {"blocks.0.attn.q", "blocks.1.attn.q"});
    EXPECT_EQ(apply_peft(dir.path(), *m).size(), 2u) << init.dump();
  }
}

TEST(HfAdapters, WrittenConfigHasPeftsFieldsAndReadsBack) {
  for (auto kind : {AdapterKind::Lora, AdapterKind::Dora}) {
    SCOPED_TRACE(to_string(kind));
    AdapterConfig cfg;
    cfg.kind = kind;
    cfg.r = 4;
    cfg.alpha = 8;
    cfg.dropout = 0.05;
    cfg.rslora = kind == AdapterKind::Dora;
    cfg.targets = {"q", "blocks.1.mlp.*"};
    cfg.modules_to_save = {"head"};
    auto a = vit();
    auto report = adapters::attach_adapters(*a, from_recipe::attach_options(cfg));
    {
      torch::NoGradGuard g;
      for (auto& p : a->parameters())
        if (p.requires_grad()) p.add_(torch::randn_like(p) * 0.1);
    }
    testkit::TempDir dir;
    io::save_adapter(dir.path(), *a, cfg, report.adapted, "/home/someone/models/tiny-vit/");
    auto config = json::parse(testkit::read_file(dir / "adapter_config.json"));
    EXPECT_EQ(config["peft_type"], "LORA");
    EXPECT_TRUE(config["task_type"].is_null());  // a tunekit model: no Hugging Face task
    EXPECT_EQ(config["base_model_name_or_path"], "tiny-vit");  // never the training machine's path
    EXPECT_EQ(config["r"], 4);
    EXPECT_TRUE(config["lora_alpha"].is_number_integer());  // 8, as PEFT writes an integral alpha
    EXPECT_EQ(config["lora_alpha"], 8);
    EXPECT_DOUBLE_EQ(config["lora_dropout"].get<double>(), 0.05);
    EXPECT_EQ(config["bias"], "none");
    EXPECT_EQ(config["fan_in_fan_out"], false);
    EXPECT_EQ(config["use_dora"], kind == AdapterKind::Dora);
    EXPECT_EQ(config["use_rslora"], cfg.rslora);
    EXPECT_EQ(config["target_modules"], json({"blocks.0.attn.q", "blocks.1.attn.q", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2"}));
    EXPECT_EQ(config["modules_to_save"], json({"head"}));
    EXPECT_EQ(config["rank_pattern"], json::object());
    EXPECT_EQ(config["alpha_pattern"], json::object());
    EXPECT_TRUE(config["layers_to_transform"].is_null());
    EXPECT_FALSE(config.contains("tunekit"));  // PEFT's own keys only (older PEFT refuses others)
    auto file = io::read_safetensors(dir / "adapter_model.safetensors");
    EXPECT_EQ(json::parse(file.metadata.at("tunekit"))["kind"], to_string(kind));
    ASSERT_NE(file.find("base_model.model.blocks.1.mlp.fc1.lora_A.weight"), nullptr);
    EXPECT_EQ(file.find("base_model.model.blocks.1.mlp.fc1.lora_A.weight")->sizes(), torch::IntArrayRef({4, 8}));
    EXPECT_EQ(file.find("base_model.model.blocks.1.mlp.fc1.lora_B.weight")->sizes(), torch::IntArrayRef({16, 4}));
    if (kind == AdapterKind::Dora) {
      ASSERT_NE(file.find("base_model.model.blocks.1.mlp.fc1.lora_magnitude_vector"), nullptr);  // no ".weight"
      EXPECT_EQ(file.find("base_model.model.blocks.1.mlp.fc1.lora_magnitude_vector")->sizes(), torch::IntArrayRef({16}));
    }

    // Read back as an adapter made elsewhere: the same settings and the same function.
    auto b = vit();
    AdapterConfig back;
    auto adapted = apply_peft(dir.path(), *b, &back);
    EXPECT_EQ(adapted, report.adapted);
    EXPECT_EQ(back.kind, kind);
    EXPECT_EQ(back.r, 4);
    EXPECT_EQ(back.alpha, 8.0);
    EXPECT_EQ(back.rslora, cfg.rslora);
    EXPECT_EQ(back.modules_to_save, cfg.modules_to_save);
    a->eval();
    b->eval();
    auto x = torch::randn({2, 1, 8, 8});
    EXPECT_TRUE(torch::equal(a->forward(x), b->forward(x)));
  }
  // A relative name (a run directory, a Hub id) is written as given.
  auto m = vit();
  AdapterConfig cfg;
  cfg.kind = AdapterKind::Lora;
  cfg.targets = {"q"};
  auto report = adapters::attach_adapters(*m, from_recipe::attach_options(cfg));
  testkit::TempDir dir;
  io::save_adapter(dir.path(), *m, cfg, report.adapted, "Qwen/Qwen2.5-0.5B");
  EXPECT_EQ(json::parse(testkit::read_file(dir / "adapter_config.json"))["base_model_name_or_path"], "Qwen/Qwen2.5-0.5B");
}

TEST(HfAdapters, TunekitOnlyKindsNeedTheirRunDirectory) {
  auto m = vit();
  AdapterConfig cfg;
  cfg.kind = AdapterKind::Hora;
  cfg.r = 2;
  cfg.targets = {"q", "v"};
  auto report = adapters::attach_adapters(*m, from_recipe::attach_options(cfg));
  testkit::TempDir dir;
  io::save_adapter(dir.path(), *m, cfg, report.adapted, "");
  auto e = error_of([&] { io::peft_adapter_config(dir.path()); });
  EXPECT_NE(e.find("a tunekit hora adapter: pass the run directory"), std::string::npos) << e;
  e = error_of([&] { io::peft_adapter_config(dir / "nowhere"); });
  EXPECT_NE(e.find("nowhere: no such directory"), std::string::npos) << e;
}
