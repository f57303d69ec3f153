#include "src/hf/load.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "models/hf/families.h"
#include "models/init_guard.h"
#include "models/precision.h"
#include "src/io/safetensors.h"
#include "util/error.h"
#include "util/file.h"
#include "util/text.h"

namespace tunekit::hf {

namespace fs = std::filesystem;
using json = nlohmann::json;
using models::hf::Family;
using models::hf::HfTensor;

namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

// The attribute of the *ForCausalLM / *ForImageClassification class that holds the base model:
// files of the headless classes (GPT2Model, ViTModel) and some older ones name tensors without it.
std::string base_prefix(Family f) {
  switch (f) {
    case Family::Gpt2:
      return "transformer.";
    case Family::Vit:
      return "vit.";
    default:
      return "model.";
  }
}
bool is_head_name(const std::string& name) {
  return name.rfind("lm_head.", 0) == 0 || name.rfind("classifier.", 0) == 0;
}

// A file's tensor name as the model's (the head class's) name.
std::string canonical_name(Family f, const std::string& name) {
  const std::string prefix = base_prefix(f);
  if (name.rfind(prefix, 0) == 0 || is_head_name(name)) return name;
  return prefix + name;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Tensors older files carry that are not weights: GPT-2's causal-mask buffers, Llama's rotary
// frequencies (recomputed from rope_theta), ViTModel's pooler (ViTForImageClassification has none).
bool is_skipped_buffer(Family f, const std::string& canonical) {
  switch (f) {
    case Family::Gpt2:
      return ends_with(canonical, ".attn.bias") || ends_with(canonical, ".attn.masked_bias");
    case Family::Vit:
      return canonical.rfind("vit.pooler.", 0) == 0;
    default:
      return ends_with(canonical, ".rotary_emb.inv_freq");
  }
}

std::string embedding_name(Family f) {
  return f == Family::Gpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight";
}

bool excluded(const std::string& name, const std::vector<std::string>& exclude) {
  for (const auto& g : exclude)
    if (glob_match(g, name)) return true;
  return false;
}

std::vector<int64_t> file_shape(const HfTensor& t) {
  auto s = t.tensor.sizes().vec();
  if (t.transposed) std::reverse(s.begin(), s.end());
  return s;
}

// The index's weight_map: tensor name -> shard file name (a plain file name in the directory).
std::map<std::string, std::string> read_weight_map(const std::string& index) {
  const json raw = read_json_file(index);
  if (!raw.is_object() || !raw.contains("weight_map") || !raw["weight_map"].is_object() || raw["weight_map"].empty())
    throw Error(fmt::format("{}: no weight_map (tensor name -> shard file)", index));
  std::map<std::string, std::string> out;
  for (auto it = raw["weight_map"].begin(); it != raw["weight_map"].end(); ++it) {
    const json& v = it.value();
    if (!v.is_string() || v.get<std::string>().empty() ||
        fs::path(v.get<std::string>()).filename() != v.get<std::string>())
      throw Error(
          fmt::format("{}: weight_map maps '{}' to {}, not a file of the directory", index, it.key(), v.dump()));
    out[it.key()] = v.get<std::string>();
  }
  return out;
}

// One file tensor matched to the model tensor it fills.
struct Assignment {
  const io::SafetensorsReader* reader;
  const io::SafetensorsEntry* entry;
  size_t model_index;
};

// The whole checkpoint opened: a reader per file and, when sharded, the index's map checked
// against what the shards hold.
struct OpenCheckpoint {
  HfWeightFiles files;
  std::vector<std::unique_ptr<io::SafetensorsReader>> readers;
};

OpenCheckpoint open_checkpoint(const std::string& dir) {
  OpenCheckpoint c;
  c.files = find_hf_weights(dir);
  for (const auto& f : c.files.files) c.readers.push_back(std::make_unique<io::SafetensorsReader>(f));
  if (c.files.index.empty()) return c;
  const auto weight_map = read_weight_map(c.files.index);
  std::map<std::string, const io::SafetensorsReader*> holder;
  for (const auto& r : c.readers) {
    const std::string shard = fs::path(r->path()).filename().string();
    for (const auto& e : r->entries()) {
      auto it = weight_map.find(e.name);
      if (it == weight_map.end())
        throw Error(fmt::format("{}: tensor '{}' is not in {}'s weight_map", r->path(), e.name, kIndexFile));
      if (it->second != shard)
        throw Error(fmt::format("{}: tensor '{}' is mapped to {} by {}", r->path(), e.name, it->second, kIndexFile));
      holder[e.name] = r.get();
    }
  }
  for (const auto& [name, shard] : weight_map)
    if (!holder.count(name))
      throw Error(fmt::format("{}: weight_map maps '{}' to {}, which does not hold it", c.files.index, name, shard));
  return c;
}

// Where the checkpoint's tensors are, for "missing" messages: the one file or the index.
std::string checkpoint_name(const OpenCheckpoint& c) {
  return c.files.index.empty() ? c.files.files[0] : c.files.index;
}

void check_dtype(const io::SafetensorsReader& r, const io::SafetensorsEntry& e) {
  if (e.dtype != torch::kFloat && e.dtype != torch::kHalf && e.dtype != torch::kBFloat16)
    throw Error(fmt::format("{}: tensor '{}' is stored as {}; weights must be F32, F16 or BF16", r.path(), e.name,
                            e.dtype_name));
}

void check_shape(const io::SafetensorsReader& r, const io::SafetensorsEntry& e, const HfTensor& t) {
  const auto want = file_shape(t);
  if (e.shape == want) return;
  const std::string layout =
      t.transposed ? fmt::format(" (the model's {} stored as Conv1D [in, out])", c10::str(t.tensor.sizes())) : "";
  std::string hint;
  if (t.transposed && e.shape == t.tensor.sizes().vec())
    hint = "; the file holds it as [out, in], not Conv1D's [in, out]";
  if (is_head_name(t.name)) hint += "; a head of another size needs num_labels or exclude for a new one";
  throw Error(fmt::format("{}: tensor '{}' has shape {}, config.json implies {}{}{}", r.path(), e.name,
                          c10::str(c10::IntArrayRef(e.shape)), c10::str(c10::IntArrayRef(want)), layout, hint));
}

// A tied head stored in the file anyway (older GPT-2 files): it must be the embedding.
void check_tied_head(const io::SafetensorsReader& r, const io::SafetensorsEntry& e, const torch::Tensor& embedding,
                     uint64_t chunk_bytes) {
  check_dtype(r, e);
  if (e.shape != embedding.sizes().vec())
    throw Error(fmt::format("{}: tensor '{}' has shape {} but the tied embedding is {}", r.path(), e.name,
                            c10::str(c10::IntArrayRef(e.shape)), c10::str(embedding.sizes())));
  bool same = true;
  r.for_each_block(e, chunk_bytes, [&](int64_t first, const torch::Tensor& block) {
    if (same) same = block.to(embedding.scalar_type()).equal(embedding.narrow(0, first, block.size(0)));
  });
  if (!same)
    throw Error(
        fmt::format("{}: tensor '{}' differs from the embedding it is tied to (config.json: "
                    "tie_word_embeddings true); set tie_word_embeddings false if the head is its own",
                    r.path(), e.name));
}

// Row blocks for read_narrow: narrowing makes a few float32 temporaries of a block (int8: the
// row maxima, the scaled and rounded values), all transient, kept small beside the narrow model.
constexpr uint64_t kNarrowChunkBytes = 4ull << 20;

// Reads a 2-D weight and stores it as `dtype` (models/precision.h narrow_frozen) in place of the
// model's float32 tensor, which is never written: row blocks of at most chunk_bytes go from the
// file through float32 into the narrow tensor. A transposed destination (GPT-2's Conv1D [in, out]
// file layout) has no row blocks in the file, so it goes through one float32 copy of itself.
// The model's float32 tensor, never written, goes to `untouched`: the caller frees those after the
// last tensor, so while it reads, the allocator reuses the pages the narrowing temporaries already
// touched instead of handing out untouched ones (freed mid-load, they kept the peak near float32's
// for int8 at Qwen2.5-0.5B's shape). Returns the bytes saved against float32.
int64_t read_narrow(const io::SafetensorsReader& reader, const io::SafetensorsEntry& entry, const HfTensor& t,
                    models::FrozenDtype dtype, uint64_t chunk_bytes, std::vector<torch::Tensor>& untouched) {
  torch::Tensor stored;
  if (t.transposed) {
    auto wide = torch::empty(t.tensor.sizes(), t.tensor.options());
    reader.read_into(entry, wide.t(), chunk_bytes);
    stored = models::narrow_frozen(wide, dtype);
  } else {
    reader.for_each_block(entry, chunk_bytes, [&](int64_t first, const torch::Tensor& block) {
      auto rows = models::narrow_frozen(block.to(torch::kFloat), dtype);
      if (!stored.defined()) stored = torch::empty({t.tensor.size(0), rows.size(1)}, rows.options());
      stored.narrow(0, first, rows.size(0)).copy_(rows);
    });
  }
  const int64_t saved = t.tensor.numel() * int64_t(sizeof(float)) - stored.numel() * stored.element_size();
  untouched.push_back(t.tensor.detach());  // shares the float32 storage, keeping it to the end
  t.tensor.set_requires_grad(false);      // a frozen weight (an int8 tensor cannot require grad)
  t.tensor.set_data(stored);              // the parameter object stays
  return saved;
}

}  // namespace

HfWeightFiles find_hf_weights(const std::string& dir) {
  HfWeightFiles out;
  const fs::path d(dir);
  if (fs::exists(d / kSingleFile)) {
    out.files.push_back((d / kSingleFile).string());
    return out;
  }
  if (fs::exists(d / kIndexFile)) {
    out.index = (d / kIndexFile).string();
    std::set<std::string> seen;
    for (const auto& [name, shard] : read_weight_map(out.index)) {
      if (!seen.insert(shard).second) continue;
      if (!fs::exists(d / shard))
        throw Error(fmt::format("{}: shard {} is missing (weight_map puts '{}' there)", out.index, shard, name));
      out.files.push_back((d / shard).string());
    }
    std::sort(out.files.begin(), out.files.end());
    return out;
  }
  for (const char* bin : {"pytorch_model.bin", "pytorch_model.bin.index.json"})
    if (fs::exists(d / bin))
      throw Error(fmt::format(
          "{}: only {} found; tunekit reads safetensors weights (model.safetensors). Convert with transformers: "
          "AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)",
          dir, bin));
  throw Error(fmt::format("{}: no {} or {} (not a Hugging Face model directory with safetensors weights)", dir,
                          kSingleFile, kIndexFile));
}

HfLoadReport load_hf_weights(const HfConfig& config, models::hf::HfModel& model, const HfWeightsOptions& options) {
  const Family family = config.family;
  auto checkpoint = open_checkpoint(config.dir);
  std::vector<HfTensor> tensors = model.hf_tensors();
  std::unordered_map<std::string, size_t> by_name;
  std::vector<std::string> names;
  for (size_t i = 0; i < tensors.size(); ++i) {
    by_name[tensors[i].name] = i;
    names.push_back(tensors[i].name);
  }

  HfLoadReport report;
  std::vector<Assignment> plan;
  std::vector<const io::SafetensorsEntry*> filled(tensors.size(), nullptr);
  std::vector<std::pair<const io::SafetensorsReader*, const io::SafetensorsEntry*>> tied_heads;
  std::set<std::string> dtypes;
  for (const auto& reader : checkpoint.readers) {
    report.files.push_back(reader->path());
    for (const auto& e : reader->entries()) {
      const std::string canon = canonical_name(family, e.name);
      auto it = by_name.find(canon);
      if (it == by_name.end()) {
        if (is_skipped_buffer(family, canon)) {
          report.skipped.push_back(e.name);
        } else if (canon == "lm_head.weight" && models::hf::is_causal_lm(family)) {  // a tied head stored anyway
          tied_heads.emplace_back(reader.get(), &e);
          report.skipped.push_back(e.name);
        } else {
          throw Error(fmt::format("{}: unexpected tensor '{}'{}", reader->path(), e.name, did_you_mean(canon, names)));
        }
        continue;
      }
      const size_t i = it->second;
      if (filled[i])
        throw Error(fmt::format("{}: tensor '{}' appears twice (as '{}' and '{}')", reader->path(), canon,
                                filled[i]->name, e.name));
      filled[i] = &e;
      if (excluded(canon, options.exclude())) {
        report.skipped.push_back(e.name);
        continue;
      }
      check_dtype(*reader, e);
      check_shape(*reader, e, tensors[i]);
      dtypes.insert(e.dtype_name);
      plan.push_back({reader.get(), &e, i});
    }
  }
  std::vector<std::string> missing;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (filled[i] && !excluded(tensors[i].name, options.exclude())) continue;
    if (excluded(tensors[i].name, options.exclude()) || (config.base_model && is_head_name(tensors[i].name)))
      report.fresh.push_back(tensors[i].name);
    else
      missing.push_back(tensors[i].name);
  }
  if (!missing.empty())
    throw Error(fmt::format("{}: missing tensor '{}'{}", checkpoint_name(checkpoint), missing[0],
                            missing.size() > 1 ? fmt::format(" (and {} more)", missing.size() - 1) : ""));

