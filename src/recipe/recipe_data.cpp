// The recipe's `data:` section (with data.tokenizer) and the checks of data against model.
#include <fmt/format.h>

#include <filesystem>
#include <set>

#include "data/tokenizer.h"
#include "src/recipe/recipe_sections.h"
#include "util/error.h"

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

// data.tokenizer with model.from_config: tunekit trains the tokenizer on the training text (or reads
// data.tokenizer.model) as for its own text models; config.json's vocab_size must hold its pieces.
void parse_config_tokenizer(Section& t, TokenizerConfig& k, const ModelConfig& model) {
  if (k.vocab_size == 0) k.vocab_size = model.vocab_size;
  if (k.vocab_size < 1 || k.vocab_size > model.vocab_size)
    t.fail("vocab_size", fmt::format("is {} but {}'s vocab_size is {} (the embedding must hold every piece)",
                                     k.vocab_size, model.from_config, model.vocab_size));
  t.check_real("character_coverage", k.character_coverage, 0, true, 1, false);
  if (!k.model.empty() && (t.has("type") || t.has("vocab_size")))
    t.fail(t.has("type") ? "type" : "vocab_size", "only applies when tunekit trains the tokenizer (model is set)");
  if (!k.model.empty() && fs::exists(k.model)) {  // a missing file is reported when the run starts
    int64_t pieces = 0;
    try {
      pieces = data::Tokenizer::load(k.model).vocab_size();
    } catch (const Error& e) {
      t.fail("model", e.what());
    }
    if (pieces > model.vocab_size)
      t.fail("model", fmt::format("{} has {} pieces but {}'s vocab_size is {} (the embedding must hold every piece)",
                                  k.model, pieces, model.from_config, model.vocab_size));
  }
  t.finish();
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
  if (!model.from_config.empty()) return parse_config_tokenizer(t, k, model);
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

// dataset instruct / chat (data/chat.h): the template, the system message, the field names, the
// length and packing. The model must be a causal LM; a guessed template needs its directory;
// packing needs a Hugging Face family (models/lm.h: packed segments); max_seq_len fits the model.
void parse_chat(Section& d, DataConfig& c, const ModelConfig& model) {
  const std::string kind = to_string(c.dataset);
  for (const char* key : {"text_field", "label_field", "group_field", "labels"})
    if (d.has(key)) d.fail(key, fmt::format("does not apply to dataset {} (its fields: {})", kind,
                                            c.dataset == DatasetKind::Chat ? "messages_field"
                                                                           : "instruction_field, input_field, output_field"));
  if (!model.is_lm())
    d.fail("dataset", fmt::format("{} needs a causal language model (model.from_hf or model.from_config of a Hugging Face "
                                  "family, or model.kind text with task causal_lm)", kind));
  if (c.train_file.empty()) d.fail("train_file", fmt::format("dataset {} needs data.train_file (JSONL, CSV, TSV or a directory)", kind));
  const bool chat = c.dataset == DatasetKind::Chat;
  for (const char* key : {"instruction_field", "input_field", "output_field"})
    if (chat && d.has(key)) d.fail(key, "only applies to dataset instruct (chat records have messages_field)");
  if (!chat && d.has("messages_field")) d.fail("messages_field", "only applies to dataset chat");
  if (chat && (c.format == TextFormat::Csv || c.format == TextFormat::Tsv))
    d.fail("format", "chat records (a list of messages each) are read from JSONL only");
  c.chat_template = d.choice("template", c.chat_template);
  d.read("system", c.system_prompt);
  d.read("instruction_field", c.instruction_field);
  d.read("input_field", c.input_field);
  d.read("output_field", c.output_field);
  d.read("messages_field", c.messages_field);
  const std::pair<const char*, const std::string*> fields[] = {{"instruction_field", &c.instruction_field},
                                                              {"input_field", &c.input_field},
                                                              {"output_field", &c.output_field},
                                                              {"messages_field", &c.messages_field}};
  for (auto [key, value] : fields)
    if (value->empty()) d.fail(key, "must name a field");
  d.read("max_seq_len", c.max_seq_len);
  d.check_range("max_seq_len", c.max_seq_len, 0, model.max_seq_len,
                fmt::format(" (0 = model.max_seq_len; at most the model's context, {})", model.max_seq_len));
  if (c.max_seq_len == 1) d.fail("max_seq_len", "must be at least 2 (or 0 = model.max_seq_len)");
  d.read("packing", c.packing);
  if (c.packing && !model.is_hf_lm())
    d.fail("packing", fmt::format("needs a Hugging Face family (model.from_hf or model.from_config: gpt2, llama, mistral, "
                                  "qwen2), whose forward takes packed segments; model.kind is {}", to_string(model.kind)));
  if (c.chat_template == data::ChatTemplate::Auto && model.from_hf.empty() && model.from_config.empty())
    d.fail("template", "auto guesses the template from a model directory (model.from_hf or model.from_config); set "
                       "data.template: chatml, llama3, mistral, plain or alpaca");
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
  if (c.is_chat()) parse_chat(d, c, model);
  else
    for (const char* key : {"template", "system", "instruction_field", "input_field", "output_field", "messages_field",
                            "max_seq_len", "packing"})
      if (d.has(key)) d.fail(key, "only applies to dataset instruct or chat");
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
