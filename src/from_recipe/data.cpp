#include "src/from_recipe/data.h"

#include <fmt/format.h>

#include <filesystem>

#include "data/spam_assassin.h"
#include "util/error.h"

namespace fs = std::filesystem;

namespace tunekit::from_recipe {
namespace {
// The command that prepares the SpamAssassin splits in `root` (empty: the default place).
std::string prepare_spam_command(const std::string& root) {
  if (root.empty() || fs::path(root) == fs::path(data::kPreparedSpamAssassin)) return "tunekit prepare spam_assassin";
  return "tunekit prepare spam_assassin --dest " + root;
}
}  // namespace

data::FashionMnistOptions fashion_mnist_options(const Recipe& recipe) {
  const auto& c = recipe.data;
  return data::FashionMnistOptions()
      .root(c.root)
      .classes(c.classes)
      .val_fraction(c.val_fraction)
      .limit_train(c.limit_train);
}

data::TextDataOptions text_data_options(const Recipe& recipe) {
  const auto& c = recipe.data;
  const auto& m = recipe.model;
  // The prepared SpamAssassin splits are checked against their MANIFEST.json (sizes, MD5s).
  const bool spam = c.dataset == DatasetKind::SpamAssassin;
  return data::TextDataOptions()
      .train_file(c.train_file)
      .val_file(c.val_file)
      .test_file(c.test_file)
      .format(to_string(c.format))
      .text_field(c.text_field)
      .label_field(c.label_field)
      .group_field(c.group_field)
      .labels(c.labels)
      .val_fraction(c.val_fraction)
      .limit_train(c.limit_train)
      .prepared_by(spam ? prepare_spam_command(c.root) : "")
      .manifest(spam ? (fs::path(c.train_file).parent_path() / "MANIFEST.json").string() : "")
      .seed(static_cast<uint64_t>(recipe.seed))
      .language_model(m.is_lm())
      .max_len(m.max_seq_len)
      .pad_id(m.pad_id)
      .num_classes(m.num_classes);
}

data::TokenizerOptions tokenizer_options(const Recipe& recipe) {
  const auto& c = recipe.data.tokenizer;
  data::TokenizerTrainOptions train;
  train.type = to_string(c.type);
  train.vocab_size = c.vocab_size;
  train.character_coverage = c.character_coverage;
  // A tokenizer trained for a Hugging Face family (model.from_config) becomes that model's
  // tokenizer.model, which transformers reads with its own (tokenizers-backed) Llama tokenizer:
  // no NFKC, whitespace kept. Sentencepiece's identity normalization gives the same ids there
  // (with nmt_nfkc, transformers 5.17 read "\n\n" as byte-fallback tokens where sentencepiece
  // had folded it into a space).
  if (!recipe.model.from_config.empty()) train.normalization = "identity";
  return data::TokenizerOptions()
      .model(c.model)
      .init_run(recipe.init_from.run)
      .train(train)
      .vocab_size(recipe.model.vocab_size)
      .pad_id(recipe.model.pad_id);
}

namespace {
// tunekit trains tokenizers on text datasets only: instruct/chat data reads ids with an existing
// tokenizer (the model directory's, data.tokenizer.model, or init_from.run's).
void check_chat_tokenizer_source(const Recipe& recipe, const std::string& run_dir) {
  if (!recipe.data.is_chat() || !recipe.data.tokenizer.model.empty() || !recipe.init_from.run.empty() ||
      fs::exists(fs::path(run_dir) / data::kTokenizerFile))
    return;
  throw Error(fmt::format("{}: data.tokenizer.model: dataset {} needs an existing tokenizer (data.tokenizer.model, or "
                          "init_from.run of a pre-trained text run); tunekit trains tokenizers on text datasets only",
                          recipe.source, to_string(recipe.data.dataset)));
}
}  // namespace

data::Tokenizer prepare_tokenizer(const Recipe& recipe, const std::string& run_dir, std::string* message) {
  check_chat_tokenizer_source(recipe, run_dir);
  return data::prepare_tokenizer(tokenizer_options(recipe), text_data_options(recipe), run_dir, message);
}

data::Tokenizer run_tokenizer(const Recipe& recipe, const std::string& run_dir) {
  return data::run_tokenizer(tokenizer_options(recipe), run_dir);
}

data::ImageSplits load_text_data(const Recipe& recipe, const data::Tokenizer& tok) {
  return data::load_text_data(text_data_options(recipe), tok);
}

data::ChatTemplate chat_template(const Recipe& recipe, const data::Tokenizer& tok) {
  if (recipe.data.chat_template != data::ChatTemplate::Auto) return recipe.data.chat_template;
  return data::guess_chat_template(tok, to_string(recipe.model.kind));
}

data::ChatDataOptions chat_data_options(const Recipe& recipe, const data::Tokenizer& tok) {
  const auto& c = recipe.data;
  data::ChatFileSpec files;
  files.format = to_string(c.format);
  files.instruct = c.dataset == DatasetKind::Instruct;
  files.instruction_field = c.instruction_field;
  files.input_field = c.input_field;
  files.output_field = c.output_field;
  files.messages_field = c.messages_field;
  return data::ChatDataOptions()
      .train_file(c.train_file)
      .val_file(c.val_file)
      .test_file(c.test_file)
      .files(files)
      .chat_template(chat_template(recipe, tok))
      .system(c.system_prompt)
      .max_seq_len(c.max_seq_len > 0 ? c.max_seq_len : recipe.model.max_seq_len)
      .packing(c.packing)
      .val_fraction(c.val_fraction)
      .limit_train(c.limit_train)
      .seed(static_cast<uint64_t>(recipe.seed));
}

data::ImageSplits load_chat_data(const Recipe& recipe, const data::Tokenizer& tok, std::string* message) {
  return data::load_chat_data(chat_data_options(recipe, tok), tok, message);
}

}  // namespace tunekit::from_recipe
