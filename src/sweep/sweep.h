// `tunekit sweep`: runs a recipe over the cartesian product of a grid of recipe keys and a
// list of seeds, one run directory per cell, skipping cells already finished; then writes
// sweep.csv, summary.md (mean ± 95 % interval over seeds) and, with gnuplot, PNG and SVG plots.
// The protocol of docs/experiments.md: sweep.tune picks each grid point's learning rate (or
// another key) on the validation split first (tune.csv); variants with one sweep budget label
// are checked to train equal parameter counts before anything trains; sweep.compare decides each
// claim by a paired t-test over the seeds (compare.csv, and a table in summary.md).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tunekit {

struct SweepOptions {
  std::string recipe_path;
  std::vector<std::string> overrides;  // key.path=value, applied to every cell
  std::vector<std::string> grid;       // key.path=v1,v2,... (adds to / replaces the recipe's sweep.grid)
  std::vector<int64_t> seeds;          // replaces the recipe's sweep.seeds when non-empty
  std::string name;                    // default: the recipe file's stem
  std::string dir = "runs/sweeps";
  bool verbose = false;                // show each cell's training progress
};

struct SweepResult {
  std::string dir, csv, summary;
  std::vector<std::string> plots;
  int64_t cells = 0, ran = 0, skipped = 0;
  // Test cells finished from their tuning cell (the same value and seed): its test split read,
  // not trained again. Counted apart from `ran`.
  int64_t tested_from_tuning = 0;
  std::string table;  // the Markdown summary table
  std::string tune_csv, compare_csv;  // sweep.tune / sweep.compare's files ("" without them)
  std::string claims;                 // sweep.compare's Markdown table
};

SweepResult run_sweep(const SweepOptions& options);

// "a,b,[1, 2],c" -> {"a", "b", "[1, 2]", "c"} (commas inside brackets or braces do not split).
std::vector<std::string> split_grid_values(const std::string& text);

}  // namespace tunekit
