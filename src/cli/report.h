// `tunekit report`: one table over run directories (recipe, trainable params, accuracy,
// throughput, wall time, outputs), read from what train/eval/export left in each run.
#pragma once
#include <string>
#include <vector>

namespace tunekit {

std::string report_table(const std::vector<std::string>& run_dirs);

}  // namespace tunekit
