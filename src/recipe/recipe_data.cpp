// The recipe's `data:` section (with data.tokenizer) and the checks of data against model.
#include <fmt/format.h>

#include <filesystem>
#include <set>

#include "src/recipe/recipe_sections.h"

namespace fs = std::filesystem;

namespace tunekit::recipe {
namespace {

// spam_assassin: the prepared files, their fields and labels are fixed.
void fill_spam_assassin(Section& d, DataConfig& c) {
  for (const char* key : {"train_file", "val_file", "test_file", "format", "text_field", "label_field", "group_field", "labels"})
    if (d.has(key)) d.fail(key, "is fixed for spam_assassin (use dataset: text for your own files)");
  std::string root = c.root.empty() ? ".data/spam-assassin" : c.root;
  c.train_file = root + "/train.jsonl";
  c.val_file = root + "/val.jsonl";
  c.test_file = root + "/test.jsonl";
  c.group_field = "group";
  c.labels = {"ham", "spam"};
}

// data.tokenizer: its vocabulary is the model's. A Hugging Face LM reads ids with the tokenizer
// its directory ships (tokenizer.json, vocab.json + merges.txt, or tokenizer.model, with the
// directory's tokenizer_config.json / generation_config.json), never one tunekit trains.
void parse_tokenizer(Section& d, TokenizerConfig& k, const ModelConfig& model) {
  Section t = d.section("tokenizer");
  t.read("model", k.model);
  k.type = t.choice("type", k.type);
  t.read("vocab_size", k.vocab_size);
  t.read("character_coverage", k.character_coverage);
  if (model.is_hf_lm()) {
    for (const char* key : {"type", "vocab_size", "character_coverage"})
      if (t.has(key)) t.fail(key, "does not apply with model.from_hf (the model's own tokenizer is used)");
    if (k.model.empty()) {
      const fs::path dir(model.from_hf);
      k.model = model.from_hf;  // the directory: Tokenizer::load picks its files and reads its configs
      if (!fs::exists(dir / "tokenizer.json") && !(fs::exists(dir / "vocab.json") && fs::exists(dir / "merges.txt")) &&
          !fs::exists(dir / "tokenizer.model"))
        t.fail("model", fmt::format("{} has no tokenizer (tokenizer.json, vocab.json + merges.txt, or tokenizer.model): "
                                    "give data.tokenizer.model",
                                    model.from_hf));
    }
    k.vocab_size = model.vocab_size;
    t.finish();
    return;
  }
  if (k.vocab_size == 0) k.vocab_size = model.vocab_size;
  if (k.vocab_size != model.vocab_size)
    t.fail("vocab_size", fmt::format("is {} but model.vocab_size is {} (they must agree)", k.vocab_size, model.vocab_size));
  t.check_real("character_coverage", k.character_coverage, 0, true, 1, false);
  if (!k.model.empty() && (t.has("type") || t.has("vocab_size")))
    t.fail(t.has("type") ? "type" : "vocab_size", "only applies when tunekit trains the tokenizer (model is set)");
  t.finish();
}

// Text files need a text field, and a classifier labels (a language model reads text only).
void check_text_fields(Section& d, DataConfig& c, const ModelConfig& model) {
  if (c.dataset == DatasetKind::Text && c.train_file.empty())
    d.fail("train_file", "dataset text needs data.train_file (JSONL, CSV or TSV)");
  if (c.is_text() && c.text_field.empty()) d.fail("text_field", "must name the text field");
  if (model.is_lm()) c.label_field.clear();
  if (c.is_text() && !model.is_lm() && c.label_field.empty()) d.fail("label_field", "a classifier needs labels");
  std::set<std::string> label_seen;
  for (const auto& l : c.labels)
    if (!label_seen.insert(l).second) d.fail("labels", fmt::format("label '{}' is listed twice", l));
}

void check_sizes(Section& d, const DataConfig& c) {
  std::set<int64_t> seen;
  for (auto cls : c.classes) {
    if (cls < 0 || cls > 9) d.fail("classes", fmt::format("class {} is outside 0..9", cls));
    if (!seen.insert(cls).second) d.fail("classes", fmt::format("class {} is listed twice", cls));
  }
  d.check_real("val_fraction", c.val_fraction, 0, false, 1, true);
  d.check_range("batch_size", c.batch_size, 1, kMaxBatch);
  d.check_range("eval_batch_size", c.eval_batch_size, 1, kMaxBatch);
  if (c.limit_train < 0) d.fail("limit_train", fmt::format("must be >= 0 (0 = all), got {}", c.limit_train));
}

}  // namespace

void check_dataset_fits_model(Section& d, const DataConfig& c, const ModelConfig& model) {
  if (c.is_text() != model.is_text())
    d.fail("dataset", fmt::format("'{}' does not fit model.kind {} ({})", to_string(c.dataset), to_string(model.kind),
                                  model.is_text() ? "use spam_assassin or text" : "use fashion_mnist"));
}

void check_images_fit_model(Section& top, const ModelConfig& model, const DataConfig& c) {
  if (c.dataset != DatasetKind::FashionMnist || model.kind != ModelKind::Vit || model.is_hf()) return;
  Section m = top.section("model");  // a Hugging Face ViT resizes; tunekit's own reads the images as they are
  if (model.channels != 1)
    m.fail("channels", fmt::format("is {} but data.dataset fashion_mnist has 1 channel (grey images)", model.channels));
  if (model.image_size != 28)
    m.fail("image_size", fmt::format("is {} but data.dataset fashion_mnist has 28x28 images", model.image_size));
}

void check_classes_fit_model(Section& top, const ModelConfig& model, const DataConfig& c) {
  int64_t n_classes = c.is_text() ? static_cast<int64_t>(c.labels.size())
                      : c.classes.empty() ? 10 : static_cast<int64_t>(c.classes.size());
  if (!model.is_lm() && n_classes > 0 && model.num_classes != n_classes)
    top.section("model").fail("num_classes", fmt::format("is {} but data.{} selects {} classes", model.num_classes,
                                                        c.is_text() ? "labels" : "classes", n_classes));
}

DataConfig parse_data(Section d, const ModelConfig& model) {
  DataConfig c;
  c.dataset = d.choice("dataset", model.is_text() ? DatasetKind::SpamAssassin : c.dataset);
  check_dataset_fits_model(d, c, model);
  d.read("root", c.root);
  if (d.has("classes") && c.is_text()) d.fail("classes", "only applies to dataset fashion_mnist (text uses data.labels)");
  d.read("classes", c.classes);
  for (const char* key : {"train_file", "val_file", "test_file", "format", "text_field", "label_field", "group_field",
                          "labels", "tokenizer"})
    if (d.has(key) && !c.is_text()) d.fail(key, "only applies to text datasets (spam_assassin, text)");
  if (c.dataset == DatasetKind::SpamAssassin) fill_spam_assassin(d, c);
  d.read("train_file", c.train_file);
  d.read("val_file", c.val_file);
  d.read("test_file", c.test_file);
  c.format = d.choice("format", c.format);
  d.read("text_field", c.text_field);
  d.read("label_field", c.label_field);
  d.read("group_field", c.group_field);
  d.read("labels", c.labels);
  parse_tokenizer(d, c.tokenizer, model);
  check_text_fields(d, c, model);
  d.read("val_fraction", c.val_fraction);
  d.read("batch_size", c.batch_size);
  d.read("eval_batch_size", c.eval_batch_size);
  d.read("limit_train", c.limit_train);
  check_sizes(d, c);
  d.finish();
  return c;
}

}  // namespace tunekit::recipe
