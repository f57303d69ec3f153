#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "src/recipe/recipe.h"
#include "src/sweep/sweep.h"
#include "util/error.h"
#include "tests/helpers.h"

using namespace tunekit;
namespace fs = std::filesystem;

namespace {
std::string read(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
}  // namespace

TEST(Sweep, SplitGridValues) {
  EXPECT_EQ(split_grid_values("a, b,[1, 2],{x: 1, y: 2}"),
            (std::vector<std::string>{"a", "b", "[1, 2]", "{x: 1, y: 2}"}));
}

TEST(Sweep, RecipeSweepSection) {
  Recipe r = parse_recipe("sweep:\n  grid:\n    model.attention.score: [softmax, sigmoid]\n    data.limit_train: 100\n"
                          "  seeds: [0, 1]\n",
                          "r.yaml");
  ASSERT_EQ(r.sweep.grid.size(), 2u);
  EXPECT_EQ(r.sweep.grid[0].first, "model.attention.score");
  EXPECT_EQ(r.sweep.grid[0].second, (std::vector<std::string>{"softmax", "sigmoid"}));
  EXPECT_EQ(r.sweep.grid[1].second, (std::vector<std::string>{"100"}));
  EXPECT_EQ(r.sweep.seeds, (std::vector<int64_t>{0, 1}));
  EXPECT_THROW(parse_recipe("sweep: {grid: {a: [[1]]}}\n", "r.yaml"), Error);
}

TEST(Sweep, TwoTinyCellsWriteCsvAndTableAndAreSkippedWhenRerun) {
  testkit::TempDir data, runs;
  testkit::write_synthetic_fmnist(data.path(), 10, 4);
  std::string recipe = runs / "tiny.yaml";
  std::ofstream(recipe) << testkit::tiny_recipe_yaml(data.path(), runs.path(), "sweep: {grid: {model.attention.score: [softmax, sigmoid]}}");
  SweepOptions o;
  o.recipe_path = recipe;
  o.overrides = {"train.epochs=1"};
  o.dir = runs / "sweeps";
  SweepResult first = run_sweep(o);
  EXPECT_EQ(first.cells, 2);
  EXPECT_EQ(first.ran, 2);
  EXPECT_EQ(first.skipped, 0);
  std::string csv = read(first.csv);
  EXPECT_EQ(csv.rfind("cell,model.attention.score,seed,test_accuracy,", 0), 0u) << csv;
  EXPECT_NE(csv.find("\nmodel.attention.score-softmax__seed-3,softmax,3,"), std::string::npos) << csv;
  EXPECT_NE(csv.find("\nmodel.attention.score-sigmoid__seed-3,sigmoid,3,"), std::string::npos) << csv;
  std::string summary = read(first.summary);
  EXPECT_NE(summary.find("| model.attention.score | seeds | test accuracy (mean ± 95 % CI) | std |"), std::string::npos);
  EXPECT_NE(summary.find("| sigmoid | 1 | "), std::string::npos) << summary;
  // Re-running skips both cells and reproduces the same table.
  SweepResult again = run_sweep(o);
  EXPECT_EQ(again.ran, 0);
  EXPECT_EQ(again.skipped, 2);
  EXPECT_EQ(read(again.csv), csv);
  // A --grid on the command line replaces the recipe's values for that key and adds seeds.
  o.grid = {"model.attention.score=sigmoid"};
  o.seeds = {3, 4};
  SweepResult more = run_sweep(o);
  EXPECT_EQ(more.cells, 2);
  EXPECT_EQ(more.skipped, 1);
  EXPECT_EQ(more.ran, 1);
}

TEST(Sweep, VariantsAreNamedOverrideSets) {
  Recipe r = parse_recipe(
      "sweep:\n  plot_x: trainable_params\n  variants:\n"
      "    - {name: small, series: lora, adapter.r: 2, adapter.targets: [\"blocks.*.attn.q\"]}\n"
      "    - {adapter.kind: none}\n",
      "r.yaml");
  ASSERT_EQ(r.sweep.variants.size(), 2u);
  EXPECT_EQ(r.sweep.variants[0].name, "small");
  EXPECT_EQ(r.sweep.variants[0].series, "lora");
  EXPECT_EQ(r.sweep.variants[0].overrides[1].second, "[\"blocks.*.attn.q\"]");
  EXPECT_EQ(r.sweep.variants[1].name, "kind=none");  // default: the overrides
  EXPECT_EQ(r.sweep.plot_x, PlotX::TrainableParams);
  try {
    parse_recipe("sweep:\n  variants:\n    - {name: a, seed: 1}\n    - {name: a, seed: 2}\n", "r.yaml");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "r.yaml:4:7: sweep.variants[1]: variant name 'a' is used twice");
  }
}

