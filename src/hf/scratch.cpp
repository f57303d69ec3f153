#include "src/hf/scratch.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <nlohmann/json.hpp>

#include "models/init_guard.h"
#include "models/precision.h"
#include "util/error.h"
#include "util/file.h"

namespace tunekit::hf {

namespace fs = std::filesystem;
using json = nlohmann::json;
using models::hf::Family;

namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// config.json's pad_token_id when it is an id of the vocabulary, else -1.
int64_t config_pad_id(const HfConfig& c) {
  if (!c.raw.contains("pad_token_id") || !c.raw["pad_token_id"].is_number_integer()) return -1;
  const int64_t id = c.raw["pad_token_id"].get<int64_t>();
  return id >= 0 && id < c.llama.vocab_size() ? id : -1;
}

json id_or_null(int64_t id) { return id >= 0 ? json(id) : json(nullptr); }
json piece_or_null(const data::Tokenizer& tok, int64_t id) { return id >= 0 ? json(tok.piece(id)) : json(nullptr); }

}  // namespace

HfConfig read_config_source(const std::string& path, int64_t context) {
  if (path.empty()) throw Error("model.from_config: empty path (a config.json or a directory holding one)");
  if (!fs::exists(path)) throw Error(fmt::format("{}: no such file or directory (a config.json or a directory holding one)", path));
  std::string dir = path;
  if (!fs::is_directory(path)) {
    if (fs::path(path).filename() != "config.json")
      throw Error(fmt::format("{}: name the file config.json, or give the directory holding it", path));
    dir = fs::path(path).parent_path().string();
    if (dir.empty()) dir = ".";
  }
  return read_hf_config(dir, context);
}

double initializer_range(const HfConfig& config) {
  if (!config.raw.contains("initializer_range") || config.raw["initializer_range"].is_null()) return 0.02;
  const json& v = config.raw["initializer_range"];
  if (!v.is_number() || !(v.get<double>() > 0) || !std::isfinite(v.get<double>()))
    throw Error(fmt::format("{}: initializer_range must be a positive number, not {}", config.config_path(), v.dump()));
  return v.get<double>();
}

namespace {

// Rows of float32 drawn at a time for a weight stored narrow (as the loader reads in row blocks).
constexpr int64_t kNarrowDrawBytes = int64_t(4) << 20;

// normal(0, std) values of `w`'s [out, in] shape, drawn kNarrowDrawBytes of rows at a time and
// stored as `dtype` (models::narrow_frozen narrows row by row).
torch::Tensor draw_narrow(const torch::Tensor& w, double std, models::FrozenDtype dtype) {
  const int64_t out = w.size(0), in = w.size(1);
  const int64_t rows = std::max<int64_t>(1, kNarrowDrawBytes / (in * int64_t(sizeof(float))));
  torch::Tensor stored;
  for (int64_t r = 0; r < out; r += rows) {
    const int64_t n = std::min(rows, out - r);
    auto block = models::narrow_frozen(torch::empty({n, in}).normal_(0, std), dtype);
    if (!stored.defined()) stored = torch::empty({out, block.size(1)}, block.options());
    stored.narrow(0, r, n).copy_(block);
  }
  return stored;
}

// init_weights_as_transformers; the 2-D tensors in `narrow` are drawn into `dtype`'s storage
// instead, their float32 tensors (never written) kept in `untouched` for the caller to free last.
void init_weights(models::hf::HfModel& model, const HfConfig& config, const std::set<const void*>& narrow,
                  models::FrozenDtype dtype, std::vector<torch::Tensor>& untouched) {
  if (!models::hf::is_causal_lm(config.family))
    throw Error(fmt::format("{}: model.from_config builds the causal-LM families (gpt2, llama, mistral, qwen2), not {}",
                            config.config_path(), to_string(config.family)));
  const double std = initializer_range(config);
  const bool gpt2 = config.family == Family::Gpt2;
  const double c_proj_std = gpt2 ? std / std::sqrt(2.0 * static_cast<double>(config.gpt2.n_layer())) : std;
  const int64_t pad = gpt2 ? -1 : config_pad_id(config);  // GPT-2's wte has no padding_idx
  torch::NoGradGuard no_grad;
  for (auto& t : model.hf_tensors()) {
    const bool norm = t.tensor.dim() == 1 && (t.name.find("norm") != std::string::npos ||
                                              t.name.find("ln_") != std::string::npos);
    const double weight_std = gpt2 && ends_with(t.name, "c_proj.weight") ? c_proj_std : std;
    if (narrow.count(t.tensor.unsafeGetTensorImpl()) && t.tensor.dim() == 2 && t.tensor.numel() > 0) {
      auto stored = draw_narrow(t.tensor, weight_std, dtype);
      untouched.push_back(t.tensor.detach());  // shares the float32 storage, keeping it to the end
      t.tensor.set_requires_grad(false);       // a frozen weight (an int8 tensor cannot require grad)
      t.tensor.set_data(stored);               // the parameter object stays
      continue;
    }
    if (ends_with(t.name, "bias")) {
      t.tensor.zero_();
    } else if (norm) {
      t.tensor.fill_(1.0);
    } else {
      t.tensor.normal_(0, weight_std);
    }
    if (pad >= 0 && t.name == "model.embed_tokens.weight") t.tensor[pad].zero_();
  }
}

}  // namespace

