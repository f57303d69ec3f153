// Text datasets for the text Transformer: records from JSONL/CSV/TSV files (or the prepared
// SpamAssassin splits) tokenised with the run's sentencepiece model. A classifier gets
// [bos] + ids cut to max_seq_len and right-padded; a language model gets every document as
// [bos] + ids + [eos], concatenated and cut into max_seq_len chunks.
#pragma once
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/fashion_mnist.h"
#include "data/text_file.h"
#include "data/tokenizer.h"
#include "src/recipe/recipe.h"

namespace tunekit::data {

inline constexpr const char* kTokenizerFile = "tokenizer.model";

// The run's tokenizer (RUN_DIR/tokenizer.model). When missing it is made: copied from
// data.tokenizer.model, else from init_from.run (a fine-tune must read ids the way its
// pre-trained model did), else trained on the training split's text. Checks it against the
// model (vocabulary size, pad id). `message` says what happened.
Tokenizer prepare_tokenizer(const Recipe& recipe, const std::string& run_dir, std::string* message = nullptr);

// Loads the run's tokenizer and checks it against the recipe's model.
Tokenizer run_tokenizer(const Recipe& recipe, const std::string& run_dir);

// Reads the train/val/test records of a text recipe (val split off train when there is no val_file).
struct TextRecords {
  std::vector<TextRecord> train, val, test;
};
TextRecords read_text_records(const DataConfig& cfg, uint64_t seed);

// Token ids for a classifier: [N, max_len], each row [bos] + ids (cut) + pad.
torch::Tensor encode_padded(const std::vector<TextRecord>& records, const Tokenizer& tok, int64_t max_len, int64_t pad_id);
// Token ids for a language model: [chunks, len] from the concatenated documents.
torch::Tensor encode_chunks(const std::vector<TextRecord>& records, const Tokenizer& tok, int64_t len);

ImageSplits load_text_data(const Recipe& recipe, const Tokenizer& tok);

}  // namespace tunekit::data
