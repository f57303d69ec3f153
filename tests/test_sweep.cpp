#include <fmt/format.h>
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
// A tiny ViT recipe with an adapter on q (head trained) and the given `sweep:` section, at `path`.
void write_adapter_sweep(const std::string& path, const std::string& data, const std::string& runs,
                         const std::string& sweep) {
  std::ofstream(path) << testkit::tiny_recipe_yaml(
      data, runs, "adapter: {targets: [\"blocks.*.attn.q\"], modules_to_save: [head]}\n" + sweep);
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
  // A seed given twice would name one cell directory twice: refused before anything runs.
  o.seeds = {3, 4, 3};
  EXPECT_EQ(testkit::error_of([&] { run_sweep(o); }), "--seeds: seed 3 is listed twice");
  o.seeds = {-1};
  EXPECT_EQ(testkit::error_of([&] { run_sweep(o); }).rfind("--seeds: seed -1 is negative", 0), 0u);
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
  write_adapter_sweep(recipe, data.path(), runs.path(),
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
  write_adapter_sweep(recipe, data.path(), runs.path(),
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

TEST(Sweep, TuneCompareAndBudgetKeysAndTheirErrors) {
  Recipe r = parse_recipe(
      "sweep:\n  variants:\n    - {name: lora, budget: b1, adapter.kind: lora}\n    - {name: hora, budget: b1, adapter.kind: hora}\n"
      "  tune: {values: [1e-4, 3e-4, 1e-3, 3e-3], seeds: [7]}\n"
      "  budget_tolerance: 0.02\n"
      "  compare:\n    - {a: hora, b: lora, claim: \"HoRA >= LoRA\"}\n    - {a: lora, b: hora, margin: 0.01}\n",
      "r.yaml");
  EXPECT_EQ(r.sweep.variants[0].budget, "b1");
  EXPECT_TRUE(r.sweep.variants[0].overrides.size() == 1);  // the budget label is not an override
  EXPECT_EQ(r.sweep.tune.key, "optimizer.lr");
  EXPECT_EQ(r.sweep.tune.values, (std::vector<std::string>{"1e-4", "3e-4", "1e-3", "3e-3"}));
  EXPECT_EQ(r.sweep.tune.seeds, (std::vector<int64_t>{7}));
  EXPECT_DOUBLE_EQ(r.sweep.budget_tolerance, 0.02);
  ASSERT_EQ(r.sweep.compare.size(), 2u);
  EXPECT_EQ(r.sweep.compare[0].claim, "HoRA >= LoRA");
  EXPECT_EQ(r.sweep.compare[1].claim, "lora beats hora");
  EXPECT_DOUBLE_EQ(r.sweep.compare[1].margin, 0.01);

  const std::string variants = "sweep:\n  variants:\n    - {name: lora, adapter.kind: lora}\n    - {name: dora, adapter.kind: dora}\n";
  auto error = [](const std::string& yaml) { return testkit::error_of([&] { parse_recipe(yaml, "r.yaml"); }); };
  EXPECT_EQ(error(variants + "  tune: {values: [1e-3]}\n"),
            "r.yaml:5:18: sweep.tune.values: has 1 value(s): tuning chooses among at least 2 (the protocol asks for 4 "
            "on a log grid, docs/experiments.md)");
  EXPECT_EQ(error(variants + "  tune: {values: [1e-3, 1e-3]}\n"), "r.yaml:5:25: sweep.tune.values[1]: '1e-3' is listed twice");
  EXPECT_EQ(error(variants + "  tune: {seeds: [0]}\n"),
            "r.yaml:5:9: sweep.tune.values: is required: the values to choose from (at least 4 on a log grid)");
  EXPECT_EQ(error(variants + "  grid: {optimizer.lr: [1, 2]}\n  tune: {values: [1, 2]}\n"),
            "r.yaml:6:9: sweep.tune.key: optimizer.lr is also a sweep.grid key: tune it or grid it, not both");
  EXPECT_EQ(error("sweep:\n  variants:\n    - {name: a, optimizer.lr: 0.1}\n  tune: {values: [1, 2]}\n"),
            "r.yaml:4:9: sweep.tune.key: variant 'a' sets optimizer.lr itself (0.1): a tuned key is chosen per variant");
  EXPECT_EQ(error(variants + "  compare: [{a: lora, b: hora}]\n"),
            "r.yaml:5:26: sweep.compare[0].b: 'hora' is not a variant (variants: lora, dora)");
  EXPECT_EQ(error(variants + "  compare: [{a: lora, b: lora}]\n"), "r.yaml:5:26: sweep.compare[0].b: compares 'lora' with itself");
  EXPECT_EQ(error("sweep:\n  compare: [{a: x, b: y}]\n"), "r.yaml:2:12: sweep.compare: compares variants: give sweep.variants");
  EXPECT_EQ(error(variants + "  compare: [{a: lora, b: dora, margn: 1}]\n"),
            "r.yaml:5:32: sweep.compare[0].margn: unknown key (did you mean 'margin'?)");
}

// The protocol on two tiny adapters: budgets checked before training, the learning rate tuned per
// variant on validation (the test split read once, at the value chosen), then seeds and a paired
// comparison.
TEST(Sweep, TunesPerVariantOnValidationThenComparesPaired) {
  testkit::TempDir data, runs;
  testkit::write_synthetic_fmnist(data.path(), 10, 4);
  std::string recipe = runs / "tiny.yaml";
  auto write = [&](const std::string& tolerance) {
    write_adapter_sweep(recipe, data.path(), runs.path(),
        "sweep:\n  seeds: [3, 4]\n" + tolerance +
            "  variants:\n"
            "    - {name: lora, budget: r1, adapter.kind: lora, adapter.r: 1}\n"
            "    - {name: dora, budget: r1, adapter.kind: dora, adapter.r: 1}\n"
            "  tune: {values: [1e-3, 1e-2]}\n"
            "  compare: [{a: dora, b: lora, claim: \"DoRA beats LoRA\"}]\n");
  };
  write("");
  SweepOptions o;
  o.recipe_path = recipe;
  o.overrides = {"train.epochs=1"};
  o.dir = runs / "sweeps";
  // DoRA r=1 trains 32 more parameters (a magnitude per output of 2 layers) than LoRA r=1: more
  // than 5 % of this tiny model's trainable count. Refused before anything trains.
  const std::string budget = testkit::error_of([&] { run_sweep(o); });
  EXPECT_NE(budget.find("sweep budget 'r1': the trainable parameters differ by "), std::string::npos) << budget;
  EXPECT_NE(budget.find("more than sweep.budget_tolerance (5.0 %): lora "), std::string::npos) << budget;
  EXPECT_FALSE(fs::exists(runs / "sweeps/tiny/cells"));

  write("  budget_tolerance: 0.5\n");
  SweepResult res = run_sweep(o);
  EXPECT_EQ(res.cells, 2 * 2 + 2 * 2);  // tuning: 2 variants x 2 values x seed 3; then 2 variants x seeds 3, 4
  EXPECT_EQ(res.ran, 4 + 2);             // the chosen value's seed-3 cell trains once, its test read after
  EXPECT_EQ(res.tested_from_tuning, 2);  // (one per variant), counted apart
  const std::string tune = read(res.tune_csv);
  EXPECT_EQ(tune.rfind("variant,optimizer.lr,seeds,mean_val_score,chosen\n", 0), 0u) << tune;
  std::vector<std::string> chosen;
  for (const std::string& v : {"lora", "dora"}) {
    const size_t at = tune.find("\n" + v + ",1e-3,1,");
    ASSERT_NE(at, std::string::npos) << tune;
    const std::string line = tune.substr(at + 1, tune.find('\n', at + 1) - at - 1);
    chosen.push_back(line.substr(line.size() - 3) == "yes" ? "1e-3" : "1e-2");
  }
  // Tuning cells read validation only; the chosen value's cells have test figures.
  for (size_t i = 0; i < 2; ++i) {
    const std::string v = i == 0 ? "lora" : "dora";
    const std::string other = chosen[i] == "1e-3" ? "1e-2" : "1e-3";
    const std::string unchosen = read(runs / ("sweeps/tiny/cells/" + v + "__optimizer.lr-" + other + "__seed-3/result.json"));
    EXPECT_EQ(unchosen.find("test_accuracy"), std::string::npos) << unchosen;
    EXPECT_NE(unchosen.find("\"phase\": \"tune\""), std::string::npos) << unchosen;
    for (int seed : {3, 4})
      EXPECT_NE(read(runs / fmt::format("sweeps/tiny/cells/{}__optimizer.lr-{}__seed-{}/result.json", v, chosen[i], seed))
                    .find("test_accuracy"),
                std::string::npos);
  }
  const std::string csv = read(res.csv);
  EXPECT_EQ(csv.rfind("cell,variant,optimizer.lr,seed,test_accuracy,", 0), 0u) << csv;
  const std::string summary = read(res.summary);
  EXPECT_NE(summary.find("| variant | optimizer.lr (tuned) | seeds |"), std::string::npos) << summary;
  EXPECT_NE(summary.find("| lora | " + chosen[0] + " | 2 |"), std::string::npos) << summary;
  EXPECT_NE(summary.find("optimizer.lr tuned per grid point over 1e-3, 1e-2 on the validation split (seeds 3"),
            std::string::npos)
      << summary;
  EXPECT_NE(summary.find("## Claims"), std::string::npos);
  EXPECT_NE(res.claims.find("| DoRA beats LoRA | — | 2 | dora "), std::string::npos) << res.claims;
  const std::string compare = read(res.compare_csv);
  EXPECT_EQ(compare.rfind("claim,a,b,setting,pairs,mean_a,mean_b,diff,diff_lo,diff_hi,p,margin,verdict\nDoRA beats LoRA,dora,lora,—,2,", 0), 0u)
      << compare;
  EXPECT_TRUE(compare.find(",reproduced\n") != std::string::npos || compare.find(",not reproduced\n") != std::string::npos ||
              compare.find(",inconclusive\n") != std::string::npos)
      << compare;

  // A second run trains nothing and writes the same files.
  SweepResult again = run_sweep(o);
  EXPECT_EQ(again.ran, 0);
  EXPECT_EQ(again.skipped, 8);
  EXPECT_EQ(read(again.csv), csv);
  EXPECT_EQ(read(again.tune_csv), tune);
}

// Lanes over variants (`--grid variant=a,b`): each lane runs only its variants' cells, named as in
// the whole sweep and leaving out the claims it cannot decide; the last run over every variant
// trains nothing and decides them.
TEST(Sweep, VariantLanesShareTheSweepAndTheLastRunComparesThem) {
  testkit::TempDir data, runs;
  testkit::write_synthetic_fmnist(data.path(), 10, 4);
  std::string recipe = runs / "tiny.yaml";
  write_adapter_sweep(recipe, data.path(), runs.path(),
      "sweep:\n  seeds: [3, 4]\n"
      "  variants:\n"
      "    - {name: lora, adapter.kind: lora, adapter.r: 1}\n"
      "    - {name: lora2, adapter.kind: lora, adapter.r: 2}\n"
      "    - {name: dora, adapter.kind: dora, adapter.r: 1}\n"
      "  tune: {values: [1e-3, 1e-2]}\n"
      "  compare: [{a: dora, b: lora, claim: \"DoRA beats LoRA\"}, {a: lora2, b: lora, claim: \"r 2 beats r 1\"}]\n");
  SweepOptions o;
  o.recipe_path = recipe;
  o.overrides = {"train.epochs=1"};
  o.dir = runs / "sweeps";

  o.grid = {"variant=lora,nope"};
  const std::string unknown = testkit::error_of([&] { run_sweep(o); });
  EXPECT_NE(unknown.find("--grid 'variant=lora,nope': no variant 'nope' in "), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("(variants: lora, lora2, dora)"), std::string::npos) << unknown;
  EXPECT_FALSE(fs::exists(runs / "sweeps/tiny/cells"));

  o.grid = {"variant=lora", "variant=dora"};
  const std::string twice = testkit::error_of([&] { run_sweep(o); });
  EXPECT_NE(twice.find("--grid 'variant=dora': variant= given twice; give one list"), std::string::npos) << twice;

  // A lane checks the whole grid's budgets: LoRA r 1 alone in its lane is still compared with
  // its budget partner DoRA r 1 (32 parameters more), and refused before anything trains.
  const std::string budgeted = runs / "budgeted.yaml";
  write_adapter_sweep(budgeted, data.path(), runs.path(),
      "sweep:\n  variants:\n"
      "    - {name: lora, budget: r1, adapter.kind: lora, adapter.r: 1}\n"
      "    - {name: dora, budget: r1, adapter.kind: dora, adapter.r: 1}\n");
  SweepOptions ob = o;
  ob.recipe_path = budgeted;
  ob.grid = {"variant=lora"};
  const std::string budget = testkit::error_of([&] { run_sweep(ob); });
  EXPECT_NE(budget.find("sweep budget 'r1': the trainable parameters differ by "), std::string::npos) << budget;
  EXPECT_FALSE(fs::exists(runs / "sweeps/budgeted"));

  o.grid = {"variant=dora,lora"};  // the recipe's order, whatever the lane's
  SweepResult lane1 = run_sweep(o);
  EXPECT_EQ(lane1.cells, 2 * (2 + 2));
  EXPECT_EQ(lane1.ran + lane1.tested_from_tuning, lane1.cells);
  EXPECT_EQ(lane1.tested_from_tuning, 2);
  EXPECT_NE(lane1.claims.find("| DoRA beats LoRA |"), std::string::npos) << lane1.claims;
  EXPECT_EQ(lane1.claims.find("r 2 beats r 1"), std::string::npos) << lane1.claims;
  EXPECT_EQ(read(lane1.csv).find("\nlora2"), std::string::npos);

  o.grid = {"variant=lora2"};
  SweepResult lane2 = run_sweep(o);
  EXPECT_EQ(lane2.cells, 2 + 2);
  EXPECT_EQ(lane2.skipped, 0);  // no cell of the other lane is touched
  EXPECT_TRUE(lane2.claims.empty()) << lane2.claims;

  o.grid.clear();
  SweepResult all = run_sweep(o);
  EXPECT_EQ(all.ran + all.tested_from_tuning, 0);
  EXPECT_EQ(all.skipped, 3 * (2 + 2));
  EXPECT_NE(all.claims.find("| DoRA beats LoRA |"), std::string::npos) << all.claims;
  EXPECT_NE(all.claims.find("| r 2 beats r 1 |"), std::string::npos) << all.claims;
  // The lanes' cells are the whole sweep's: the same test accuracy per cell.
  const std::string csv = read(all.csv);
  for (const std::string& v : {"lora", "lora2", "dora"}) EXPECT_NE(csv.find("\n" + v + "__"), std::string::npos) << csv;
}
