// Evaluation of a classifier on a labelled dataset: loss, accuracy, per-class accuracy,
// macro F1, the confusion matrix, and how much prompt experts are used.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "data/dataset.h"
#include "models/model.h"

namespace tunekit {

struct EvalResult {
  int64_t n = 0;
  double loss = 0, accuracy = 0, macro_f1 = 0;
  std::vector<double> per_class_accuracy;
  std::vector<std::string> class_names;
  torch::Tensor confusion;  // [k, k] int64, rows = true class, columns = predicted
  // Prompt experts: the mean weight each one's gate gave its trainable experts (1 − the frozen
  // expert's weight), by host module name; empty without prompt experts.
  std::vector<std::pair<std::string, double>> prompt_usage;
  double mean_prompt_usage() const;
  double seconds = 0;

  std::string report() const;  // human-readable, multi-line
  std::string json() const;    // one JSON object
};

EvalResult evaluate(models::Model& model, const data::LabelledDataset& data, int64_t batch_size);

}  // namespace tunekit
