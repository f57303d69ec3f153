#include "src/train/setup.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "models/linear.h"
#include "models/precision.h"
#include "src/from_recipe/adapters.h"
#include "src/from_recipe/data.h"
#include "src/from_recipe/model.h"
#include "src/io/adapter_file.h"
#include "src/io/checkpoint.h"
#include "util/error.h"

namespace fs = std::filesystem;

namespace tunekit {
namespace {

// A low-rank adapter's rank above a targeted layer's smaller side adds nothing; refused here,
// where the layers are known (the recipe parser already bounds it by model.dim, with line:col).
void check_rank_fits(torch::nn::Module& model, const Recipe& recipe, const adapters::AttachReport& report) {
  if (!recipe.adapter.low_rank()) return;
  const std::set<std::string> adapted(report.adapted.begin(), report.adapted.end());
  for (const auto& item : model.named_modules("", false)) {
    auto* lin = dynamic_cast<models::LinearImpl*>(item.value().get());
    if (!lin || !adapted.count(item.key())) continue;
    const int64_t in = lin->options.in_features(), out = lin->options.out_features(), side = std::min(in, out);
    if (recipe.adapter.r > side)
      throw Error(fmt::format("{}: adapter.r: {} is above {}, the smaller side of {} ({} -> {} features); use at most {}",
                              recipe.source, recipe.adapter.r, side, item.key(), in, out, side));
  }
}

// The models::Linear weights attach_adapters will leave frozen: it freezes the whole model, then
// unfreezes adapter.modules_to_save (matched as it matches them), so every Linear weight outside
// those modules.
std::vector<torch::Tensor> weights_to_freeze(torch::nn::Module& model, const AdapterConfig& adapter) {
  std::vector<std::string> kept = adapters::match_modules_to_save(model, adapter.modules_to_save);
  for (auto& k : kept) k += ".";
  std::vector<torch::Tensor> out;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    auto* lin = dynamic_cast<models::LinearImpl*>(item.value().get());
    if (!lin) continue;
    const std::string name = item.key() + ".";
    if (std::none_of(kept.begin(), kept.end(), [&](const std::string& k) { return name.rfind(k, 0) == 0; }))
      out.push_back(lin->weight);
  }
  return out;
}

}  // namespace

RunModel build_run_model(const Recipe& recipe, bool load_init, bool store_frozen) {
  RunModel r;
  const bool narrow = store_frozen && recipe.model.is_hf() && recipe.model.frozen_dtype != models::FrozenDtype::Fp32 &&
                      recipe.adapter.kind != adapters::AdapterKind::None;
  r.model = from_recipe::build_model(recipe.model,
                                     narrow ? [&](torch::nn::Module& m) { return weights_to_freeze(m, recipe.adapter); }
                                            : std::function<std::vector<torch::Tensor>(torch::nn::Module&)>());
  if (narrow) r.narrowed_at_load = models::frozen_bytes_saved(*r.model);
  if (recipe.model.is_hf())
    r.init_message = fmt::format("weights of {} (Hugging Face {}{})", recipe.model.from_hf, to_string(recipe.model.kind),
                                 recipe.model.exclude.empty()
                                     ? ""
                                     : fmt::format("; kept fresh: {}", fmt::join(recipe.model.exclude, ", ")));
  if (load_init && !recipe.init_from.run.empty()) {
    std::string dir = (fs::path(recipe.init_from.run) / "checkpoints" / to_string(recipe.init_from.checkpoint)).string();
    if (!io::checkpoint_exists(dir))
      throw Error(fmt::format("init_from.run: {}: no '{}' checkpoint (train that recipe first)", recipe.init_from.run,
                              to_string(recipe.init_from.checkpoint)));
    int64_t n = io::load_weights(dir, *r.model, recipe.init_from.exclude, /*strict=*/true, false);
    r.init_message = fmt::format("loaded {} tensors from {}", n, dir);
    if (!recipe.init_from.exclude.empty())
      r.init_message += fmt::format(" (kept fresh: {})", fmt::join(recipe.init_from.exclude, ", "));
  }
  r.report = adapters::attach_adapters(*r.model, from_recipe::attach_options(recipe.adapter));
  check_rank_fits(*r.model, recipe, r.report);
  if (r.narrowed_at_load > 0)  // what was stored narrow must have been frozen by the adapters
    for (const auto& item : r.model->named_modules("", false))
      if (auto* lin = dynamic_cast<models::LinearImpl*>(item.value().get());
          lin && models::narrow_weight(lin->weight) && lin->weight.requires_grad())
        throw Error(fmt::format("{}: model.frozen_dtype: {}'s weight was stored as {} for a frozen base, but it trains",
                                recipe.source, item.key(), to_string(recipe.model.frozen_dtype)));
  if (load_init && !recipe.adapter.init_from.empty()) {
    int64_t n = io::load_adapter(recipe.adapter.init_from, *r.model, recipe.adapter);
    r.init_message += fmt::format("{}adapter: loaded {} tensors from {}", r.init_message.empty() ? "" : "; ", n,
                                  io::resolve_adapter_dir(recipe.adapter.init_from));
  }
  return r;
}

LoadedRun load_run(const std::string& run_dir, const std::string& checkpoint) {
  std::string recipe_path = (fs::path(run_dir) / "recipe.yaml").string();
  if (!fs::exists(recipe_path))
    throw Error(fmt::format("{}: not a run directory (no recipe.yaml; run `tunekit train` first)", run_dir));
  LoadedRun out{load_recipe(recipe_path), {}, {}};
  out.run = build_run_model(out.recipe, /*load_init=*/false);
  std::string dir = (fs::path(run_dir) / "checkpoints" / checkpoint).string();
  if (!io::checkpoint_exists(dir))
    throw Error(fmt::format("{}: no '{}' checkpoint in this run", run_dir, checkpoint));
  out.checkpoint_dir = io::existing_checkpoint(dir);
  io::load_weights(out.checkpoint_dir, *out.run.model, {}, /*strict=*/true, false);
  return out;
}

data::ImageSplits load_data(const Recipe& recipe, const std::string& run_dir, const data::Tokenizer* tokenizer,
                            std::string* message) {
  if (recipe.data.is_chat()) {
    const std::string dir = run_dir.empty() ? recipe.run_dir() : run_dir;
    std::string said;
    auto splits = from_recipe::load_chat_data(recipe, tokenizer ? *tokenizer : from_recipe::run_tokenizer(recipe, dir), &said);
    if (message) *message += (message->empty() ? "" : "\n") + said;
    return splits;
  }
  if (recipe.data.is_text())
    return from_recipe::load_text_data(
        recipe, tokenizer ? *tokenizer : from_recipe::run_tokenizer(recipe, run_dir.empty() ? recipe.run_dir() : run_dir));
  return data::load_fashion_mnist(from_recipe::fashion_mnist_options(recipe), static_cast<uint64_t>(recipe.seed));
}

}  // namespace tunekit
