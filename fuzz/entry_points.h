// The parsers of outside input as the fuzz targets (fuzz/fuzz_*.cpp) and the regression test
// (tests/test_fuzz_regressions.cpp) drive them: one function per target taking the raw bytes,
// writing them where the parser reads them (a scratch directory) and calling tunekit's own entry
// point. tunekit::Error is the accepted outcome for bad input; anything else escaping is a bug.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "data/idx.h"
#include "data/spam_assassin.h"
#include "data/text_file.h"
#include "src/hf/config.h"
#include "src/hf/load.h"
#include "src/io/adapter_file.h"
#include "src/io/checkpoint.h"
#include "src/io/safetensors.h"
#include "src/recipe/recipe.h"
#include "fuzz/scratch.h"
#include "fuzz/tokenizer_entry.h"

namespace tunekit::fuzz {

// A valid one-tensor safetensors file (a shard or adapter file beside the fuzzed JSON).
inline std::string tiny_safetensors() {
  const std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + std::string(8, '\0');
}

// --- the targets --------------------------------------------------------------------------

// A recipe file (parse_recipe: YAML reader, every section parser). A model.from_hf names a
// directory that only exists if the input happens to name one; nothing is written.
inline void recipe(const std::string& bytes) { parse_recipe(bytes, "fuzz.yaml", {}); }

// `--set key=value` overrides (one per input line) applied to a small valid recipe.
inline void overrides(const std::string& bytes) {
  static const std::string base =
      "seed: 1\nmodel: {kind: vit, dim: 16, depth: 1, heads: 2, num_classes: 3}\n"
      "adapter: {kind: lora, r: 2, targets: [\"blocks.*.attn.q\"]}\n"
      "data: {dataset: fashion_mnist, classes: [1, 2, 3], batch_size: 8}\ntrain: {epochs: 1}\n"
      "sweep: {grid: {adapter.r: [1, 2]}}\n";
  std::vector<std::string> sets;
  size_t start = 0;
  while (start <= bytes.size() && sets.size() < 16) {
    size_t end = bytes.find('\n', start);
    if (end == std::string::npos) end = bytes.size();
    sets.push_back(bytes.substr(start, end - start));
    start = end + 1;
  }
  parse_recipe(base, "fuzz.yaml", sets);
}

// A safetensors file: parsed in memory, then opened as a file and every tensor read (straight,
// and converted to float32 through a small buffer).
inline void safetensors(const std::string& bytes) {
  try {
    io::parse_safetensors(bytes, "fuzz.safetensors");
  } catch (const Error&) {
  }
  const std::string path = scratch("safetensors") + "/fuzz.safetensors";
  put(path, bytes);
  io::SafetensorsReader reader(path);
  for (const auto& e : reader.entries()) {
    reader.read(e);
    if (e.numel() <= (1 << 16)) {
      torch::Tensor dst = torch::empty(e.shape, torch::kFloat);
      reader.read_into(e, dst, /*chunk_bytes=*/64);
    }
  }
}

// adapter_config.json of a PEFT adapter directory (io::peft_adapter_config).
inline void adapter_config(const std::string& bytes) {
  const std::string dir = scratch("adapter");
  put(dir + "/" + io::kAdapterWeightsFile, tiny_safetensors());
  put(dir + "/" + io::kAdapterConfigFile, bytes);
  io::peft_adapter_config(dir);
}

// A checkpoint's state.json (io::load_train_state).
inline void state_json(const std::string& bytes) {
  const std::string dir = scratch("checkpoint");
  put(dir + "/state.json", bytes);
  io::load_train_state(dir);
}

// An IDX file, raw or gzip (data::read_idx).
inline void idx(const std::string& bytes) {
  const std::string path = scratch("idx") + "/fuzz-idx-ubyte";
  put(path, bytes);
  data::read_idx(path);
}

// A JSONL, CSV or TSV text file (data::read_text_file). The first byte picks the format and
// whether labels and groups are asked for; the rest is the file.
inline void text_file(const std::string& bytes) {
  if (bytes.empty()) return;
  const unsigned char pick = static_cast<unsigned char>(bytes[0]);
  static const char* formats[] = {"jsonl", "csv", "tsv"};
  const std::string format = formats[pick % 3];
  data::TextFileSpec spec;
  spec.path = scratch("text") + "/fuzz." + format;
  spec.format = (pick & 0x40) ? "auto" : format;
  if (pick & 0x10) spec.label_field = "";
  if (pick & 0x20) spec.group_field = "group";
  put(spec.path, bytes.substr(1));
  data::read_text_file(spec);
}

// One raw mail of the SpamAssassin corpus (data::mail_to_text: headers, MIME, quoted-printable,
// base64, HTML).
inline void mail(const std::string& bytes) { data::mail_to_text(bytes); }

// A Hugging Face model directory's config.json (hf::read_hf_config).
inline void hf_config(const std::string& bytes) {
  const std::string dir = scratch("hf_config");
  put(dir + "/config.json", bytes);
  hf::read_hf_config(dir, 0);
}

// model.safetensors.index.json of a sharded checkpoint (hf::find_hf_weights), beside one valid
// shard; every shard it finds is then opened.
inline void hf_index(const std::string& bytes) {
  const std::string dir = scratch("hf_index");
  put(dir + "/model-00001-of-00001.safetensors", tiny_safetensors());
  put(dir + "/model.safetensors.index.json", bytes);
  for (const auto& f : hf::find_hf_weights(dir).files) io::SafetensorsReader reader(f);
}

// Every target by name (the regression test walks fuzz/regressions/<name> and fuzz/corpus/<name>).
inline const std::map<std::string, Target>& targets() {
  static const std::map<std::string, Target> t = {
      {"recipe", recipe},       {"overrides", overrides}, {"safetensors", safetensors}, {"adapter_config", adapter_config},
      {"state_json", state_json}, {"idx", idx},           {"text_file", text_file},     {"mail", mail},
      {"hf_config", hf_config}, {"hf_index", hf_index},   {"tokenizer", tokenizer},
      {"tokenizer_json", tokenizer_json}};
  return t;
}

}  // namespace tunekit::fuzz
