#include "src/io/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>

#include "data/md5.h"
#include "util/error.h"
#include "util/fd_read.h"
#include "util/file.h"
#include "util/text.h"

namespace fs = std::filesystem;

namespace tunekit::io {

namespace {
using json = nlohmann::json;

// state.json's "format": 2 = the checkpoint carries manifest.json (none: an older tunekit's).
constexpr int64_t kStateFormat = 2;
constexpr int64_t kManifestFormat = 1;
constexpr const char* kManifest = "manifest.json";
constexpr const char* kState = "state.json";
constexpr int64_t kMaxJsonBytes = int64_t(16) << 20;
constexpr int64_t kMaxFileBytes = int64_t(1) << 40;
constexpr int64_t kMaxStep = int64_t(1) << 40;   // far beyond any run, far below overflow
constexpr int64_t kMaxCount = int64_t(1) << 50;  // samples
constexpr int kReadAttempts = 10;                // against a run replacing the directory meanwhile

std::string backup_of(const std::string& dir) {
  fs::path p(dir);
  return (p.parent_path() / ("." + p.filename().string() + ".old")).string();
}
std::string temp_of(const std::string& dir) {
  fs::path p(dir);
  return (p.parent_path() / ("." + p.filename().string() + ".tmp")).string();
}
std::string join(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

// ---- writing ----

// Saves `archive` to `path` through an AtomicFile. The writer function never throws and always
// reports every byte taken, so PyTorchStreamWriter never fails (nor throws from its destructor):
// the first write error is kept and thrown once save_to has returned.
void save_archive(torch::serialize::OutputArchive& archive, const std::string& path) {
  AtomicFile file(path);
  std::string error;
  try {
    archive.save_to([&](const void* data, size_t n) -> size_t {
      if (error.empty() && n > 0) {
        try {
          file.write(data, n);
        } catch (const std::exception& e) {
          error = e.what();
        }
      }
      return n;
    });
  } catch (const c10::Error& e) {
    if (error.empty()) error = fmt::format("{}: cannot serialise ({})", path, e.what_without_backtrace());
  }
  if (!error.empty()) throw Error(error);
  file.commit();
}

json state_json(const TrainState& s, bool trainable_only) {
  json j{{"format", kStateFormat},
         {"epoch", s.epoch},
         {"batch_in_epoch", s.batch_in_epoch},
         {"step", s.step},
         {"samples", s.samples},
         {"best_metric", s.best_metric},
         {"best_epoch", s.best_epoch},
         {"train_seconds", s.train_seconds},
         {"window_loss", s.window_loss},
         {"window_n", s.window_n},
         {"trainable_only", trainable_only}};
  return j;
}

// The regular files under `dir`, as paths relative to it ('/'-separated), sorted.
std::vector<std::string> files_under(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_directory()) continue;
    const std::string rel = fs::relative(entry.path(), dir).generic_string();
    if (!entry.is_regular_file()) throw Error(fmt::format("{}: not a regular file", entry.path().string()));
    out.push_back(rel);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// fsync of a file written by someone else (write_extra's copies): its bytes reach the disk, or the
// error (a full disk discovered late) is reported now.
void sync_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  int err = fd < 0 ? errno : (::fsync(fd) != 0 ? errno : 0);
  if (fd >= 0) ::close(fd);
  if (err) throw Error(fmt::format("{}: cannot write ({})", path, std::strerror(err)));
}

// manifest.json for the files in `tmp` (all of them but the manifest), read back from the disk.
json build_manifest(const std::string& tmp) {
  json files = json::array();
  for (const auto& name : files_under(tmp)) {
    if (name == kManifest) continue;
    const std::string path = join(tmp, name);
    sync_file(path);
    const std::string bytes = read_file(path, kMaxFileBytes);
    files.push_back({{"name", name}, {"size", bytes.size()}, {"md5", data::md5_hex(bytes)}});
  }
  return {{"format", kManifestFormat}, {"files", files}};
}

// What an error met while writing `tmp` says about `dir`: the temporary's name replaced by the
// checkpoint's, and the note that the previous checkpoint is kept.
std::string saving_error(std::string what, const std::string& tmp, const std::string& dir) {
  for (size_t at; (at = what.find(tmp)) != std::string::npos;) what.replace(at, tmp.size(), dir);
  const std::string note = "; the previous version, if any, is unchanged";
  if (size_t at = what.find(note); at != std::string::npos) what.erase(at, note.size());
  return fmt::format("checkpoint {} not saved: {}; the previous checkpoint there is kept", dir, what);
}

// Puts the finished `tmp` in place of `dir`: dir -> backup, tmp -> dir, backup dropped. A crash
// in between leaves the backup, which existing_checkpoint() falls back to.
void swap_in(const std::string& tmp, const std::string& dir) {
  const std::string old = backup_of(dir);
  std::error_code ec;
  fs::remove_all(old, ec);
  if (ec) throw Error(fmt::format("{}: cannot remove the old backup ({})", old, ec.message()));
  const bool had = fs::exists(dir);
  if (had) rename_synced(dir, old);
  try {
    rename_synced(tmp, dir);
  } catch (...) {
    if (had) ::rename(old.c_str(), dir.c_str());
    throw;
  }
  fs::remove_all(old, ec);  // a backup left behind is harmless: dir is complete
}

void write_checkpoint_files(const std::string& tmp, const torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                            const TrainState& s, const std::function<void(const std::string&)>& write_extra,
                            bool trainable_only) {
  {
    torch::serialize::OutputArchive archive;
    for (const auto& p : model.named_parameters())
      if (!trainable_only || p.value().requires_grad()) archive.write(p.key(), p.value().detach(), false);
    for (const auto& b : model.named_buffers()) archive.write(b.key(), b.value(), true);
    save_archive(archive, join(tmp, "model.pt"));
  }
  if (optimizer) {
    torch::serialize::OutputArchive archive;
    optimizer->save(archive);
    save_archive(archive, join(tmp, "optimizer.pt"));
    torch::serialize::OutputArchive rng;
    rng.write("cpu", at::detail::getDefaultCPUGenerator().get_state(), true);
    save_archive(rng, join(tmp, "rng.pt"));
  }
  if (write_extra) write_extra(tmp);
  write_file_atomic(join(tmp, kState), state_json(s, trainable_only).dump(2) + "\n");
  write_file_atomic(join(tmp, kManifest), build_manifest(tmp).dump(2) + "\n");
  sync_directory(tmp);
  Checkpoint verified(tmp);  // read back and checked against the manifest before it replaces anything
}

// ---- reading ----

// A directory opened once: every file of one read comes from the same directory, even if it is
// renamed meanwhile.
struct DirFd {
  int fd = -1;
  explicit DirFd(const std::string& dir) : fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {}
  ~DirFd() {
    if (fd >= 0) ::close(fd);
  }
};

// `name` in the directory `dirfd` (named `dir` in errors), whole; nullopt when it does not exist.
// Refuses what is not a regular file and anything over `max` bytes (`too_big` says why).
std::optional<std::string> read_at(int dirfd, const std::string& dir, const std::string& name, int64_t max,
                                   const std::string& too_big) {
  const std::string path = join(dir, name);
  int fd = ::openat(dirfd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return std::nullopt;
    throw Error(fmt::format("{}: cannot open ({})", path, std::strerror(err)));
  }
  return read_descriptor(fd, path, max, too_big);
}

json parse_json(const std::string& text, const std::string& path) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON ({})", path, e.what()));
  }
}

