// `tunekit fit RECIPE`: the estimation lab. From the recipe's `lab:` section it samples data from a
// ground-truth mixture of experts, fits the family by maximum likelihood and reports
//   experiment rate:   the Voronoi loss against n (log-log), the fitted slope ± its standard error
//                      beside the theory's slope;
//   experiment select: the number of experts chosen by the dendrogram of an over-specified fit and
//                      by AIC/BIC over separate fits, and how often each finds the truth.
// Writes results.csv, summary.md and plots (gnuplot) to the run directory.
#pragma once
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
};

LabRunResult run_lab(const Recipe& recipe, bool quiet = false);

// Least-squares slope of log(y) on log(x) and its standard error.
std::pair<double, double> loglog_slope(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace tunekit::lab
