// Evaluation of a classifier on a labelled dataset: loss, accuracy, per-class accuracy,
// macro F1 (and the positive class's F1 for two classes), per-group accuracy, the confusion
// matrix, and how much prompt experts are used. For a causal LM: next-token loss, perplexity
// and next-token accuracy.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "data/dataset.h"
#include "models/model.h"

namespace tunekit {

struct GroupScore {
  std::string name;
  int64_t n = 0;
  double accuracy = 0;
};

struct EvalResult {
  int64_t n = 0;
  double loss = 0, accuracy = 0, macro_f1 = 0;
  double f1 = -1;  // two classes: F1 of class 1 (the positive class, e.g. spam); -1 otherwise
  std::vector<GroupScore> groups;  // datasets with groups (SpamAssassin folders)
  bool lm = false;                 // causal LM: loss/accuracy are per next token
  int64_t tokens = 0;
  double perplexity = 0;
  std::vector<double> per_class_accuracy;
  std::vector<std::string> class_names;
  torch::Tensor confusion;  // [k, k] int64, rows = true class, columns = predicted
  // Prompt experts: the mean weight each one's gate gave its trainable experts (1 − the frozen
  // expert's weight), by host module name; empty without prompt experts.
  std::vector<std::pair<std::string, double>> prompt_usage;
  double mean_prompt_usage() const;
  double seconds = 0;
  // Chat / instruction data (src/train/chat_objective.h): `tokens` are the trained (response)
  // tokens, `positions` every token position scored (padding included), `accuracy` the token
  // accuracy; the exact match of greedily generated short answers over `answer_rows` rows (-1:
  // not measured, `exact_match_note` says why), the text match when a tokenizer decoded them.
  bool response = false;
  int64_t positions = 0, answer_rows = 0, long_answers = 0, generated_tokens = 0;
  double exact_match = -1, text_match = -1;
  std::string exact_match_note;
  double loss_seconds = 0;  // the scoring pass alone (generation excluded)

  std::string report() const;  // human-readable, multi-line
  std::string json() const;    // one JSON object
};

EvalResult evaluate(models::Model& model, const data::LabelledDataset& data, int64_t batch_size);

// An evaluation split among ranks (data parallel): each evaluates its part of the split, the
// parts' counts are summed (an allreduce) and the sum read back as the whole split's evaluation.
// eval_counts: the additive numbers an evaluation is made of (rows, loss and correct sums, tokens,
// the confusion matrix, groups, exact-match rows and matches, prompt usage weighted by rows), as a
// 1-D float64 tensor whose layout depends only on the split's classes, groups and prompt experts
// (the same on every rank). eval_from_counts: `part` (any rank's result: names, flags) with every
// figure recomputed from the summed `counts`; a response evaluation none of whose parts scored a
// trained token is an error, as it is for a whole split.
torch::Tensor eval_counts(const EvalResult& part);
EvalResult eval_from_counts(const EvalResult& part, const torch::Tensor& counts);
// The rows of `data` that part `rank` of `ranks` evaluates: contiguous, sizes differing by at most
// one; one part is `data` itself.
data::LabelledDataset part_of(const data::LabelledDataset& data, int rank, int ranks);

// Causal LM on token chunks: mean next-token cross-entropy (pad targets ignored), perplexity.
EvalResult evaluate_lm(models::Model& model, const data::LabelledDataset& data, int64_t batch_size, int64_t pad_id);


// Next-token cross-entropy of LM logits [B, N, V] for ids [B, N] (mean over non-pad targets).
torch::Tensor lm_loss(const torch::Tensor& logits, const torch::Tensor& ids, int64_t pad_id);

}  // namespace tunekit