struct ManifestEntry {
  std::string name;
  int64_t size = 0;
  std::string md5;
};

bool safe_name(const std::string& name) {
  if (name.empty() || name[0] == '/') return false;
  for (const auto& part : fs::path(name)) if (part == ".." || part == ".") return false;
  return true;
}

bool is_md5(const std::string& s) {
  return s.size() == 32 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

std::vector<ManifestEntry> parse_manifest(const json& m, const std::string& path) {
  auto bad = [&](const std::string& what) { return Error(fmt::format("{}: {}", path, what)); };
  if (!m.is_object()) throw bad("not a JSON object");
  if (!m.contains("format") || !m["format"].is_number_integer()) throw bad("format: must be an integer");
  if (m["format"].get<int64_t>() != kManifestFormat)
    throw bad(fmt::format("format: {} is not one this tunekit reads ({})", m["format"].dump(), kManifestFormat));
  if (!m.contains("files") || !m["files"].is_array()) throw bad("files: must be a list");
  std::vector<ManifestEntry> out;
  std::set<std::string> seen;
  for (size_t i = 0; i < m["files"].size(); ++i) {
    const json& f = m["files"][i];
    const std::string key = fmt::format("files[{}]", i);
    if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !safe_name(f["name"].get<std::string>()))
      throw bad(key + ".name: must be a file name inside the checkpoint");
    if (!f.contains("size") || !f["size"].is_number_integer() || f["size"].get<int64_t>() < 0 ||
        f["size"].get<int64_t>() > kMaxFileBytes)
      throw bad(key + ".size: must be a byte count");
    if (!f.contains("md5") || !f["md5"].is_string() || !is_md5(f["md5"].get<std::string>()))
      throw bad(key + ".md5: must be 32 lower-case hex digits");
    ManifestEntry e{f["name"].get<std::string>(), f["size"].get<int64_t>(), f["md5"].get<std::string>()};
    if (!seen.insert(e.name).second) throw bad(key + ".name: '" + e.name + "' listed twice");
    out.push_back(e);
  }
  for (const char* needed : {kState, "model.pt"})
    if (!seen.count(needed)) throw bad(fmt::format("files: does not list {}", needed));
  return out;
}