void init_weights_as_transformers(models::hf::HfModel& model, const HfConfig& config) {
  std::vector<torch::Tensor> untouched;
  init_weights(model, config, {}, models::FrozenDtype::Fp32, untouched);
}

std::shared_ptr<models::hf::HfModel> build_from_config(const HfConfig& config, const HfBuildOptions& options,
                                                       const NarrowBuild& narrow) {
  std::shared_ptr<models::hf::HfModel> model;
  {
    models::SkipInit skip;  // every Hugging Face tensor is initialised below, with the config's range
    model = build_hf_model(config, options);
  }
  std::set<const void*> picked;
  if (narrow.dtype != models::FrozenDtype::Fp32 && narrow.select)
    for (const auto& t : narrow.select(*model)) picked.insert(t.unsafeGetTensorImpl());
  std::vector<torch::Tensor> untouched;  // freed after the last draw: the allocator reuses touched pages meanwhile
  init_weights(*model, config, picked, narrow.dtype, untouched);
  return model;
}

void set_special_token_ids(HfConfig& config, const data::Tokenizer& tok) {
  config.raw["bos_token_id"] = id_or_null(tok.bos_id());
  config.raw["eos_token_id"] = id_or_null(tok.eos_id());
  config.raw["pad_token_id"] = id_or_null(tok.pad_id());
}

std::vector<std::string> write_hf_tokenizer_files(const data::Tokenizer& tok, const std::string& out_dir,
                                                  int64_t context) {
  if (tok.kind() != "sentencepiece")
    throw Error(fmt::format("{}: a {} tokenizer; the Hugging Face directory of a model.from_config run carries a "
                            "sentencepiece tokenizer.model",
                            tok.path(), tok.kind()));
  const fs::path out(out_dir);
  write_file_atomic((out / "tokenizer.model").string(), read_file(tok.path(), data::kMaxTokenizerBytes));
  json special = {{"bos_token", piece_or_null(tok, tok.bos_id())},
                  {"eos_token", piece_or_null(tok, tok.eos_id())},
                  {"pad_token", piece_or_null(tok, tok.pad_id())},
                  {"unk_token", piece_or_null(tok, tok.unk_id())}};
  json config = special;
  config["add_bos_token"] = true;
  config["add_eos_token"] = false;
  config["tokenizer_class"] = "LlamaTokenizer";
  config["model_max_length"] = context;
  config["clean_up_tokenization_spaces"] = false;
  config["legacy"] = true;  // sentencepiece's own encoding (tunekit's), not the non-legacy prefix handling
  config["sp_model_kwargs"] = json::object();
  json generation = {{"bos_token_id", id_or_null(tok.bos_id())},
                     {"eos_token_id", id_or_null(tok.eos_id())},
                     {"pad_token_id", id_or_null(tok.pad_id())}};
  write_file_atomic((out / "tokenizer_config.json").string(), config.dump(2) + "\n");
  write_file_atomic((out / "special_tokens_map.json").string(), special.dump(2) + "\n");
  write_file_atomic((out / "generation_config.json").string(), generation.dump(2) + "\n");
  return {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"};
}

}  // namespace tunekit::hf