TEST(Sweep, VariantCellsRecordRssAndPlotAgainstParameters) {
  testkit::TempDir data, runs;
  testkit::write_synthetic_fmnist(data.path(), 10, 4);
  std::string recipe = runs / "tiny.yaml";
  std::ofstream(recipe) << testkit::tiny_recipe_yaml(
      data.path(), runs.path(),
      "adapter: {targets: [\"blocks.*.attn.q\"], modules_to_save: [head]}\n"
      "sweep:\n  plot_x: trainable_params\n  variants:\n"
      "    - {name: lora r=1, series: lora, adapter.kind: lora, adapter.r: 1}\n"
      "    - {name: dora r=1, series: dora, adapter.kind: dora, adapter.r: 1}\n"
      "    - {name: bad, adapter.kind: lora, adapter.r: 0}\n");
  SweepOptions o;
  o.recipe_path = recipe;
  o.overrides = {"train.epochs=1"};
  o.dir = runs / "sweeps";
  // Every cell is validated before any runs: the bad variant stops the sweep up front.
  try {
    run_sweep(o);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sweep cell bad__seed-3: override 'adapter.r=0': adapter.r: must be positive"),
              std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(runs / "sweeps/tiny/cells"));
  std::ofstream(recipe) << testkit::tiny_recipe_yaml(
      data.path(), runs.path(),
      "adapter: {targets: [\"blocks.*.attn.q\"], modules_to_save: [head]}\n"
      "sweep:\n  plot_x: trainable_params\n  variants:\n"
      "    - {name: lora r=1, series: lora, adapter.kind: lora, adapter.r: 1}\n"
      "    - {name: dora r=1, series: dora, adapter.kind: dora, adapter.r: 1}\n");
  SweepResult res = run_sweep(o);
  EXPECT_EQ(res.cells, 2);
  std::string csv = read(res.csv);
  EXPECT_EQ(csv.rfind("cell,variant,seed,test_accuracy,test_loss,test_macro_f1,best_val_accuracy,trainable_params,"
                      "samples_per_second,peak_rss_mib,",
                      0),
            0u)
      << csv;
  EXPECT_NE(csv.find("\nlora_r_1__seed-3,lora r=1,3,"), std::string::npos) << csv;
  std::string summary = read(res.summary);
  EXPECT_NE(summary.find("| variant | seeds | test accuracy (mean ± 95 % CI) | std | trainable params | samples/s | peak RSS MiB |"),
            std::string::npos)
      << summary;
  // DoRA = LoRA + d_out (16) per adapted layer (2 layers), same head.
  EXPECT_NE(summary.find("| lora r=1 | 1 | "), std::string::npos);
  auto params_of = [&](const std::string& row) {
    auto at = summary.find(row);
    auto cols = summary.substr(at, summary.find('\n', at) - at);
    std::vector<std::string> parts;
    std::stringstream ss(cols);
    for (std::string p; std::getline(ss, p, '|');) parts.push_back(p);
    std::string n = parts.at(5);
    n.erase(std::remove_if(n.begin(), n.end(), [](char c) { return c == ',' || c == ' '; }), n.end());
    return std::stoll(n);
  };
  EXPECT_EQ(params_of("| dora r=1 |") - params_of("| lora r=1 |"), 2 * 16);
  if (fs::exists("/usr/bin/gnuplot")) {
    std::string gp = read(res.dir + "/plot_png.gp");
    EXPECT_NE(gp.find("set xlabel 'trainable parameters'"), std::string::npos) << gp;
    EXPECT_NE(gp.find("title 'lora'"), std::string::npos) << gp;
  }
}
