// The recipe's run sections: `threads:`, `optimizer:`, `schedule:`, `train:`, `output:` and `sweep:`.
#include <fmt/format.h>

#include <filesystem>
#include <set>

#include "src/recipe/recipe_sections.h"

namespace tunekit::recipe {
namespace {

// One value of a variant as override text: scalars as they are, null (removes the key) as "null",
// lists as YAML flow text.
std::string variant_value(Section& w, const YAML::Node& val, const std::string& at) {
  if (val.IsScalar()) return val.Scalar();
  if (val.IsNull()) return "null";  // removes the key (e.g. a section the variant's kind does not take)
  if (!val.IsSequence()) w.type_error(val, at, "a value or a list");
  YAML::Emitter e;
  e.SetStringFormat(YAML::DoubleQuoted);  // keeps globs like "*.q" from reading as aliases
  e << YAML::Flow << val;
  return e.c_str();
}

// sweep.variants: a list of mappings of key paths to values, each a set of overrides. `name` and
// `series` are labels, not overrides.
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
      std::string k = it->first.as<std::string>();
      std::string text = variant_value(w, it->second, at + "." + k);
      if (k == "name") {
        v.name = text;
      } else if (k == "series") {
        v.series = text;
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

ThreadPolicy parse_threads(Section& top) {
  ThreadPolicy t;
  if (top.has("threads") && top.take("threads").IsScalar()) {
    top.read("threads", t.blas);
  } else {
    Section s = top.section("threads");
    s.read("torch", t.torch);
    s.read("blas", t.blas);
    s.finish();
  }
  if (t.torch < 0 || t.blas < 0) top.fail("threads", "thread counts must be >= 0 (0 = all cores)");
  return t;
}

OptimizerConfig parse_optimizer(Section o) {
  OptimizerConfig c;
  c.name = o.choice("name", c.name);
  o.read("lr", c.lr);
  o.read("weight_decay", c.weight_decay);
  o.read("betas", c.betas);
  o.read("eps", c.eps);
  o.read("momentum", c.momentum);
  if (c.lr <= 0) o.fail("lr", "must be positive");
  if (c.weight_decay < 0) o.fail("weight_decay", "must be >= 0");
  o.finish();
  return c;
}

ScheduleConfig parse_schedule(Section s) {
  ScheduleConfig c;
  c.kind = s.choice("kind", c.kind);
  s.read("warmup_steps", c.warmup_steps);
  s.read("min_lr_ratio", c.min_lr_ratio);
  if (c.warmup_steps < 0) s.fail("warmup_steps", "must be >= 0");
  if (c.min_lr_ratio < 0 || c.min_lr_ratio > 1) s.fail("min_lr_ratio", "must be in [0, 1]");
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
  if (c.epochs <= 0) t.fail("epochs", "must be positive");
  if (c.max_steps < 0) t.fail("max_steps", "must be >= 0 (0 = no limit)");
  if (c.grad_accum <= 0) t.fail("grad_accum", "must be positive");
  if (c.clip_grad_norm < 0) t.fail("clip_grad_norm", "must be >= 0 (0 = off)");
  if (c.log_every <= 0) t.fail("log_every", "must be positive");
  if (c.checkpoint_every < 0) t.fail("checkpoint_every", "must be >= 0 (0 = at the end of each epoch)");
  t.finish();
  return c;
}

OutputConfig parse_output(Section o, const std::string& source) {
  OutputConfig c;
  o.read("dir", c.dir);
  o.read("name", c.name);
  if (c.name.empty()) c.name = std::filesystem::path(source).stem().string();
  if (c.name.empty() || c.name.find('/') != std::string::npos)
    o.fail("name", fmt::format("'{}' is not a valid run name", c.name));
  o.finish();
  return c;
}

SweepConfig parse_sweep(Section w) {
  SweepConfig c;
  c.grid = w.string_lists("grid");
  c.variants = parse_variants(w);
  w.read("seeds", c.seeds);
  c.plot_x = w.choice("plot_x", c.plot_x);
  w.finish();
  return c;
}

}  // namespace tunekit::recipe