// The files of a checkpoint that has manifest.json, each checked against it.
std::map<std::string, std::string> read_with_manifest(int dirfd, const std::string& dir, const std::string& text) {
  const std::string manifest_path = join(dir, kManifest);
  std::map<std::string, std::string> files;
  for (const auto& e : parse_manifest(parse_json(text, manifest_path), manifest_path)) {
    const std::string path = join(dir, e.name);
    auto bytes = read_at(dirfd, dir, e.name, e.size,
                         fmt::format("manifest.json says {} (the file is damaged or was replaced)", e.size));
    if (!bytes)
      throw Error(fmt::format("{}: missing (manifest.json lists it; the checkpoint is incomplete)", path));
    if (static_cast<int64_t>(bytes->size()) != e.size)
      throw Error(fmt::format("{}: {} bytes, manifest.json says {} (the file is truncated or damaged; "
                              "use the other checkpoint or train again)",
                              path, bytes->size(), e.size));
    if (data::md5_hex(*bytes) != e.md5)
      throw Error(fmt::format("{}: checksum mismatch (the file is damaged; use the other checkpoint or train again)",
                              path));
    files[e.name] = std::move(*bytes);
  }
  return files;
}

void warn_unverified(const std::string& dir) {
  static std::mutex mutex;
  static std::set<std::string> warned;
  std::lock_guard<std::mutex> lock(mutex);
  if (warned.insert(dir).second)
    std::fprintf(stderr, "warning: %s: no manifest.json (a checkpoint from an older tunekit): its files cannot be "
                 "checked for damage\n", dir.c_str());
}

// The files of a checkpoint from before manifests: state.json (which must not claim a manifest)
// and the archives that exist.
std::map<std::string, std::string> read_without_manifest(int dirfd, const std::string& dir) {
  std::map<std::string, std::string> files;
  auto state = read_at(dirfd, dir, kState, kMaxJsonBytes, "more than a state.json may have");
  if (!state) throw Error(fmt::format("{}: no checkpoint here (no state.json)", dir));
  const json j = parse_json(*state, join(dir, kState));
  if (j.is_object() && j.contains("format"))
    throw Error(fmt::format("{}: missing (this checkpoint's state.json says one was written; the checkpoint is "
                            "incomplete or damaged: use the other checkpoint or train again)",
                            join(dir, kManifest)));
  warn_unverified(dir);
  files[kState] = std::move(*state);
  for (const char* name : {"model.pt", "optimizer.pt", "rng.pt"})
    if (auto bytes = read_at(dirfd, dir, name, kMaxFileBytes, "more than a checkpoint file may have"))
      files[name] = std::move(*bytes);
  return files;
}

