#include "adapters/attach.h"

#include <fmt/format.h>

#include <algorithm>
#include <regex>
#include <set>

#include "models/linear.h"
#include "util/error.h"
#include "util/text.h"

namespace tunekit::adapters {

namespace {
const std::string kRegexPrefix = "re:";

bool is_regex(const std::string& pattern) { return pattern.rfind(kRegexPrefix, 0) == 0; }
bool is_glob(const std::string& pattern) { return pattern.find_first_of("*?") != std::string::npos; }
bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// What a pattern that matched nothing is compared with: the names, and for a plain name also
// their last segments (as many as the pattern has), so "q_prj" finds "q_proj".
std::vector<std::string> suggestions(const std::string& pattern, const std::vector<std::string>& names) {
  std::vector<std::string> out = names;
  if (is_glob(pattern)) return out;
  const auto segments = std::count(pattern.begin(), pattern.end(), '.') + 1;
  std::set<std::string> seen(names.begin(), names.end());
  for (const auto& name : names) {
    size_t cut = name.size();
    for (int64_t s = 0; s < segments && cut != std::string::npos && cut > 0; ++s) cut = name.rfind('.', cut - 1);
    if (cut == std::string::npos || cut == 0) continue;
    std::string tail = name.substr(cut + 1);
    if (seen.insert(tail).second) out.push_back(tail);
  }
  return out;
}

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
  for (const auto& name : match_modules_to_save(model, o.modules_to_save())) {
    set_trainable(*modules[name], true);
    report.saved.push_back(name);
  }
}
}  // namespace

std::vector<size_t> find_targets(const std::string& pattern, const std::vector<std::string>& names) {
  std::vector<size_t> hits;
  if (is_regex(pattern)) {
    std::regex re;
    try {
      re = std::regex(pattern.substr(kRegexPrefix.size()), std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      throw Error(fmt::format("'{}' is not a valid regular expression ({})", pattern, e.what()));
    }
    for (size_t i = 0; i < names.size(); ++i)
      if (std::regex_match(names[i], re)) hits.push_back(i);
    return hits;
  }
  for (size_t i = 0; i < names.size(); ++i)
    if (glob_match(pattern, names[i])) hits.push_back(i);
  if (!hits.empty() || is_glob(pattern) || pattern.empty()) return hits;
  // PEFT's suffix rule, only when the plain name is no module's own name, so a name that exists
  // keeps meaning that one module (tunekit's "head" never also selects a "blocks.0.mlp.head").
  const std::string tail = "." + pattern;
  for (size_t i = 0; i < names.size(); ++i)
    if (ends_with(names[i], tail)) hits.push_back(i);
  return hits;
}

std::vector<size_t> match_targets(const std::string& pattern, const std::vector<std::string>& names,
                                  const std::string& label, const std::string& what, const std::string& hint) {
  std::vector<size_t> hits;
  try {
    hits = find_targets(pattern, names);
  } catch (const Error& e) {
    throw Error(fmt::format("{} {}", label, e.what()));
  }
  if (hits.empty())
    throw Error(fmt::format("{} '{}' matches no {}{}{}", label, pattern, what,
                            is_regex(pattern) ? "" : did_you_mean(pattern, suggestions(pattern, names)), hint));
  return hits;
}

std::vector<std::string> match_modules_to_save(torch::nn::Module& model, const std::vector<std::string>& patterns) {
  std::vector<std::string> names, out;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) names.push_back(item.key());
  for (const auto& pattern : patterns)
    for (size_t i : match_targets(pattern, names, "adapter.modules_to_save:", "module")) out.push_back(names[i]);
  return out;
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