  torch::NoGradGuard no_grad;
  std::unordered_set<const c10::TensorImpl*> narrow;
  if (options.narrow_dtype() != models::FrozenDtype::Fp32)
    for (const auto& t : options.narrow())
      if (t.defined() && t.dim() == 2) narrow.insert(t.unsafeGetTensorImpl());
  std::vector<torch::Tensor> untouched;  // read_narrow: the float32 tensors replaced, freed at the end
  for (const auto& a : plan) {
    const HfTensor& t = tensors[a.model_index];
    if (narrow.count(t.tensor.unsafeGetTensorImpl())) {
      report.narrowed_saved += read_narrow(*a.reader, *a.entry, t, options.narrow_dtype(),
                                           std::min<uint64_t>(options.chunk_bytes(), kNarrowChunkBytes), untouched);
      ++report.narrowed;
    } else {
      a.reader->read_into(*a.entry, t.transposed ? t.tensor.t() : t.tensor, options.chunk_bytes());
    }
    report.bytes += a.entry->bytes();
    ++report.tensors;
  }
  untouched.clear();
  for (const auto& [reader, entry] : tied_heads) {
    auto it = by_name.find(embedding_name(family));
    if (it == by_name.end()) throw Error(fmt::format("{}: unexpected tensor '{}'", reader->path(), entry->name));
    check_tied_head(*reader, *entry, tensors[it->second].tensor, options.chunk_bytes());
  }
  report.dtypes.assign(dtypes.begin(), dtypes.end());
  return report;
}