std::map<std::string, std::string> read_files_once(int dirfd, const std::string& dir) {
  auto manifest = read_at(dirfd, dir, kManifest, kMaxJsonBytes, "more than a manifest may have");
  return manifest ? read_with_manifest(dirfd, dir, *manifest) : read_without_manifest(dirfd, dir);
}

// Whether `dir` is no longer the directory `before` described (a run swapped a new checkpoint in).
bool replaced(const std::string& dir, const struct stat& before) {
  struct stat now {};
  return ::stat(dir.c_str(), &now) != 0 || now.st_ino != before.st_ino || now.st_dev != before.st_dev;
}

// The directory existing_checkpoint() picks for `dir` now ("" when none).
std::string resolved_now(const std::string& dir) {
  try {
    return existing_checkpoint(dir);
  } catch (const Error&) {
    return "";
  }
}

// ---- state.json fields ----

struct StateReader {
  const json& j;
  const std::string& path;
  bool strict;  // written with a format: every key present

  const json* get(const char* key) const {
    if (j.contains(key)) return &j[key];
    if (strict) throw Error(fmt::format("{}: {}: missing", path, key));
    return nullptr;
  }
  int64_t integer(const char* key, int64_t lo, int64_t hi, int64_t fallback) const {
    const json* v = get(key);
    if (!v) return fallback;
    bool ok = v->is_number_integer();
    if (ok && v->is_number_unsigned()) ok = v->get<uint64_t>() <= static_cast<uint64_t>(hi);
    if (ok) ok = v->get<int64_t>() >= lo && v->get<int64_t>() <= hi;
    if (!ok) throw Error(fmt::format("{}: {}: must be an integer from {} to {} (got {})", path, key, lo, hi, v->dump()));
    return v->get<int64_t>();
  }
  double number(const char* key, double lo, double hi, double fallback) const {
    const json* v = get(key);
    if (!v) return fallback;
    if (!v->is_number() || !std::isfinite(v->get<double>()) || v->get<double>() < lo || v->get<double>() > hi)
      throw Error(fmt::format("{}: {}: must be a finite number from {:g} to {:g} (got {})", path, key, lo, hi,
                              v->dump()));
    return v->get<double>();
  }
};

const std::set<std::string>& state_keys() {
  static const std::set<std::string> keys{"format",     "epoch",         "batch_in_epoch", "step",
                                          "samples",    "best_metric",   "best_epoch",     "train_seconds",
                                          "window_loss", "window_n",     "trainable_only"};
  return keys;
}

TrainState parse_state(const json& j, const std::string& path, bool* trainable_only) {
  if (!j.is_object()) throw Error(fmt::format("{}: not a JSON object", path));
  const bool strict = j.contains("format");
  if (strict && (!j["format"].is_number_integer() || j["format"].get<int64_t>() < 1 ||
                 j["format"].get<int64_t>() > kStateFormat))
    throw Error(fmt::format("{}: format: {} is not one this tunekit reads (1 to {}; a newer tunekit wrote it?)", path,
                            j["format"].dump(), kStateFormat));
  for (const auto& item : j.items())
    if (!state_keys().count(item.key()))
      throw Error(fmt::format("{}: {}: unknown key{}", path, item.key(),
                              did_you_mean(item.key(), std::vector<std::string>(state_keys().begin(), state_keys().end()))));
  const StateReader r{j, path, strict};
  const double huge = 1e300;
  TrainState s;
  s.epoch = r.integer("epoch", 0, kMaxStep, 0);
  s.batch_in_epoch = r.integer("batch_in_epoch", 0, kMaxStep, 0);
  s.step = r.integer("step", 0, kMaxStep, 0);
  s.samples = r.integer("samples", 0, kMaxCount, 0);
  s.best_metric = r.number("best_metric", -huge, huge, -1.0);
  s.best_epoch = r.integer("best_epoch", -1, kMaxStep, -1);
  s.train_seconds = r.number("train_seconds", 0, huge, 0.0);
  s.window_loss = r.number("window_loss", -huge, huge, 0.0);
  s.window_n = r.integer("window_n", 0, kMaxStep, 0);
  *trainable_only = false;
  if (j.contains("trainable_only")) {
    if (!j["trainable_only"].is_boolean())
      throw Error(fmt::format("{}: trainable_only: must be true or false (got {})", path, j["trainable_only"].dump()));
    *trainable_only = j["trainable_only"].get<bool>();
  }
  if (s.best_epoch > s.epoch + 1)
    throw Error(fmt::format("{}: best_epoch: {} is after the epoch in progress ({})", path, s.best_epoch, s.epoch + 1));
  return s;
}

