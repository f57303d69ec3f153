// `tunekit fit RECIPE`: the estimation lab. From the recipe's `lab:` section it samples data from a
// ground-truth mixture of experts, fits the family by maximum likelihood and reports
//   experiment rate:   the Voronoi loss against n (log-log), the fitted slope ± its standard error
//                      beside the theory's slope;
//   experiment select: the number of experts chosen by the dendrogram of an over-specified fit and
//                      by AIC/BIC over separate fits, and how often each finds the truth.
// Writes results.csv, summary.md and plots (gnuplot) to the run directory.
#pragma once
#include <limits>
#include <string>
#include <vector>

#include "src/lab/moe.h"
#include "src/recipe/recipe.h"

namespace tunekit::lab {

// The ground truth for sample size n (a contaminated prompt that approaches the frozen expert
// moves with n).
MoE truth_model(const LabConfig& c, int64_t n);

struct LabRunResult {
  std::string dir, csv, summary;
  std::vector<std::string> plots;
  std::string table;  // the summary table, for the terminal
  // experiment rate: the slope of log(loss) on log(n) over all fits and its standard error (NaN
  // for select, or with one n).
  double slope = std::numeric_limits<double>::quiet_NaN(), slope_se = std::numeric_limits<double>::quiet_NaN();
};

LabRunResult run_lab(const Recipe& recipe, bool quiet = false);

// `tunekit fit RECIPE --seeds 0,1,...` (experiment rate): the whole experiment once per seed, each
// in its own run directory (<output.name>_seed<S>), then the seeds' slopes: each seed's, their mean
// with its 95 % interval (Student t over seeds), and whether the theory's slope lies inside it, in
// <output.dir>/<output.name>_seeds/{seeds.csv,summary.md}.
struct LabSeedsResult {
  std::string dir, csv, summary, table;
  std::vector<double> slopes;
};
LabSeedsResult run_lab_seeds(const std::string& recipe_path, const std::vector<std::string>& overrides,
                             const std::vector<int64_t>& seeds, bool quiet = false);

// Least-squares slope of log(y) on log(x) and its standard error.
std::pair<double, double> loglog_slope(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace tunekit::lab
