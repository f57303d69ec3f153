#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "src/recipe/recipe.h"
#include "src/sweep/sweep.h"
#include "src/util/error.h"
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
  EXPECT_NE(summary.find("| model.attention.score | seeds | test accuracy (mean ± std) |"), std::string::npos);
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