torch::serialize::InputArchive archive_of(const std::string& bytes, const std::string& path) {
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(bytes.data(), bytes.size());
  } catch (const c10::Error& e) {
    throw Error(fmt::format("{}: cannot read checkpoint ({})", path, e.what_without_backtrace()));
  }
  return archive;
}

}  // namespace

// ---- Checkpoint ----

Checkpoint::Checkpoint(const std::string& dir_arg) {
  for (int attempt = 1;; ++attempt) {
    const std::string dir = existing_checkpoint(dir_arg);
    struct stat before {};
    bool opened = false;
    try {
      DirFd fd(dir);
      if (fd.fd < 0 || ::fstat(fd.fd, &before) != 0)
        throw Error(fmt::format("{}: cannot open ({})", dir, std::strerror(errno)));
      opened = true;
      files_ = read_files_once(fd.fd, dir);
      const std::string state_path = join(dir, kState);
      state_ = parse_state(parse_json(files_.at(kState), state_path), state_path, &trainable_only_);
      dir_ = dir;
      return;
    } catch (const Error&) {
      // A run swapping a new checkpoint in (or dropping its backup) while we read: read again.
      const bool moved = !opened || replaced(dir, before) || resolved_now(dir_arg) != dir;
      if (!moved || attempt >= kReadAttempts) throw;
      files_.clear();
      std::this_thread::sleep_for(std::chrono::milliseconds(5 * attempt));
    }
  }
}

namespace {
// A gate bias in the checkpoint beside a gate weight of a model without one: the run used
// tunekit's earlier form of the gate (issue 19 made the papers' bias-free gates the default).
// Refused rather than dropped, naming the key that loads it.
template <class Excluded>
void refuse_gate_biases(torch::nn::Module& model, const std::vector<std::string>& keys, const Excluded& excluded,
                        const std::string& file) {
  auto params = model.named_parameters();
  for (const auto& k : keys) {
    const std::string tail = "gate.bias";
    if (k.size() < tail.size() || k.compare(k.size() - tail.size(), tail.size(), tail) != 0 || excluded(k)) continue;
    if (params.find(k) || !params.find(k.substr(0, k.size() - 4) + "weight")) continue;
    throw Error(fmt::format("{}: tensor '{}' is a gate bias this model does not have: the run used tunekit's "
                            "earlier gate (set model.attention.gate_bias: true, or adapter.gate.proj_dim: 0 for a "
                            "cosine prompt-expert gate)",
                            file, k));
  }
}
}  // namespace

