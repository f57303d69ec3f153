#include "data/text_data.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "data/hf_tokenizer.h"
#include "util/error.h"
#include "util/file.h"

namespace fs = std::filesystem;

namespace tunekit::data {
namespace {

TextFileSpec spec_for(const TextDataOptions& o, const std::string& path) {
  return {path, o.format(), o.text_field(), o.label_field(), o.group_field(), o.manifest(), o.prepared_by()};
}

std::vector<TextRecord> read_required(const TextDataOptions& o, const std::string& path, const char* key) {
  if (!fs::exists(path)) {
    if (!o.prepared_by().empty()) throw Error(fmt::format("{}: not found (run `{}` first)", path, o.prepared_by()));
    throw Error(fmt::format("data.{}: {}: no such file", key, path));
  }
  auto records = read_text_file(spec_for(o, path));
  if (records.empty()) throw Error(fmt::format("{}: no records", path));
  return records;
}

// Seeded split of `records`, `fraction` of every label held out (documents, not chunks).
std::pair<std::vector<TextRecord>, std::vector<TextRecord>> split_records(const std::vector<TextRecord>& records,
                                                                          double fraction, uint64_t seed) {
  std::map<std::string, std::vector<int64_t>> by_label;
  for (size_t i = 0; i < records.size(); ++i) by_label[records[i].label].push_back(static_cast<int64_t>(i));
  auto gen = seeded_generator(seed + 29);
  std::vector<int64_t> held_idx, keep_idx;
  for (auto& [label, idx] : by_label) {
    auto perm = torch::randperm(static_cast<int64_t>(idx.size()), gen, torch::kLong);
    auto n_held = static_cast<int64_t>(idx.size() * fraction + 0.5);
    for (int64_t i = 0; i < perm.numel(); ++i) (i < n_held ? held_idx : keep_idx).push_back(idx[perm[i].item<int64_t>()]);
  }
  std::sort(held_idx.begin(), held_idx.end());
  std::sort(keep_idx.begin(), keep_idx.end());
  std::vector<TextRecord> keep, held;
  for (auto i : keep_idx) keep.push_back(records[i]);
  for (auto i : held_idx) held.push_back(records[i]);
  return {keep, held};
}

void check_tokenizer(const Tokenizer& tok, const TokenizerOptions& m) {
  if (tok.vocab_size() > m.vocab_size())
    throw Error(fmt::format("{}: the tokenizer has {} pieces but model.vocab_size is {} (set model.vocab_size: {})",
                            tok.path(), tok.vocab_size(), m.vocab_size(), tok.vocab_size()));
  // < 0: the model pads nothing (LM chunks). A tokenizer without a pad token (GPT-2, Llama 3,
  // Qwen2) pads with its eos, as Hugging Face does.
  const bool eos_pads = tok.pad_id() < 0 && tok.eos_id() >= 0 && m.pad_id() == tok.eos_id();
  if (m.pad_id() >= 0 && tok.pad_id() != m.pad_id() && !eos_pads)
    throw Error(fmt::format("{}: the tokenizer's pad id is {} but model.pad_id is {}{}", tok.path(), tok.pad_id(), m.pad_id(),
                            tok.pad_id() >= 0 ? fmt::format(" (set model.pad_id: {})", tok.pad_id())
                            : tok.eos_id() >= 0
                                ? fmt::format(" (the tokenizer has no pad token: set model.pad_id: {}, its eos, to pad with it)",
                                              tok.eos_id())
                                : " (the tokenizer has no pad piece: train it with a pad id, e.g. spm_train --pad_id=3)"));
}

// The run's tokenizer: the run directory itself when it holds a model directory's tokenizer files
// (their configs name the special tokens), else its tokenizer.model.
std::string run_tokenizer_path(const std::string& run_dir) {
  for (const char* f : kHfTokenizerFiles)
    if (fs::exists(fs::path(run_dir) / f)) return run_dir;
  return (fs::path(run_dir) / kTokenizerFile).string();
}

// Copies a tokenizer's files into the run directory under their own names (a model directory's
// tokenizer.json + configs, or tokenizer.model + configs), removing the Hugging Face files of an
// earlier tokenizer that are not among them.
void copy_tokenizer_files(const std::vector<std::string>& files, const std::string& run_dir) {
  std::set<std::string> names;
  for (const auto& f : files) names.insert(fs::path(f).filename().string());
  for (const char* f : kHfTokenizerFiles)
    if (!names.count(f)) fs::remove(fs::path(run_dir) / f);
  for (const auto& f : files) {
    const fs::path dest = fs::path(run_dir) / fs::path(f).filename();
    if (!fs::exists(dest) || !fs::equivalent(f, dest)) write_file_atomic(dest.string(), read_file(f, kMaxTokenizerBytes));
  }
}

}  // namespace

TextRecords read_text_records(const TextDataOptions& o) {
  TextRecords r;
  r.train = read_required(o, o.train_file(), "train_file");
  if (!o.val_file().empty()) {
    r.val = read_required(o, o.val_file(), "val_file");
  } else if (o.val_fraction() > 0) {
    std::tie(r.train, r.val) = split_records(r.train, o.val_fraction(), o.seed());
  }
  if (!o.test_file().empty()) r.test = read_required(o, o.test_file(), "test_file");
  return r;
}

Tokenizer run_tokenizer(const TokenizerOptions& options, const std::string& run_dir) {
  std::string path = run_tokenizer_path(run_dir);
  if (!fs::exists(path)) throw Error(fmt::format("{}: no {} (train this run first)", run_dir, kTokenizerFile));
  Tokenizer tok = Tokenizer::load(path);
  check_tokenizer(tok, options);
  return tok;
}

Tokenizer prepare_tokenizer(const TokenizerOptions& options, const TextDataOptions& data, const std::string& run_dir,
                            std::string* message) {
  fs::path dest = fs::path(run_dir) / kTokenizerFile;
  std::string msg;
  fs::create_directories(run_dir);
  std::string from;
  if (!options.model().empty()) from = options.model();
  else if (!options.init_run().empty()) from = run_tokenizer_path(options.init_run());
  if (!from.empty()) {
    if (!fs::exists(from))
      throw Error(options.model().empty()
                      ? fmt::format("init_from.run: {}: no {} (was it a text run?)", options.init_run(), kTokenizerFile)
                                  : fmt::format("data.tokenizer.model: {}: no such file", from));
    const Tokenizer source = Tokenizer::load(from);  // fails clearly on a non-model before anything is copied
    if (source.kind() == "sentencepiece" && !fs::is_directory(from)) {
      copy_tokenizer_files({}, run_dir);  // no Hugging Face files left behind
      if (!fs::exists(dest) || !fs::equivalent(from, dest))
        write_file_atomic(dest.string(), read_file(from, kMaxTokenizerBytes));
    } else {  // a model directory's (or a Hugging Face) tokenizer: its files, configs included
      copy_tokenizer_files(source.files(), run_dir);
    }
    msg = fmt::format("tokenizer: {} (copied from {})", run_tokenizer_path(run_dir), from);
  } else if (fs::exists(dest)) {
    msg = fmt::format("tokenizer: {} (kept)", dest.string());
  } else {
    copy_tokenizer_files({}, run_dir);  // no Hugging Face files left behind
    auto records = read_text_records(data);
    std::vector<std::string> texts;
    for (const auto& rec : records.train) texts.push_back(rec.text);
    const auto& o = options.train();
    Tokenizer::train(texts, o, dest.string());
    msg = fmt::format("tokenizer: trained {} ({}, vocab {}) on {} training texts", dest.string(), o.type, o.vocab_size,
                      texts.size());
  }
  Tokenizer tok = Tokenizer::load(run_tokenizer_path(run_dir));
  check_tokenizer(tok, options);
  if (message) *message = msg + fmt::format(", {} pieces", tok.vocab_size());
  return tok;
}

torch::Tensor encode_padded(const std::vector<TextRecord>& records, const Tokenizer& tok, int64_t max_len, int64_t pad_id) {
  auto out = torch::full({static_cast<int64_t>(records.size()), max_len}, pad_id, torch::kLong);
  auto a = out.accessor<int64_t, 2>();
  const int64_t start = tok.bos_id() >= 0 ? 1 : 0;  // a tokenizer without bos (Qwen2, GPT-2's files alone): ids only
  for (size_t i = 0; i < records.size(); ++i) {
    auto ids = tok.encode(records[i].text);
    if (start) a[i][0] = tok.bos_id();
    for (int64_t j = 0; j + start < max_len && j < static_cast<int64_t>(ids.size()); ++j) a[i][j + start] = ids[j];
  }
  return out;
}

torch::Tensor encode_chunks(const std::vector<TextRecord>& records, const Tokenizer& tok, int64_t len) {
  if (tok.bos_id() < 0 && tok.eos_id() < 0)
    throw Error(fmt::format("{}: the tokenizer has neither a bos nor an eos token to separate documents", tok.path()));
  std::vector<int64_t> stream;
  for (const auto& r : records) {  // [bos] ids [eos]; one separator when bos == eos (GPT-2) or one is missing
    if (tok.bos_id() >= 0 && tok.bos_id() != tok.eos_id()) stream.push_back(tok.bos_id());
    auto ids = tok.encode(r.text);
    stream.insert(stream.end(), ids.begin(), ids.end());
    stream.push_back(tok.eos_id() >= 0 ? tok.eos_id() : tok.bos_id());
  }
  const int64_t n = static_cast<int64_t>(stream.size()) / len;
  return torch::tensor(stream, torch::kLong).slice(0, 0, n * len).view({n, len}).clone();
}

ImageSplits load_text_data(const TextDataOptions& c, const Tokenizer& tok) {
  TextRecords rec = read_text_records(c);
  ImageSplits s;
  std::vector<std::pair<std::vector<TextRecord>*, LabelledDataset*>> parts{
      {&rec.train, &s.train}, {&rec.val, &s.val}, {&rec.test, &s.test}};
  if (c.language_model()) {
    for (auto [records, d] : parts) {
      if (records->empty()) continue;
      d->inputs = encode_chunks(*records, tok, c.max_len());
      d->labels = torch::zeros({d->inputs.size(0)}, torch::kLong);
      d->class_names = {"text"};
    }
  } else {
    std::vector<std::string> labels = c.labels();
    if (labels.empty()) {
      std::set<std::string> seen;
      for (const auto& r : rec.train) seen.insert(r.label);
      labels.assign(seen.begin(), seen.end());
    }
    if (static_cast<int64_t>(labels.size()) != c.num_classes())
      throw Error(fmt::format("{}: the training labels are {} ({} classes) but model.num_classes is {}", c.train_file(),
                              fmt::join(labels, ", "), labels.size(), c.num_classes()));
    std::set<std::string> group_set;
    for (auto [records, d] : parts)
      for (const auto& r : *records)
        if (!c.group_field().empty()) group_set.insert(r.group);
    std::vector<std::string> groups(group_set.begin(), group_set.end());
    const std::string files[3] = {c.train_file(), c.val_file().empty() ? c.train_file() : c.val_file(), c.test_file()};
    for (size_t p = 0; p < parts.size(); ++p) {
      auto [records, d] = parts[p];
      if (records->empty()) continue;
      std::vector<int64_t> y, g;
      for (const auto& r : *records) {
        auto it = std::find(labels.begin(), labels.end(), r.label);
        if (it == labels.end())
          throw Error(fmt::format("{}:{}: label '{}' is not one of {}{}", files[p], r.line, r.label, fmt::join(labels, ", "),
                                  c.labels().empty() ? " (the labels seen in the training file)" : " (data.labels)"));
        y.push_back(it - labels.begin());
        if (!c.group_field().empty())
          g.push_back(std::find(groups.begin(), groups.end(), r.group) - groups.begin());
      }
      d->inputs = encode_padded(*records, tok, c.max_len(), c.pad_id());
      d->labels = torch::tensor(y, torch::kLong);
      d->class_names = labels;
      if (!g.empty()) {
        d->groups = torch::tensor(g, torch::kLong);
        d->group_names = groups;
      }
    }
  }
  if (c.limit_train() > 0 && c.limit_train() < s.train.size()) {
    auto gen = seeded_generator(c.seed() + 17);
    auto idx = std::get<0>(torch::randperm(s.train.size(), gen, torch::kLong).slice(0, 0, c.limit_train()).sort());
    s.train = s.train.subset(idx);
  }
  return s;
}

}  // namespace tunekit::data
