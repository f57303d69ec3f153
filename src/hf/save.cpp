#include "src/hf/save.h"

#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "src/io/safetensors.h"
#include "util/error.h"
#include "util/file.h"

namespace tunekit::hf {

namespace fs = std::filesystem;
using json = nlohmann::json;
using models::hf::Family;

namespace {

// GPT2Model files name tensors without `transformer.` and hold no head (the head is tied to the
// embedding, so nothing is lost): they are written back in that style. Every other source is
// written as the class with a head, the model tunekit trained.
bool keeps_base_style(const HfConfig& source) { return source.family == Family::Gpt2 && source.base_model; }

std::string file_name(const HfConfig& source, const std::string& name) {
  const std::string prefix = "transformer.";
  if (keeps_base_style(source) && name.rfind(prefix, 0) == 0) return name.substr(prefix.size());
  return name;
}

// The classifier's class count, or -1 when the model has none.
int64_t classifier_rows(const std::vector<models::hf::HfTensor>& tensors) {
  for (const auto& t : tensors)
    if (t.name == "classifier.weight") return t.tensor.size(0);
  return -1;
}

json updated_config(const HfConfig& source, const std::vector<models::hf::HfTensor>& tensors, torch::ScalarType dtype) {
  json raw = source.raw;
  raw["torch_dtype"] = hf_dtype_name(dtype);
  if (raw.contains("dtype")) raw["dtype"] = hf_dtype_name(dtype);  // transformers >= 4.56 reads this one
  if (!keeps_base_style(source)) raw["architectures"] = json::array({source.head_architecture()});
  const int64_t classes = classifier_rows(tensors);
  if (source.family == Family::Vit && classes > 0) {
    std::vector<std::string> labels = source.labels;
    if (static_cast<int64_t>(labels.size()) != classes) {  // a new head: its classes have no names yet
      labels.clear();
      for (int64_t i = 0; i < classes; ++i) labels.push_back(fmt::format("LABEL_{}", i));
    }
    json id2label = json::object(), label2id = json::object();
    for (size_t i = 0; i < labels.size(); ++i) {
      id2label[std::to_string(i)] = labels[i];
      label2id[labels[i]] = i;
    }
    raw["id2label"] = id2label;
    raw["label2id"] = label2id;
    if (raw.contains("num_labels")) raw["num_labels"] = classes;
  }
  return raw;
}

// A previous sharded save in the output directory would shadow nothing (the single file wins)
// but would mislead a reader: its index and shards go.
void remove_stale_shards(const fs::path& out) {
  static const std::regex shard(R"(model-\d+-of-\d+\.safetensors)");
  for (const auto& entry : fs::directory_iterator(out)) {
    const std::string n = entry.path().filename().string();
    if (n == "model.safetensors.index.json" || std::regex_match(n, shard)) fs::remove(entry.path());
  }
}

}  // namespace

const std::vector<std::string>& hf_side_files() {
  static const std::vector<std::string> files = {"tokenizer.json",
                                                 "tokenizer_config.json",
                                                 "tokenizer.model",
                                                 "vocab.json",
                                                 "merges.txt",
                                                 "special_tokens_map.json",
                                                 "added_tokens.json",
                                                 "generation_config.json",
                                                 "preprocessor_config.json"};
  return files;
}

namespace {
HfSaveReport save(models::hf::HfModel& model, const HfConfig& source, const std::string& out_dir,
                  std::optional<torch::ScalarType> dtype) {
  HfSaveReport report;
  report.dtype = dtype.value_or(source.dtype);
  hf_dtype_name(report.dtype);  // float32, float16 or bfloat16, else an error before anything is written
  if (model.family() != source.family)
    throw Error(fmt::format("{}: the model is {} but the source config is {}", out_dir, to_string(model.family()),
                            to_string(source.family)));
  const fs::path out(out_dir);
  std::error_code ec;
  if (!source.dir.empty() && fs::exists(out) && fs::equivalent(out, fs::path(source.dir), ec))
    throw Error(fmt::format("{}: is the source directory; write the model to another directory", out_dir));
  fs::create_directories(out);
  report.dir = out.string();

  const auto tensors = model.hf_tensors();
  std::vector<io::SafetensorsWriter::Spec> specs;
  for (const auto& t : tensors) {
    auto shape = t.tensor.sizes().vec();
    if (t.transposed) std::reverse(shape.begin(), shape.end());  // Conv1D keeps [in, out]
    specs.push_back({file_name(source, t.name), report.dtype, shape});
  }
  report.weights = (out / "model.safetensors").string();
  {
    io::SafetensorsWriter writer(report.weights, specs, {{"format", "pt"}});
    for (const auto& t : tensors) {
      writer.write(t.transposed ? t.tensor.t() : t.tensor);
      report.bytes += static_cast<uint64_t>(t.tensor.numel()) * c10::elementSize(report.dtype);
      ++report.tensors;
    }
    writer.finish();
  }
  remove_stale_shards(out);
  write_file_atomic((out / "config.json").string(), updated_config(source, tensors, report.dtype).dump(2) + "\n");
  if (!source.dir.empty())
    for (const auto& name : hf_side_files()) {
      const fs::path from = fs::path(source.dir) / name;
      if (!fs::exists(from)) continue;
      write_file_atomic((out / name).string(), read_file(from.string(), int64_t(1) << 31));  // every write checked
      report.copied.push_back(name);
    }
  return report;
}
}  // namespace

HfSaveReport save_hf_model(models::hf::HfModel& model, const HfConfig& source, const std::string& out_dir,
                           std::optional<torch::ScalarType> dtype) {
  try {
    return save(model, source, out_dir, dtype);
  } catch (const fs::filesystem_error& e) {  // a directory that cannot be made, a file that cannot be copied
    throw Error(fmt::format("{}: {}", out_dir, e.what()));
  }
}

}  // namespace tunekit::hf
