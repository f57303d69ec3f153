// The recipe's run sections: `threads:`, `optimizer:`, `schedule:`, `train:`, `output:` and `sweep:`.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <limits>
#include <set>

#include "src/recipe/recipe_sections.h"

namespace tunekit::recipe {
namespace {

// One value of a variant as override text: scalars as they are, null (removes the key) as "null",
// lists as YAML flow text.
std::string variant_value(Section& w, const YAML::Node& val, const std::string& at) {
  if (val.IsScalar()) {
    const std::string problem = yaml::string_problem(val.Scalar());
    if (!problem.empty()) w.fail_at(val, at, problem);
    return val.Scalar();
  }
  if (val.IsNull()) return "null";  // removes the key (e.g. a section the variant's kind does not take)
  if (!val.IsSequence()) w.type_error(val, at, "a value or a list");
  YAML::Emitter e;
  e.SetStringFormat(YAML::DoubleQuoted);  // keeps globs like "*.q" from reading as aliases
  e << YAML::Flow << val;
  return e.c_str();
}

// sweep.variants: a list of mappings of key paths to values, each a set of overrides. `name`,
// `series` and `budget` are labels, not overrides.
std::vector<SweepVariant> parse_variants(Section& w) {
  std::vector<SweepVariant> out;
  YAML::Node n = w.take("variants");
  if (!w.has("variants")) return out;
  const std::string key = w.child("variants");
  if (!n.IsSequence()) w.type_error(n, key, "a list of mappings");
  std::set<std::string> names;
  for (size_t i = 0; i < n.size(); ++i) {
    const std::string at = fmt::format("{}[{}]", key, i);
    if (!n[i].IsMap()) w.type_error(n[i], at, "a mapping of key paths to values");
    SweepVariant v;
    std::vector<std::string> parts;
    for (auto it = n[i].begin(); it != n[i].end(); ++it) {
      std::string k = it->first.Scalar();  // yaml::load checked that keys are plain scalars
      std::string text = variant_value(w, it->second, at + "." + k);
      if (k == "name") {
        v.name = text;
      } else if (k == "series") {
        v.series = text;
      } else if (k == "budget") {
        v.budget = text;
      } else {
        v.overrides.emplace_back(k, text);
        parts.push_back(k.substr(k.rfind('.') + 1) + "=" + text);
      }
    }
    if (v.name.empty()) v.name = join(parts, " ");
    if (v.series.empty()) v.series = v.name;
    if (!names.insert(v.name).second)
      throw Error(fmt::format("{}: {}: variant name '{}' is used twice", w.origin().where(n[i], at), at, v.name));
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace

std::string run_name_problem(const std::string& name) {
  const char* allowed = "letters, digits and . _ + - (not starting with . or -), at most 255 characters";
  bool ok = !name.empty() && name.size() <= 255 && name.front() != '.' && name.front() != '-';
  for (char ch : name)
    ok = ok && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '_' || ch == '+' || ch == '-');
  return ok ? "" : fmt::format("'{}' is not a valid run name: use {}", yaml::printable(name), allowed);
}

ThreadPolicy parse_threads(Section& top) {
  ThreadPolicy t;
  const std::string note = fmt::format(" (0 = all cores; {} is tunekit's cap)", kMaxThreads);
  if (top.has("threads") && top.take("threads").IsScalar()) {
    top.read("threads", t.blas);
    top.check_range("threads", t.blas, 0, kMaxThreads, note);
  } else {
    Section s = top.section("threads");
    s.read("torch", t.torch);
    s.read("blas", t.blas);
    s.check_range("torch", t.torch, 0, kMaxThreads, note);
    s.check_range("blas", t.blas, 0, kMaxThreads, note);
    s.finish();
  }
  return t;
}

DeviceConfig parse_device(Section& top) {
  DeviceConfig d;
  const YAML::Node n = top.take("device");
  if (!top.has("device")) return d;
  if (!n.IsScalar()) top.type_error(n, "device", "auto, cpu, cuda or cuda:N");
  const std::string v = n.Scalar();
  d.where = top.origin().where(n, "device");
  const size_t colon = v.find(':');
  const std::string name = v.substr(0, colon);
  const auto kind = enum_from_name<DeviceKind>(name);
  if (!kind) {
    const auto names = enum_names<DeviceKind>();
    top.fail("device", fmt::format("'{}' is not one of: auto, cpu, cuda, cuda:N{}", yaml::printable(v),
                                   did_you_mean(name, names)));
  }
  d.kind = *kind;
  if (colon == std::string::npos) return d;
  if (d.kind != DeviceKind::Cuda)
    top.fail("device", fmt::format("'{}': only cuda takes a device number (cuda:N)", yaml::printable(v)));
  const std::string index = v.substr(colon + 1);
  const bool digits = !index.empty() && index.size() <= 4 &&
                      std::all_of(index.begin(), index.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!digits)
    top.fail("device", fmt::format("'{}': cuda:N needs a device number N in 0..9999", yaml::printable(v)));
  d.index = std::stoi(index);
  return d;
}

OptimizerConfig parse_optimizer(Section o) {
  OptimizerConfig c;
  c.name = o.choice("name", c.name);
  o.read("lr", c.lr);
  o.read("weight_decay", c.weight_decay);
  o.read("betas", c.betas);
  o.read("eps", c.eps);
  o.read("momentum", c.momentum);
  o.read("fused", c.fused);
  o.check_real("lr", c.lr, 0, true, 100, false);
  o.check_real("weight_decay", c.weight_decay, 0, false, 100, false);
  for (size_t i = 0; i < c.betas.size(); ++i)
    if (!(c.betas[i] >= 0 && c.betas[i] < 1))
      o.fail("betas", fmt::format("betas[{}] must be in [0, 1), got {}", i, c.betas[i]));
  o.check_real("eps", c.eps, 0, true, 1, false);
  o.check_real("momentum", c.momentum, 0, false, 1, true);
  if (o.has("fused") && c.name != OptimizerKind::AdamW)
    o.fail("fused", fmt::format("applies to optimizer.name adamw only, not {}", to_string(c.name)));
  o.finish();
  return c;
}

ScheduleConfig parse_schedule(Section s) {
  ScheduleConfig c;
  c.kind = s.choice("kind", c.kind);
  s.read("warmup_steps", c.warmup_steps);
  s.read("min_lr_ratio", c.min_lr_ratio);
  if (c.warmup_steps < 0) s.fail("warmup_steps", fmt::format("must be >= 0, got {}", c.warmup_steps));
  s.check_real("min_lr_ratio", c.min_lr_ratio, 0, false, 1, false);
  s.finish();
  return c;
}

TrainConfig parse_train(Section t) {
  TrainConfig c;
  t.read("epochs", c.epochs);
  t.read("max_steps", c.max_steps);
  t.read("grad_accum", c.grad_accum);
  t.read("clip_grad_norm", c.clip_grad_norm);
  t.read("log_every", c.log_every);
  t.read("checkpoint_every", c.checkpoint_every);
  c.compute_dtype = t.choice("compute_dtype", c.compute_dtype);
  t.read("activation_checkpointing", c.activation_checkpointing);
  t.read("val_batches", c.val_batches);
  t.read("loss_chunk", c.loss_chunk);
  constexpr int64_t kMaxCount = std::numeric_limits<int64_t>::max();
  t.check_range("epochs", c.epochs, 1, 1000000);
  t.check_range("max_steps", c.max_steps, 0, kMaxCount, " (0 = no limit)");
  t.check_range("grad_accum", c.grad_accum, 1, 65536);
  t.check_real("clip_grad_norm", c.clip_grad_norm, 0, false, HUGE_VAL, false);  // 0 = off
  t.check_range("log_every", c.log_every, 1, kMaxCount);
  t.check_range("checkpoint_every", c.checkpoint_every, 0, kMaxCount, " (0 = at the end of each epoch)");
  t.check_range("val_batches", c.val_batches, 0, kMaxCount, " (0 = the whole validation split)");
  t.check_range("loss_chunk", c.loss_chunk, 0, 1 << 20, " (0 = plain logits)");
  t.finish();
  return c;
}

OutputConfig parse_output(Section o, const std::string& source) {
  OutputConfig c;
  o.read("dir", c.dir);
  if (c.dir.empty()) o.fail("dir", "must name a directory");
  o.read("name", c.name);
  const bool named = o.has("name");
  if (!named) c.name = std::filesystem::path(source).stem().string();
  const std::string problem = run_name_problem(c.name);
  if (!problem.empty() && named) o.fail("name", problem);
  if (!problem.empty())
    o.fail("name", fmt::format("the recipe file's name '{}' cannot name the run ({}): set output.name",
                               yaml::printable(c.name), problem));
  o.finish();
  return c;
}

// A list of seeds: none negative, none twice.
void check_seeds(const Section& w, const std::string& key, const std::vector<int64_t>& seeds) {
  if (auto problem = seed_list_problem(seeds); !problem.empty()) w.fail(key, problem);
}

// sweep.tune: {key, values, seeds}; `node` is the section's (what a message about a key it
// lacks points at).
SweepTune parse_tune(const YAML::Node& node, Section t, const SweepConfig& c) {
  SweepTune tune;
  // A key given fails at its value; one left out (the default key, no values) at the section.
  const auto fail = [&](const std::string& key, const std::string& message) {
    if (t.has(key)) t.fail(key, message);
    t.fail_at(node, t.child(key), message);
  };
  t.read("key", tune.key);
  YAML::Node values = t.take("values");
  if (!t.has("values")) fail("values", "is required: the values to choose from (at least 4 on a log grid)");
  if (!values.IsSequence()) t.type_error(values, t.child("values"), "a list of values");
  for (size_t i = 0; i < values.size(); ++i) {
    const std::string at = fmt::format("{}[{}]", t.child("values"), i);
    if (!values[i].IsScalar()) t.type_error(values[i], at, "a value");
    if (std::find(tune.values.begin(), tune.values.end(), values[i].Scalar()) != tune.values.end())
      t.fail_at(values[i], at, fmt::format("'{}' is listed twice", values[i].Scalar()));
    tune.values.push_back(values[i].Scalar());
  }
  if (tune.values.size() < 2)
    t.fail("values", fmt::format("has {} value(s): tuning chooses among at least 2 (the protocol asks for 4 on a "
                                 "log grid, docs/experiments.md)",
                                 tune.values.size()));
  t.read("seeds", tune.seeds);
  check_seeds(t, "seeds", tune.seeds);
  if (tune.key.empty() || tune.key.find_first_of(" =") != std::string::npos)
    fail("key", fmt::format("'{}' is not a key path", tune.key));
  for (const auto& [key, values_] : c.grid)
    if (key == tune.key) fail("key", fmt::format("{} is also a sweep.grid key: tune it or grid it, not both", key));
  for (const auto& v : c.variants)
    for (const auto& [key, value] : v.overrides)
      if (key == tune.key)
        fail("key", fmt::format("variant '{}' sets {} itself ({}): a tuned key is chosen per variant", v.name, key, value));
  t.finish();
  return tune;
}

// sweep.compare: a list of {a, b, claim, margin}, a and b variant names.
std::vector<SweepClaim> parse_compare(Section& w, const SweepConfig& c) {
  std::vector<SweepClaim> out;
  YAML::Node n = w.take("compare");
  if (!w.has("compare")) return out;
  const std::string key = w.child("compare");
  if (!n.IsSequence()) w.type_error(n, key, "a list of {a, b, claim, margin} mappings");
  if (c.variants.empty()) w.fail("compare", "compares variants: give sweep.variants");
  for (size_t i = 0; i < n.size(); ++i) {
    const std::string at = fmt::format("{}[{}]", key, i);
    if (!n[i].IsMap()) w.type_error(n[i], at, "a mapping {a, b, claim, margin}");
    Section e(n[i], at, w.origin());
    SweepClaim claim;
    e.read("a", claim.a);
    e.read("b", claim.b);
    e.read("claim", claim.claim);
    e.read("margin", claim.margin);
    for (const char* side : {"a", "b"}) {
      const std::string& name = std::string(side) == "a" ? claim.a : claim.b;
      if (!e.has(side)) e.fail(side, "is required: a variant name");
      if (std::none_of(c.variants.begin(), c.variants.end(), [&](const SweepVariant& v) { return v.name == name; })) {
        std::vector<std::string> names;
        for (const auto& v : c.variants) names.push_back(v.name);
        e.fail(side, fmt::format("'{}' is not a variant (variants: {})", name, join(names, ", ")));
      }
    }
    if (claim.a == claim.b) e.fail("b", fmt::format("compares '{}' with itself", claim.a));
    if (!std::isfinite(claim.margin)) e.fail("margin", "must be a finite number (negative: A is not worse than B by more)");
    if (claim.claim.empty()) claim.claim = claim.a + " beats " + claim.b;
    e.finish();
    out.push_back(std::move(claim));
  }
  return out;
}

SweepConfig parse_sweep(Section w) {
  SweepConfig c;
  c.grid = w.string_lists("grid");
  c.variants = parse_variants(w);
  w.read("seeds", c.seeds);
  check_seeds(w, "seeds", c.seeds);
  c.plot_x = w.choice("plot_x", c.plot_x);
  if (w.has("tune")) {
    const YAML::Node node = w.take("tune");
    if (!node.IsMap()) w.type_error(node, w.child("tune"), "a mapping {key, values, seeds}");
    c.tune = parse_tune(node, w.section("tune"), c);
  }
  w.read("budget_tolerance", c.budget_tolerance);
  w.check_real("budget_tolerance", c.budget_tolerance, 0, false, 1, false);
  c.compare = parse_compare(w, c);
  w.finish();
  return c;
}

}  // namespace tunekit::recipe

namespace tunekit {

std::string seed_list_problem(const std::vector<int64_t>& seeds) {
  std::set<int64_t> seen;
  for (int64_t s : seeds) {
    if (s < 0) return fmt::format("seed {} is negative (seeds are 0..{})", s, std::numeric_limits<int64_t>::max());
    if (!seen.insert(s).second) return fmt::format("seed {} is listed twice", s);
  }
  return "";
}

}  // namespace tunekit
