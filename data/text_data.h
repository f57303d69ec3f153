// Text datasets for the text Transformer: records from JSONL/CSV/TSV files (or the prepared
// SpamAssassin splits) tokenised with the run's sentencepiece model. A classifier gets
// [bos] + ids cut to max_seq_len and right-padded; a language model gets every document as
// [bos] + ids + [eos], concatenated and cut into max_seq_len chunks.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/fashion_mnist.h"
#include "data/text_file.h"
#include "data/tokenizer.h"

namespace tunekit::data {

inline constexpr const char* kTokenizerFile = "tokenizer.model";

// Where the records come from and how they become tensors for the model.
struct TextDataOptions {
  TORCH_ARG(std::string, train_file);
  TORCH_ARG(std::string, val_file);   // empty: val_fraction of train
  TORCH_ARG(std::string, test_file);  // empty: no test split
  TORCH_ARG(std::string, format) = "auto";  // auto | jsonl | csv | tsv
  TORCH_ARG(std::string, text_field) = "text";
  TORCH_ARG(std::string, label_field) = "label";
  TORCH_ARG(std::string, group_field);       // empty: no groups
  TORCH_ARG(std::vector<std::string>, labels);  // class names in order; empty = sorted training labels
  TORCH_ARG(double, val_fraction) = 0.1;     // held out from train per label, seeded
  TORCH_ARG(int64_t, limit_train) = 0;       // 0 = all
  TORCH_ARG(std::string, prepared_by);       // the command that makes the files (named when one is missing or damaged)
  TORCH_ARG(std::string, manifest);          // a MANIFEST.json the files must match (sizes, MD5); empty: none
  TORCH_ARG(uint64_t, seed) = 0;
  // The model's side: a language model gets max_len chunks, a classifier padded rows of
  // num_classes labels.
  TORCH_ARG(bool, language_model) = false;
  TORCH_ARG(int64_t, max_len) = 128;
  TORCH_ARG(int64_t, pad_id) = 3;
  TORCH_ARG(int64_t, num_classes) = 2;
};

// Where the run's tokenizer comes from, and what the model needs of it.
struct TokenizerOptions {
  TORCH_ARG(std::string, model);     // an existing sentencepiece .model to copy; empty = init_run's or train one
  TORCH_ARG(std::string, init_run);  // a pre-trained run directory whose tokenizer a fine-tune must read ids with
  TORCH_ARG(TokenizerTrainOptions, train);  // when training one on the training split's text
  TORCH_ARG(int64_t, vocab_size) = 4000;    // the model's: the tokenizer may not have more pieces
  TORCH_ARG(int64_t, pad_id) = 3;           // the model's: the tokenizer's pad id must be it (< 0: no padding)
};

// The run's tokenizer (RUN_DIR/tokenizer.model). When missing it is made: copied from
// options.model, else from options.init_run (a fine-tune must read ids the way its pre-trained
// model did), else trained on the training split's text. Checks it against the model
// (vocabulary size, pad id). `message` says what happened.
Tokenizer prepare_tokenizer(const TokenizerOptions& options, const TextDataOptions& data, const std::string& run_dir,
                            std::string* message = nullptr);

// Loads the run's tokenizer and checks it against the model (options.vocab_size, pad_id).
Tokenizer run_tokenizer(const TokenizerOptions& options, const std::string& run_dir);

// Reads the train/val/test records (val split off train when there is no val_file).
struct TextRecords {
  std::vector<TextRecord> train, val, test;
};
TextRecords read_text_records(const TextDataOptions& options);

// Token ids for a classifier: [N, max_len], each row [bos] + ids (cut) + pad.
torch::Tensor encode_padded(const std::vector<TextRecord>& records, const Tokenizer& tok, int64_t max_len, int64_t pad_id);
// Token ids for a language model: [chunks, len] from the concatenated documents.
torch::Tensor encode_chunks(const std::vector<TextRecord>& records, const Tokenizer& tok, int64_t len);

ImageSplits load_text_data(const TextDataOptions& options, const Tokenizer& tok);

}  // namespace tunekit::data