std::shared_ptr<models::hf::HfModel> build_hf_model(const HfConfig& config, const HfBuildOptions& options) {
  switch (config.family) {
    case Family::Gpt2: {
      auto o = config.gpt2;
      return models::hf::make_gpt2(o.dropout(options.dropout()).attention(options.attention()));
    }
    case Family::Llama:
    case Family::Mistral:
    case Family::Qwen2: {
      auto o = config.llama;
      return models::hf::make_llama(o.dropout(options.dropout()).attention(options.attention()));
    }
    case Family::Vit: {
      auto o = config.vit;
      models::hf::ImagePreprocess p = o.preprocess();  // the checkpoint's mean / std
      p.enabled = options.preprocess_images();
      p.data_mean = options.data_mean();
      p.data_std = options.data_std();
      o.dropout(options.dropout()).attention(options.attention()).preprocess(p);
      if (options.num_labels() > 0) o.num_labels(options.num_labels());
      return models::hf::make_vit(o);
    }
  }
  throw Error("build_hf_model: unknown family");
}

namespace {
// The tensors the checkpoint did not fill (a new classifier, an excluded tensor, a headless
// model's head), initialised as Hugging Face's _init_weights does: biases zero, norm weights
// one, other weights normal(0, 0.02).
void initialise_fresh(models::hf::HfModel& model, const std::vector<std::string>& fresh) {
  if (fresh.empty()) return;
  const std::set<std::string> names(fresh.begin(), fresh.end());
  torch::NoGradGuard no_grad;
  for (auto& t : model.hf_tensors()) {
    if (!names.count(t.name)) continue;
    const bool bias = t.name.size() >= 4 && t.name.compare(t.name.size() - 4, 4, "bias") == 0;
    const bool norm = t.tensor.dim() == 1 && (t.name.find("norm") != std::string::npos ||
                                              t.name.find("ln_") != std::string::npos);
    if (bias) t.tensor.zero_();
    else if (norm) t.tensor.fill_(1.0);
    else t.tensor.normal_(0, 0.02);
  }
}
}  // namespace

HfLoaded load_hf(const std::string& dir, const HfLoadOptions& options) {
  HfLoaded out;
  out.config = read_hf_config(dir, options.max_seq_len());
  auto exclude = options.exclude();
  const int64_t labels = options.build().num_labels();
  if (out.config.family == Family::Vit && labels > 0 && labels != out.config.vit.num_labels())
    exclude.push_back("classifier.*");  // a new head for another number of classes
  {
    models::SkipInit skip;  // the checkpoint fills the weights: no random values first
    out.model = build_hf_model(out.config, options.build());
  }
  auto weights = HfWeightsOptions().exclude(exclude);
  if (options.frozen_dtype() != models::FrozenDtype::Fp32 && options.frozen_select())
    weights.narrow(options.frozen_select()(*out.model)).narrow_dtype(options.frozen_dtype());
  out.report = load_hf_weights(out.config, *out.model, weights);
  initialise_fresh(*out.model, out.report.fresh);
  return out;
}

std::shared_ptr<models::hf::HfModel> load_hf_model(const std::string& dir, const HfLoadOptions& options) {
  return load_hf(dir, options).model;
}

}  // namespace tunekit::hf
