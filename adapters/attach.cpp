#include "adapters/attach.h"

#include <fmt/format.h>

#include "adapters/lora.h"
#include "models/linear.h"
#include "src/util/error.h"
#include "src/util/text.h"

namespace tunekit::adapters {

namespace {
void set_trainable(torch::nn::Module& m, bool on) {
  for (auto& p : m.parameters()) p.set_requires_grad(on);
}

std::vector<std::string> module_names(torch::nn::Module& model) {
  std::vector<std::string> names;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) names.push_back(item.key());
  return names;
}

template <typename F>
void for_each_linear(torch::nn::Module& model, F&& f) {
  for (const auto& item : model.named_modules("", false))
    if (auto* lin = dynamic_cast<models::LinearImpl*>(item.value().get())) f(item.key(), *lin);
}
}  // namespace

std::vector<std::string> adaptable_modules(torch::nn::Module& model) {
  std::vector<std::string> names;
  for_each_linear(model, [&](const std::string& name, models::LinearImpl&) { names.push_back(name); });
  return names;
}

int64_t count_parameters(const torch::nn::Module& model, bool trainable_only) {
  int64_t n = 0;
  for (const auto& p : model.parameters())
    if (!trainable_only || p.requires_grad()) n += p.numel();
  return n;
}

AttachReport attach_adapters(torch::nn::Module& model, const AdapterConfig& cfg) {
  AttachReport report;
  if (cfg.kind != AdapterKind::None) set_trainable(model, false);

  if (cfg.kind == AdapterKind::Lora) {
    auto candidates = adaptable_modules(model);
    for (const auto& pattern : cfg.targets) {
      bool hit = false;
      for_each_linear(model, [&](const std::string& name, models::LinearImpl& lin) {
        if (!glob_match(pattern, name) || lin.adapter()) return;
        hit = true;
        auto lora = std::make_shared<LoraImpl>(LoraOptions(lin.options.in_features(), lin.options.out_features())
                                                   .r(cfg.r)
                                                   .alpha(cfg.alpha)
                                                   .dropout(cfg.dropout));
        lin.attach(lora);
        report.adapted.push_back(name);
      });
      if (!hit && std::none_of(candidates.begin(), candidates.end(),
                               [&](const std::string& n) { return glob_match(pattern, n); }))
        throw Error(fmt::format("adapter.targets: pattern '{}' matches no Linear layer{}; adaptable layers "
                                "look like {}",
                                pattern, did_you_mean(pattern, candidates),
                                candidates.empty() ? "(none)" : candidates.front()));
    }
  }

  if (cfg.kind != AdapterKind::None) {
    auto names = module_names(model);
    for (const auto& pattern : cfg.modules_to_save) {
      bool hit = false;
      for (const auto& item : model.named_modules("", false)) {
        if (!glob_match(pattern, item.key())) continue;
        hit = true;
        set_trainable(*item.value(), true);
        report.saved.push_back(item.key());
      }
      if (!hit)
        throw Error(fmt::format("adapter.modules_to_save: '{}' matches no module{}", pattern,
                                did_you_mean(pattern, names)));
    }
  }
  report.trainable = count_parameters(model, true);
  report.total = count_parameters(model, false);
  return report;
}

std::string AttachReport::summary() const {
  double pct = total ? 100.0 * trainable / total : 0.0;
  std::string s = fmt::format("trainable params: {} of {} ({:.2f}%)", with_commas(trainable), with_commas(total), pct);
  if (!adapted.empty()) s += fmt::format("; adapters on {} layers", adapted.size());
  if (!saved.empty()) s += fmt::format("; modules_to_save: {}", join(saved, ", "));
  return s;
}

void merge_adapters(torch::nn::Module& model) {
  for_each_linear(model, [](const std::string&, models::LinearImpl& lin) { lin.merge(); });
}

void unmerge_adapters(torch::nn::Module& model) {
  for_each_linear(model, [](const std::string&, models::LinearImpl& lin) { lin.unmerge(); });
}

}  // namespace tunekit::adapters