int64_t Checkpoint::load_weights(torch::nn::Module& model, const std::vector<std::string>& exclude, bool strict,
                                 bool allow_missing_adapters) const {
  const std::string file = join(dir_, "model.pt");
  if (!has("model.pt")) throw Error(fmt::format("{}: missing", file));
  torch::serialize::InputArchive archive = archive_of(files_.at("model.pt"), file);
  auto keys = archive.keys();
  std::set<std::string> available(keys.begin(), keys.end());
  auto excluded = [&](const std::string& name) {
    return std::any_of(exclude.begin(), exclude.end(), [&](const std::string& p) { return glob_match(p, name); });
  };
  int64_t loaded = 0;
  torch::NoGradGuard no_grad;
  auto load_one = [&](const std::string& name, torch::Tensor& target, bool is_buffer) {
    if (excluded(name)) return;
    if (!available.count(name)) {
      if (trainable_only_ && !is_buffer && !target.requires_grad()) return;  // the base, loaded from elsewhere
      bool adapter_param = name.find(".adapter.") != std::string::npos || name.rfind("hypernets.", 0) == 0;
      if (strict && !(allow_missing_adapters && adapter_param))
        throw Error(fmt::format("{}: checkpoint has no tensor '{}' (exclude it with init_from.exclude, or "
                                "check that the model section matches the run it came from)",
                                file, name));
      return;
    }
    torch::Tensor value;
    try {
      archive.read(name, value, is_buffer);
    } catch (const c10::Error& e) {
      throw Error(fmt::format("{}: tensor '{}' unreadable ({})", file, name, e.what_without_backtrace()));
    }
    if (value.sizes() != target.sizes())
      throw Error(fmt::format("{}: tensor '{}' has shape {} in the checkpoint but {} in the model{}", file, name,
                              c10::str(value.sizes()), c10::str(target.sizes()),
                              name.rfind("head.", 0) == 0 ? " (a new head? add \"head.*\" to init_from.exclude)" : ""));
    if (value.scalar_type() != target.scalar_type())
      throw Error(fmt::format("{}: tensor '{}' has dtype {} in the checkpoint but {} in the model", file, name,
                              c10::toString(value.scalar_type()), c10::toString(target.scalar_type())));
    if (value.is_floating_point() && !torch::isfinite(value).all().item<bool>())
      throw Error(fmt::format("{}: tensor '{}' holds NaN or Inf (the checkpoint is unusable)", file, name));
    target.copy_(value);
    ++loaded;
  };
  for (auto& p : model.named_parameters()) load_one(p.key(), p.value(), false);
  for (auto& b : model.named_buffers()) load_one(b.key(), b.value(), true);
  if (strict) refuse_gate_biases(model, keys, excluded, file);
  return loaded;
}

void Checkpoint::load_optimizer(torch::optim::Optimizer& optimizer) const {
  const std::string file = join(dir_, "optimizer.pt");
  if (!has("optimizer.pt")) throw Error(fmt::format("{}: missing (this checkpoint cannot resume training)", file));
  torch::serialize::InputArchive archive = archive_of(files_.at("optimizer.pt"), file);
  try {
    optimizer.load(archive);
  } catch (const c10::Error& e) {
    throw Error(fmt::format("{}: unreadable optimizer state ({})", file, e.what_without_backtrace()));
  }
}

void Checkpoint::load_rng() const {
  if (!has("rng.pt")) return;
  const std::string file = join(dir_, "rng.pt");
  torch::serialize::InputArchive archive = archive_of(files_.at("rng.pt"), file);
  try {
    torch::Tensor state;
    archive.read("cpu", state, true);
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    gen.set_state(state);
  } catch (const c10::Error& e) {
    throw Error(fmt::format("{}: unreadable RNG state ({})", file, e.what_without_backtrace()));
  }
}

namespace {
std::string rank_key(int rank) { return fmt::format("rank{}", rank); }
}  // namespace

std::optional<torch::Tensor> Checkpoint::rank_rng_state(int rank) const {
  if (!has(kRankRngFile)) return std::nullopt;
  const std::string file = join(dir_, kRankRngFile);
  torch::serialize::InputArchive archive = archive_of(files_.at(kRankRngFile), file);
  try {
    torch::Tensor state;
    if (!archive.try_read(rank_key(rank), state, true)) return std::nullopt;
    return state;
  } catch (const c10::Error& e) {
    throw Error(fmt::format("{}: unreadable RNG state of rank {} ({})", file, rank, e.what_without_backtrace()));
  }
}

