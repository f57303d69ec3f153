#include "adapters/attach.h"

#include <fmt/format.h>

#include <set>

#include "models/linear.h"
#include "util/error.h"
#include "util/text.h"

namespace tunekit::adapters {

namespace {
void set_trainable(torch::nn::Module& m, bool on) {
  for (auto& p : m.parameters()) p.set_requires_grad(on);
}

template <typename F>
void for_each_linear(torch::nn::Module& model, F&& f) {
  for (const auto& item : model.named_modules("", false))
    if (auto* lin = dynamic_cast<models::LinearImpl*>(item.value().get())) f(item.key(), *lin);
}

// Attaches the kind's adapter to every host a target pattern matches, pattern by pattern.
void attach_targets(torch::nn::Module& model, const AttachOptions& o, AttachReport& report) {
  Hosts found = kind_row(o.kind()).hosts(model, o);
  std::vector<std::string> names;
  for (const auto& h : found.hosts) names.push_back(h.name);
  std::set<size_t> done;
  for (const auto& pattern : o.targets())
    for (size_t i : match_targets(pattern, names, "adapter.targets: pattern", found.what, found.hint)) {
      if (!done.insert(i).second) continue;
      if (found.hosts[i].attach()) report.adapted.push_back(names[i]);
    }
  if (found.done) found.done();
}

void unfreeze_modules_to_save(torch::nn::Module& model, const AttachOptions& o, AttachReport& report) {
  auto modules = model.named_modules("", /*include_self=*/false);
  std::vector<std::string> names;
  for (const auto& item : modules) names.push_back(item.key());
  for (const auto& pattern : o.modules_to_save())
    for (size_t i : match_targets(pattern, names, "adapter.modules_to_save:", "module")) {
      set_trainable(*modules[i].value(), true);
      report.saved.push_back(names[i]);
    }
}
}  // namespace

std::vector<size_t> match_targets(const std::string& pattern, const std::vector<std::string>& names,
                                  const std::string& label, const std::string& what, const std::string& hint) {
  std::vector<size_t> hits;
  for (size_t i = 0; i < names.size(); ++i)
    if (glob_match(pattern, names[i])) hits.push_back(i);
  if (hits.empty())
    throw Error(fmt::format("{} '{}' matches no {}{}{}", label, pattern, what, did_you_mean(pattern, names), hint));
  return hits;
}

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

AttachReport attach_adapters(torch::nn::Module& model, const AttachOptions& options) {
  AttachReport report;
  if (options.kind() != AdapterKind::None) {
    set_trainable(model, false);
    if (kind_row(options.kind()).hosts) attach_targets(model, options, report);
    unfreeze_modules_to_save(model, options, report);
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
