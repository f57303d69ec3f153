#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "src/recipe/recipe.h"
#include "src/train/setup.h"
#include "util/error.h"
#include "util/text.h"

using namespace tunekit;

namespace {
std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_recipe(yaml, "r.yaml", overrides);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST(Recipe, DefaultsAndValues) {
  Recipe r = parse_recipe("seed: 5\nmodel: {dim: 64, heads: 2, num_classes: 3}\ndata: {classes: [1, 2, 3]}\n",
                          "recipes/my_run.yaml");
  EXPECT_EQ(r.seed, 5);
  EXPECT_EQ(r.model.dim, 64);
  EXPECT_EQ(r.output.name, "my_run");
  EXPECT_EQ(r.run_dir(), "runs/my_run");
  EXPECT_EQ(r.adapter.kind, AdapterKind::None);
  EXPECT_EQ(r.threads.torch, 1);
  EXPECT_EQ(r.threads.blas, 0);
}

TEST(Recipe, UnknownKeyWithSuggestion) {
  EXPECT_EQ(error_of("model:\n  dimm: 64\n"), "r.yaml:2:3: model.dimm: unknown key (did you mean 'dim'?)");
  EXPECT_EQ(error_of("optimiser: {lr: 1}\n"), "r.yaml:1:1: optimiser: unknown key (did you mean 'optimizer'?)");
  EXPECT_EQ(error_of("zzz: 1\n"), "r.yaml:1:1: zzz: unknown key");
}

TEST(Recipe, WrongTypeNamesLineColumnAndPath) {
  EXPECT_EQ(error_of("train:\n  epochs: three\n"), "r.yaml:2:11: train.epochs: expected an integer, got 'three'");
  EXPECT_EQ(error_of("optimizer:\n  lr: [1, 2]\n"), "r.yaml:2:7: optimizer.lr: expected a number, got a list");
  EXPECT_EQ(error_of("adapter:\n  kind: lora\n  targets: q\n"),
            "r.yaml:3:12: adapter.targets: expected a list, got 'q'");
  EXPECT_EQ(error_of("model: 3\n"), "r.yaml:1:8: model: expected a mapping");
}

TEST(Recipe, RsLoraOnlyForLowRankKinds) {
  EXPECT_TRUE(parse_recipe("adapter: {kind: dora, rslora: true, targets: [x]}\n", "r.yaml").adapter.rslora);
  EXPECT_FALSE(parse_recipe("adapter: {kind: lora, targets: [x]}\n", "r.yaml").adapter.rslora);
  EXPECT_EQ(error_of("adapter: {kind: prefix, rslora: true, targets: [x]}\n"),
            "r.yaml:1:33: adapter.rslora: only applies to kinds lora, dora, hora, doran");
}

TEST(Recipe, BadChoiceSuggests) {
  EXPECT_EQ(error_of("adapter: {kind: lroa, targets: [x]}\n"),
            "r.yaml:1:17: adapter.kind: 'lroa' is not one of: none, linear_probe, lora, dora, hora, doran, prompt_expert, prefix (did you mean 'lora'?)");
}

namespace {
// Every row of E's table: name -> value -> name, names unique, a description for `tunekit ls`.
template <typename E>
void expect_round_trip(const char* what) {
  SCOPED_TRACE(what);
  std::set<std::string> names;
  for (const auto& row : rows_of<E>()) {
    EXPECT_TRUE(names.insert(row.name).second) << row.name << " is listed twice";
    EXPECT_GT(std::string(row.help).size(), 5u) << row.name;
    auto value = enum_from_name<E>(row.name);
    ASSERT_TRUE(value.has_value()) << row.name;
    EXPECT_EQ(*value, row.value);
    EXPECT_EQ(to_string(*value), row.name);
  }
  EXPECT_EQ(enum_names<E>().size(), names.size());
  EXPECT_FALSE(enum_from_name<E>("no_such_choice").has_value());
}
}  // namespace

TEST(Recipe, EnumTablesRoundTrip) {
  expect_round_trip<ModelKind>("ModelKind");
  expect_round_trip<models::TextTask>("TextTask");
  expect_round_trip<models::TextPooling>("TextPooling");
  expect_round_trip<models::Score>("Score");
  expect_round_trip<models::SigmoidBias>("SigmoidBias");
  expect_round_trip<models::Gate>("Gate");
  expect_round_trip<CheckpointKind>("CheckpointKind");
  expect_round_trip<AdapterKind>("AdapterKind");
  expect_round_trip<HypernetShare>("HypernetShare");
  expect_round_trip<HypernetActivation>("HypernetActivation");
  expect_round_trip<adapters::GateKind>("GateKind");
  expect_round_trip<adapters::GateActivation>("GateActivation");
  expect_round_trip<adapters::GateInput>("GateInput");
  expect_round_trip<DatasetKind>("DatasetKind");
  expect_round_trip<TextFormat>("TextFormat");
  expect_round_trip<TokenizerType>("TokenizerType");
  expect_round_trip<OptimizerKind>("OptimizerKind");
  expect_round_trip<ScheduleKind>("ScheduleKind");
  expect_round_trip<DeviceKind>("DeviceKind");
  expect_round_trip<PlotX>("PlotX");
  expect_round_trip<lab::Experiment>("Experiment");
  expect_round_trip<lab::Family>("Family");
  expect_round_trip<lab::GateFn>("GateFn");
  expect_round_trip<lab::ExpertFn>("ExpertFn");
  expect_round_trip<lab::FitMethod>("FitMethod");
  // The PEFT names written to adapter_config.json come from the same table.
  auto peft_type = [](AdapterKind k) {  // the kind row's adapter_config.json peft_type ("" = no file)
    const char* p = adapters::kind_row(k).peft_type;
    return std::string(p ? p : "");
  };
  EXPECT_EQ(peft_type(AdapterKind::Lora), "LORA");
  EXPECT_EQ(peft_type(AdapterKind::Dora), "LORA");
  EXPECT_EQ(peft_type(AdapterKind::Hora), "HORA");
  EXPECT_EQ(peft_type(AdapterKind::Doran), "DORAN");
  EXPECT_EQ(peft_type(AdapterKind::PromptExpert), "PROMPT_EXPERT");
  EXPECT_EQ(peft_type(AdapterKind::Prefix), "PREFIX");
  EXPECT_EQ(peft_type(AdapterKind::None), "");
}

TEST(Recipe, BadChoiceListsTheTable) {
  EXPECT_EQ(error_of("schedule: {kind: cosin}\n"),
            "r.yaml:1:18: schedule.kind: 'cosin' is not one of: " + join(enum_names<ScheduleKind>(), ", ") +
                " (did you mean 'cosine'?)");
  EXPECT_EQ(error_of("schedule: {kind: cosin}\n"),
            "r.yaml:1:18: schedule.kind: 'cosin' is not one of: constant, cosine, linear (did you mean 'cosine'?)");
  EXPECT_EQ(error_of("model:\n  kind: text\n  task: causal_llm\n"),
            "r.yaml:3:9: model.task: 'causal_llm' is not one of: classify, causal_lm (did you mean 'causal_lm'?)");
  EXPECT_EQ(error_of("", {"lab.family=gausian"}),
            "override 'lab.family=gausian': lab.family: 'gausian' is not one of: gaussian, regression, contaminated, "
            "multinomial (did you mean 'gaussian'?)");
  EXPECT_EQ(error_of("model: {attention: {score: sigmoid, sigmoid_bias: fixed}}\n"),
            "r.yaml:1:51: model.attention.sigmoid_bias: expected auto, learnable or a number, got 'fixed'");
  // Parsed values are enums.
  Recipe r = parse_recipe("model: {kind: text, task: causal_lm}\n", "r.yaml", {"sweep.plot_x=trainable_params"});
  EXPECT_EQ(r.model.task, models::TextTask::CausalLm);
  EXPECT_TRUE(r.model.is_lm());
  EXPECT_EQ(r.data.dataset, DatasetKind::SpamAssassin);
  EXPECT_EQ(r.sweep.plot_x, PlotX::TrainableParams);
}

TEST(Recipe, SemanticChecks) {
  EXPECT_EQ(error_of("model: {dim: 10, heads: 3}\n"), "r.yaml:1:25: model.heads: dim 10 is not divisible by heads 3");
  EXPECT_EQ(error_of("model: {num_classes: 10}\ndata: {classes: [5, 6]}\n"),
            "r.yaml:1:22: model.num_classes: is 10 but data.classes selects 2 classes");
  EXPECT_EQ(error_of("adapter: {kind: lora}\n"),
            "r.yaml: adapter.targets: lora needs at least one target pattern, e.g. [\"blocks.*.attn.q\", "
            "\"blocks.*.attn.v\"]");
}

TEST(Recipe, InvalidYaml) {
  EXPECT_EQ(error_of("model: {dim: 3\n"), "r.yaml:2:1: invalid YAML: end of map flow not found");
}

TEST(Recipe, OverridesApplyAndCreateSections) {
  Recipe r = parse_recipe("train: {epochs: 2}\n", "r.yaml",
                          {"train.epochs=7", "optimizer.lr=0.5", "adapter.kind=lora", "adapter.targets=[a, b]"});
  EXPECT_EQ(r.train.epochs, 7);
  EXPECT_DOUBLE_EQ(r.optimizer.lr, 0.5);
  EXPECT_EQ(r.adapter.targets, (std::vector<std::string>{"a", "b"}));
  EXPECT_NE(r.resolved_yaml.find("epochs: 7"), std::string::npos);
  EXPECT_NE(r.resolved_yaml.find("name: r"), std::string::npos);
}

TEST(Recipe, BadOverrides) {
  EXPECT_EQ(error_of("", {"train.epochs"}), "override 'train.epochs': expected key.path=value");
  EXPECT_EQ(error_of("", {"train.epochs=many"}),
            "override 'train.epochs=many': train.epochs: expected an integer, got 'many'");
  EXPECT_EQ(error_of("", {"train.epoch=3"}),
            "override 'train.epoch=3': train.epoch: unknown key (did you mean 'epochs'?)");
  EXPECT_EQ(error_of("seed: 1\n", {"seed.x=3"}), "override 'seed.x=3': seed is a value, not a section");
}

TEST(Recipe, ThreadsShorthand) {
  Recipe r = parse_recipe("threads: 2\n", "r.yaml");
  EXPECT_EQ(r.threads.blas, 2);
  EXPECT_EQ(r.threads.torch, 1);
  EXPECT_EQ(error_of("threads: {torch: 1, blsa: 2}\n"),
            "r.yaml:1:21: threads.blsa: unknown key (did you mean 'blas'?)");
}

TEST(Text, GlobMatch) {
  EXPECT_TRUE(glob_match("blocks.*.attn.q", "blocks.0.attn.q"));
  EXPECT_TRUE(glob_match("blocks.*.attn.q", "blocks.12.attn.q"));
  EXPECT_FALSE(glob_match("blocks.*.attn.q", "blocks.0.attn.qq"));
  EXPECT_FALSE(glob_match("blocks.*", "blocks.0.attn"));
  EXPECT_TRUE(glob_match("blocks.**", "blocks.0.attn"));
  EXPECT_TRUE(glob_match("**.fc?", "blocks.1.mlp.fc2"));
  EXPECT_TRUE(glob_match("head", "head"));
  EXPECT_FALSE(glob_match("head", "head.weight"));
}

TEST(Text, DidYouMean) {
  EXPECT_EQ(closest_match("epohcs", {"epochs", "max_steps"}), "epochs");
  EXPECT_EQ(closest_match("banana", {"epochs", "max_steps"}), "");
  EXPECT_EQ(with_commas(1234567), "1,234,567");
}

TEST(Recipe, EveryShippedRecipeAndSweepCellValidates) {
  namespace fs = std::filesystem;
  int64_t cells = 0;
  for (const char* dir : {"recipes", "recipes/experiments"})
    for (const auto& e : fs::directory_iterator(fs::path(TUNEKIT_SOURCE_DIR) / dir)) {
      if (e.path().extension() != ".yaml") continue;
      SCOPED_TRACE(e.path().string());
      Recipe r = load_recipe(e.path().string());
      build_run_model(r, /*load_init=*/false);
      // Each variant x grid value parses and builds too (as `tunekit sweep` checks up front).
      std::vector<std::vector<std::string>> sets{{}};
      for (const auto& v : r.sweep.variants) {
        std::vector<std::string> o;
        for (const auto& [k, val] : v.overrides) o.push_back(k + "=" + val);
        sets.push_back(o);
      }
      for (const auto& [k, values] : r.sweep.grid)
        for (const auto& val : values) sets.push_back({k + "=" + val});
      for (const auto& o : sets) {
        Recipe cell = load_recipe(e.path().string(), o);
        build_run_model(cell, false);
        ++cells;
      }
    }
  EXPECT_GT(cells, 20);
}

TEST(Recipe, DeviceKeyFormsAndTheirErrors) {
  const Recipe absent = parse_recipe("seed: 1\n", "r.yaml");
  EXPECT_EQ(absent.device.kind, DeviceKind::Auto);
  EXPECT_EQ(absent.device.index, -1);
  EXPECT_EQ(absent.device.where, "");
  const Recipe cuda1 = parse_recipe("seed: 1\ndevice: cuda:1\n", "r.yaml");
  EXPECT_EQ(cuda1.device.kind, DeviceKind::Cuda);
  EXPECT_EQ(cuda1.device.index, 1);
  EXPECT_EQ(cuda1.device.text(), "cuda:1");
  EXPECT_EQ(cuda1.device.where, "r.yaml:2:9");
  EXPECT_EQ(parse_recipe("device: cpu\n", "r.yaml").device.kind, DeviceKind::Cpu);
  EXPECT_EQ(parse_recipe("device: cuda\n", "r.yaml").device.text(), "cuda");
  const Recipe over = parse_recipe("device: cpu\n", "r.yaml", {"device=cuda:0"});
  EXPECT_EQ(over.device.text(), "cuda:0");
  EXPECT_EQ(over.device.where, "override 'device=cuda:0'");

  EXPECT_EQ(error_of("device: gpu\n"), "r.yaml:1:9: device: 'gpu' is not one of: auto, cpu, cuda, cuda:N (did you mean 'cpu'?)");
  EXPECT_EQ(error_of("device: cpu:0\n"), "r.yaml:1:9: device: 'cpu:0': only cuda takes a device number (cuda:N)");
  EXPECT_EQ(error_of("device: cuda:x\n"), "r.yaml:1:9: device: 'cuda:x': cuda:N needs a device number N in 0..9999");
  EXPECT_EQ(error_of("device: 'cuda:'\n"), "r.yaml:1:9: device: 'cuda:': cuda:N needs a device number N in 0..9999");
  EXPECT_EQ(error_of("device: cuda:-1\n"), "r.yaml:1:9: device: 'cuda:-1': cuda:N needs a device number N in 0..9999");
  EXPECT_EQ(error_of("device: [cuda]\n"), "r.yaml:1:9: device: expected auto, cpu, cuda or cuda:N, got a list");
}
