#include "src/io/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "util/error.h"
#include "util/file.h"
#include "util/text.h"

namespace fs = std::filesystem;

namespace tunekit::io {

namespace {
std::string backup_of(const std::string& dir) {
  fs::path p(dir);
  return (p.parent_path() / ("." + p.filename().string() + ".old")).string();
}
std::string temp_of(const std::string& dir) {
  fs::path p(dir);
  return (p.parent_path() / ("." + p.filename().string() + ".tmp")).string();
}
}  // namespace

void save_checkpoint(const std::string& dir, const torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                     const TrainState& s, const std::function<void(const std::string&)>& write_extra,
                     bool trainable_only) {
  const std::string tmp = temp_of(dir), old = backup_of(dir);
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  {
    torch::serialize::OutputArchive archive;
    for (const auto& p : model.named_parameters())
      if (!trainable_only || p.value().requires_grad()) archive.write(p.key(), p.value().detach(), false);
    for (const auto& b : model.named_buffers()) archive.write(b.key(), b.value(), true);
    archive.save_to((fs::path(tmp) / "model.pt").string());
  }
  if (optimizer) {
    torch::serialize::OutputArchive archive;
    optimizer->save(archive);
    archive.save_to((fs::path(tmp) / "optimizer.pt").string());
    torch::serialize::OutputArchive rng;
    rng.write("cpu", at::detail::getDefaultCPUGenerator().get_state(), true);
    rng.save_to((fs::path(tmp) / "rng.pt").string());
  }
  nlohmann::json j{{"epoch", s.epoch},           {"batch_in_epoch", s.batch_in_epoch},
                   {"step", s.step},             {"samples", s.samples},
                   {"best_metric", s.best_metric}, {"best_epoch", s.best_epoch},
                   {"train_seconds", s.train_seconds}};
  if (trainable_only) j["trainable_only"] = true;
  if (write_extra) write_extra(tmp);
  std::ofstream(fs::path(tmp) / "state.json") << j.dump(2) << "\n";
  // Swap in: dir -> backup, tmp -> dir, drop backup. A crash in between leaves the backup,
  // which existing_checkpoint() falls back to.
  fs::remove_all(old);
  if (fs::exists(dir)) fs::rename(dir, old);
  fs::rename(tmp, dir);
  fs::remove_all(old);
}

bool checkpoint_exists(const std::string& dir) {
  return fs::exists(fs::path(dir) / "state.json") || fs::exists(fs::path(backup_of(dir)) / "state.json");
}

std::string existing_checkpoint(const std::string& dir) {
  if (fs::exists(fs::path(dir) / "state.json")) return dir;
  if (fs::exists(fs::path(backup_of(dir)) / "state.json")) return backup_of(dir);
  throw Error(fmt::format("{}: no checkpoint here", dir));
}

TrainState load_train_state(const std::string& dir_) {
  std::string dir = existing_checkpoint(dir_);
  std::ifstream in(fs::path(dir) / "state.json");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}/state.json: unreadable ({})", dir, e.what()));
  }
  if (!j.is_object()) throw Error(fmt::format("{}/state.json: not a JSON object", dir));
  // Each field, when present, must be a number of its kind (an integer that fits int64_t).
  auto integer = [&](const char* key, int64_t fallback) {
    if (!j.contains(key)) return fallback;
    const auto& v = j[key];
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)))
      throw Error(fmt::format("{}/state.json: {} is {}, not an integer", dir, key, v.dump()));
    return v.get<int64_t>();
  };
  auto number = [&](const char* key, double fallback) {
    if (!j.contains(key)) return fallback;
    if (!j[key].is_number())
      throw Error(fmt::format("{}/state.json: {} is {}, not a number", dir, key, j[key].dump()));
    return j[key].get<double>();
  };
  TrainState s;
  s.epoch = integer("epoch", 0);
  s.batch_in_epoch = integer("batch_in_epoch", 0);
  s.step = integer("step", 0);
  s.samples = integer("samples", 0);
  s.best_metric = number("best_metric", -1.0);
  s.best_epoch = integer("best_epoch", -1);
  s.train_seconds = number("train_seconds", 0.0);
  return s;
}

namespace {
// Whether the checkpoint in `dir` left its frozen parameters out (save_checkpoint's trainable_only).
bool saved_trainable_only(const std::string& dir) {
  std::ifstream in(fs::path(dir) / "state.json");
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  return j.is_object() && j.contains("trainable_only") && j["trainable_only"].is_boolean() &&
         j["trainable_only"].get<bool>();
}
}  // namespace

int64_t load_weights(const std::string& dir_, torch::nn::Module& model, const std::vector<std::string>& exclude,
                     bool strict, bool allow_missing_adapters) {
  std::string dir = existing_checkpoint(dir_);
  std::string file = (fs::path(dir) / "model.pt").string();
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(file);
  } catch (const c10::Error& e) {
    throw Error(fmt::format("{}: cannot read checkpoint ({})", file, e.what_without_backtrace()));
  }
  auto keys = archive.keys();
  std::set<std::string> available(keys.begin(), keys.end());
  const bool trainable_only = saved_trainable_only(dir);
  auto excluded = [&](const std::string& name) {
    return std::any_of(exclude.begin(), exclude.end(), [&](const std::string& p) { return glob_match(p, name); });
  };
  int64_t loaded = 0;
  torch::NoGradGuard no_grad;
  auto load_one = [&](const std::string& name, torch::Tensor& target, bool is_buffer) {
    if (excluded(name)) return;
    if (!available.count(name)) {
      if (trainable_only && !is_buffer && !target.requires_grad()) return;  // the base, loaded from elsewhere
      bool adapter_param = name.find(".adapter.") != std::string::npos || name.rfind("hypernets.", 0) == 0;
      if (strict && !(allow_missing_adapters && adapter_param))
        throw Error(fmt::format("{}: checkpoint has no tensor '{}' (exclude it with init_from.exclude, or "
                                "check that the model section matches the run it came from)",
                                file, name));
      return;
    }
    torch::Tensor value;
    archive.read(name, value, is_buffer);
    if (value.sizes() != target.sizes())
      throw Error(fmt::format("{}: tensor '{}' has shape {} in the checkpoint but {} in the model{}", file, name,
                              c10::str(value.sizes()), c10::str(target.sizes()),
                              name.rfind("head.", 0) == 0 ? " (a new head? add \"head.*\" to init_from.exclude)" : ""));
    target.copy_(value);
    ++loaded;
  };
  for (auto& p : model.named_parameters()) load_one(p.key(), p.value(), false);
  for (auto& b : model.named_buffers()) load_one(b.key(), b.value(), true);
  return loaded;
}

void load_optimizer(const std::string& dir_, torch::optim::Optimizer& optimizer) {
  std::string file = (fs::path(existing_checkpoint(dir_)) / "optimizer.pt").string();
  if (!fs::exists(file)) throw Error(fmt::format("{}: missing (this checkpoint cannot resume training)", file));
  torch::serialize::InputArchive archive;
  archive.load_from(file);
  optimizer.load(archive);
}

void load_rng(const std::string& dir_) {
  std::string file = (fs::path(existing_checkpoint(dir_)) / "rng.pt").string();
  if (!fs::exists(file)) return;
  torch::serialize::InputArchive archive;
  archive.load_from(file);
  torch::Tensor state;
  archive.read("cpu", state, true);
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  gen.set_state(state);
}

}  // namespace tunekit::io