bool Checkpoint::has_rng(int rank) const { return rank == 0 ? has("rng.pt") : rank_rng_state(rank).has_value(); }

bool Checkpoint::load_rng(int rank) const {
  if (rank == 0) {
    if (!has("rng.pt")) return false;
    load_rng();
    return true;
  }
  const auto state = rank_rng_state(rank);
  if (!state) return false;
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  try {
    gen.set_state(*state);
  } catch (const c10::Error& e) {
    throw Error(fmt::format("{}: unusable RNG state of rank {} ({})", join(dir_, kRankRngFile), rank,
                            e.what_without_backtrace()));
  }
  return true;
}

// ---- the free functions ----

void save_rank_rngs(const std::string& dir, const std::vector<torch::Tensor>& states) {
  torch::serialize::OutputArchive archive;
  for (size_t r = 1; r < states.size(); ++r) archive.write(rank_key(int(r)), states[r], true);
  save_archive(archive, join(dir, kRankRngFile));
}

void save_checkpoint(const std::string& dir, const torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                     const TrainState& s, const std::function<void(const std::string&)>& write_extra,
                     bool trainable_only) {
  const std::string tmp = temp_of(dir);
  std::error_code ec;
  try {
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp, ec);
    if (ec) throw Error(fmt::format("{}: cannot create directory ({})", tmp, ec.message()));
    write_checkpoint_files(tmp, model, optimizer, s, write_extra, trainable_only);
    swap_in(tmp, dir);
  } catch (const std::exception& e) {
    fs::remove_all(tmp, ec);
    throw Error(saving_error(e.what(), tmp, dir));
  }
}

bool checkpoint_exists(const std::string& dir) {
  return fs::exists(fs::path(dir) / kState) || fs::exists(fs::path(backup_of(dir)) / kState);
}

std::string existing_checkpoint(const std::string& dir) {
  if (fs::exists(fs::path(dir) / kState)) return dir;
  if (fs::exists(fs::path(backup_of(dir)) / kState)) return backup_of(dir);
  throw Error(fmt::format("{}: no checkpoint here", dir));
}

TrainState load_train_state(const std::string& dir) { return Checkpoint(dir).state(); }

void check_train_state(const TrainState& s, int64_t epochs, int64_t batches_per_epoch, int64_t total_steps,
                       const std::string& dir) {
  const std::string path = join(dir, kState);
  if (s.epoch > epochs)
    throw Error(fmt::format("{}: epoch: {} is past the recipe's train.epochs ({})", path, s.epoch, epochs));
  if (s.best_epoch > epochs)
    throw Error(fmt::format("{}: best_epoch: {} is past the recipe's train.epochs ({})", path, s.best_epoch, epochs));
  if (s.batch_in_epoch > batches_per_epoch)
    throw Error(fmt::format("{}: batch_in_epoch: {} is past the {} batches of an epoch (another batch size or data "
                            "set than the run's?)",
                            path, s.batch_in_epoch, batches_per_epoch));
  if (s.step > total_steps)
    throw Error(fmt::format("{}: step: {} is past the run's {} steps", path, s.step, total_steps));
  if (s.window_n > s.step)
    throw Error(fmt::format("{}: window_n: {} losses since the last log line, more than the {} steps taken", path,
                            s.window_n, s.step));
  if (s.best_epoch >= 0 && !std::isfinite(s.best_metric))
    throw Error(fmt::format("{}: best_metric: not a finite number", path));
}

int64_t load_weights(const std::string& dir, torch::nn::Module& model, const std::vector<std::string>& exclude,
                     bool strict, bool allow_missing_adapters) {
  return Checkpoint(dir).load_weights(model, exclude, strict, allow_missing_adapters);
}

void load_optimizer(const std::string& dir, torch::optim::Optimizer& optimizer) {
  Checkpoint(dir).load_optimizer(optimizer);
}

void load_rng(const std::string& dir) { Checkpoint(dir).load_rng(); }

}  // namespace tunekit::io
