#include "src/sweep/sweep.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "src/eval/evaluator.h"
#include "src/train/objective.h"
#include "src/io/checkpoint.h"
#include "src/recipe/recipe.h"
#include "src/train/setup.h"
#include "src/sweep/stats.h"
#include "src/train/trainer.h"
#include "util/error.h"
#include "util/file.h"
#include "util/progress.h"
#include "util/stats.h"
#include "util/memory.h"
#include "util/text.h"

namespace fs = std::filesystem;

namespace tunekit {

std::vector<std::string> split_grid_values(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  int depth = 0;
  for (char c : text) {
    if (c == '[' || c == '{') ++depth;
    if (c == ']' || c == '}') --depth;
    if (c == ',' && depth == 0) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  for (auto& s : out) {
    s.erase(0, s.find_first_not_of(' '));
    s.erase(s.find_last_not_of(' ') + 1);
  }
  return out;
}

namespace {

struct Cell {
  std::vector<std::string> values;  // one per dimension (variant, grid keys)
  std::string series;               // the variant's plot series
  std::string tuned;                // sweep.tune: the tuned key's value ("" without tuning)
  bool tuning = false;              // a tuning cell: validation only, the test split is not read
  int64_t seed = 0;
  std::string name;
  Recipe recipe;
};

std::string sanitize(const std::string& s) {
  std::string out;
  for (char c : s) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_') ? c : '_';
  return out;
}

bool is_number(const std::string& s) {
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  return !s.empty() && *end == '\0';
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string find_gnuplot() {
  for (const char* dir : {"/usr/bin", "/usr/local/bin"}) {
    fs::path p = fs::path(dir) / "gnuplot";
    if (fs::exists(p)) return p.string();
  }
  return "";
}

struct Group {
  std::vector<std::string> values;
  std::string series, tuned;
  std::vector<double> acc;
  double trainable = 0, rate = 0, rss = 0;
  std::vector<double> gate;  // mean prompt-expert gate weight, when the cell has prompt experts
};

using Dims = std::vector<std::pair<std::string, std::vector<std::string>>>;  // key, its values

// The dimensions: the variants (when given) as a first "variant" key, then the grid: the recipe's
// sweep section, then --grid arguments (a key given again replaces it).
// `--grid variant=a,b` (a lane of some variants) is not a recipe key: select_variants takes it.
Dims sweep_dims(const Recipe& base, const SweepOptions& opt) {
  auto grid = base.sweep.grid;
  for (const auto& g : opt.grid) {
    auto eq = g.find('=');
    if (eq == std::string::npos || eq == 0) throw Error(fmt::format("--grid '{}': expected key.path=v1,v2,...", g));
    std::string key = g.substr(0, eq);
    if (key == "variant") continue;
    auto values = split_grid_values(g.substr(eq + 1));
    auto it = std::find_if(grid.begin(), grid.end(), [&](const auto& kv) { return kv.first == key; });
    if (it != grid.end()) it->second = values;
    else grid.emplace_back(key, values);
  }
  const auto& variants = base.sweep.variants;
  Dims dims = grid;
  if (!variants.empty()) {
    std::vector<std::string> names;
    for (const auto& v : variants) names.push_back(v.name);
    dims.insert(dims.begin(), {"variant", names});
  }
  return dims;
}

// `--grid variant=a,b,...`: only the named variants run (a lane, docs/experiments.md), in the
// recipe's order; their cells are named as in the whole sweep, and the claims comparing a variant
// left out are left out. Nothing to do without it.
void select_variants(Recipe& base, const SweepOptions& opt) {
  bool selected = false;
  for (const auto& g : opt.grid) {
    if (g.rfind("variant=", 0) != 0) continue;
    if (selected) throw Error(fmt::format("--grid '{}': variant= given twice; give one list", g));
    selected = true;
    if (base.sweep.variants.empty())
      throw Error(fmt::format("--grid '{}': {} has no sweep.variants to choose from", g, opt.recipe_path));
    const auto names = split_grid_values(g.substr(8));
    std::vector<SweepVariant> kept;
    for (const auto& v : base.sweep.variants)
      if (std::find(names.begin(), names.end(), v.name) != names.end()) kept.push_back(v);
    for (const auto& n : names)
      if (std::none_of(kept.begin(), kept.end(), [&](const SweepVariant& v) { return v.name == n; })) {
        std::vector<std::string> known;
        for (const auto& v : base.sweep.variants) known.push_back(v.name);
        throw Error(fmt::format("--grid '{}': no variant '{}' in {} (variants: {})", g, n, opt.recipe_path,
                                join(known, ", ")));
      }
    base.sweep.variants = kept;
    auto& claims = base.sweep.compare;
    claims.erase(std::remove_if(claims.begin(), claims.end(),
                                [&](const SweepClaim& c) {
                                  return std::find(names.begin(), names.end(), c.a) == names.end() ||
                                         std::find(names.begin(), names.end(), c.b) == names.end();
                                }),
                 claims.end());
  }
}

// One cell: the values at grid point `idx` (and the tuned key at `tuned`, unless empty) and one
// seed, its name and its parsed recipe.
Cell make_cell(const Recipe& base, const SweepOptions& opt, const Dims& dims, const std::vector<size_t>& idx,
               int64_t seed, const std::string& cells_dir, const std::string& tuned = "") {
  const auto& variants = base.sweep.variants;
  Cell c;
  c.seed = seed;
  c.tuned = tuned;
  std::vector<std::string> overrides = opt.overrides, parts;
  for (size_t k = 0; k < dims.size(); ++k) {
    c.values.push_back(dims[k].second[idx[k]]);
    if (!variants.empty() && k == 0) {
      c.series = variants[idx[0]].series;
      for (const auto& [key, value] : variants[idx[0]].overrides) overrides.push_back(key + "=" + value);
      parts.push_back(sanitize(c.values.back()));
    } else {
      overrides.push_back(dims[k].first + "=" + c.values.back());
      parts.push_back(sanitize(dims[k].first) + "-" + sanitize(c.values.back()));
    }
  }
  if (!tuned.empty()) {
    overrides.push_back(base.sweep.tune.key + "=" + tuned);
    parts.push_back(sanitize(base.sweep.tune.key) + "-" + sanitize(tuned));
  }
  parts.push_back(fmt::format("seed-{}", seed));
  c.name = join(parts, "__");
  overrides.push_back(fmt::format("seed={}", seed));
  overrides.push_back("output.dir=" + cells_dir);
  overrides.push_back("output.name=" + c.name);
  try {
    c.recipe = load_recipe(opt.recipe_path, overrides);
  } catch (const Error& e) {
    throw Error(fmt::format("sweep cell {}: {}", c.name, e.what()));
  }
  return c;
}

// Every grid point, the first dimension varying fastest.
std::vector<std::vector<size_t>> grid_points(const Dims& dims) {
  std::vector<std::vector<size_t>> points;
  std::vector<size_t> idx(dims.size(), 0);
  while (true) {
    points.push_back(idx);
    size_t k = 0;
    for (; k < dims.size(); ++k) {
      if (++idx[k] < dims[k].second.size()) break;
      idx[k] = 0;
    }
    if (k == dims.size()) break;
  }
  return points;
}

// The cells of every grid point at the tuned value `tuned[point]` ("" without tuning), seeds innermost.
std::vector<Cell> make_cells(const Recipe& base, const SweepOptions& opt, const Dims& dims,
                             const std::vector<std::vector<size_t>>& points, const std::vector<std::string>& tuned,
                             const std::vector<int64_t>& seeds, const std::string& cells_dir) {
  std::vector<Cell> cells;
  for (size_t p = 0; p < points.size(); ++p)
    for (int64_t seed : seeds) cells.push_back(make_cell(base, opt, dims, points[p], seed, cells_dir, tuned[p]));
  return cells;
}

// sweep.tune: the tuning cells (every grid point x every value x the tuning seeds); and, so that
// nothing fails after hours of tuning, every final cell any choice could make is parsed too.
std::vector<Cell> make_tuning_cells(const Recipe& base, const SweepOptions& opt, const Dims& dims,
                                    const std::vector<std::vector<size_t>>& points,
                                    const std::vector<int64_t>& tune_seeds, const std::vector<int64_t>& seeds,
                                    const std::string& cells_dir) {
  std::vector<Cell> cells;
  for (const auto& point : points)
    for (const auto& value : base.sweep.tune.values) {
      for (int64_t seed : tune_seeds) {
        cells.push_back(make_cell(base, opt, dims, point, seed, cells_dir, value));
        cells.back().tuning = true;
      }
      for (int64_t seed : seeds) make_cell(base, opt, dims, point, seed, cells_dir, value);
    }
  return cells;
}

// Variants sharing a budget label must train the same number of parameters (within
// sweep.budget_tolerance) at every setting of the other grid keys; checked on the models as
// built, before anything trains.
void check_budgets(const Recipe& base, const Dims& dims, const std::vector<std::vector<size_t>>& points,
                   const std::vector<Cell>& cells, size_t cells_per_point) {
  const auto& variants = base.sweep.variants;
  if (std::none_of(variants.begin(), variants.end(), [](const SweepVariant& v) { return !v.budget.empty(); })) return;
  // (budget, the other grid values) -> (variant name, trainable parameters)
  std::map<std::pair<std::string, std::vector<std::string>>, std::vector<std::pair<std::string, int64_t>>> groups;
  for (size_t p = 0; p < points.size(); ++p) {
    const SweepVariant& v = variants[points[p][0]];
    if (v.budget.empty()) continue;
    const Cell& c = cells[p * cells_per_point];
    std::vector<std::string> setting;
    for (size_t k = 1; k < dims.size(); ++k) setting.push_back(dims[k].first + "=" + c.values[k]);
    int64_t trainable = 0;
    try {
      trainable = build_run_model(c.recipe, /*load_init=*/false).report.trainable;
    } catch (const Error& e) {
      throw Error(fmt::format("sweep cell {}: {}", c.name, e.what()));
    }
    groups[{v.budget, setting}].emplace_back(v.name, trainable);
  }
  for (const auto& [key, members] : groups) {
    int64_t lo = members[0].second, hi = lo;
    for (const auto& m : members) lo = std::min(lo, m.second), hi = std::max(hi, m.second);
    const double spread = lo > 0 ? double(hi - lo) / double(lo) : (hi > 0 ? INFINITY : 0.0);
    if (spread <= base.sweep.budget_tolerance) continue;
    std::vector<std::string> listed;
    for (const auto& [name, n] : members) listed.push_back(fmt::format("{} {}", name, with_commas((long long)n)));
    throw Error(fmt::format("{}: sweep budget '{}'{}: the trainable parameters differ by {:.1f} %, more than "
                            "sweep.budget_tolerance ({:.1f} %): {}",
                            base.source, key.first, key.second.empty() ? "" : " (" + join(key.second, ", ") + ")",
                            100 * spread, 100 * base.sweep.budget_tolerance, join(listed, "; ")));
  }
}

// The sweep's metric, as result.json's test_metric and summary.md name it.
std::string metric_name(bool exact_match) {
  return exact_match ? "exact match of the generated answers" : "accuracy";
}

// Trains one cell (a finished run is not trained again) and writes result.json: with the test
// split's evaluation of its best checkpoint, except for a tuning cell, which reads validation only.
nlohmann::json run_cell(const Cell& c, const std::string& label, bool verbose) {
  const std::string run_dir = c.recipe.run_dir(), result_path = run_dir + "/result.json";
  auto t0 = std::chrono::steady_clock::now();
  std::fprintf(stderr, "%s: %s...\n", label.c_str(), c.tuning ? "training (tuning: validation only)" : "training");
  release_free_memory();  // cells run one after another in this process: the last one's heap goes back,
  reset_peak_rss();       // and each is measured from here
  TrainResult tr = train(c.recipe, {/*resume=*/true, /*quiet=*/!verbose, 0});
  const double rss = peak_rss_mib();
  const double val_score = tr.lm ? -tr.best_val_loss : tr.best_val_accuracy;
  nlohmann::json j{{"cell", c.name},
                   {"seed", c.seed},
                   {"values", c.values},
                   {"tuned", c.tuned},
                   {"phase", c.tuning ? "tune" : "test"},
                   {"best_val_accuracy", tr.best_val_accuracy},
                   {"best_val_loss", tr.best_val_loss},
                   {"val_score", val_score},
                   {"trainable_params", tr.trainable},
                   {"samples_per_second", tr.samples_per_second},
                   {"peak_rss_mib", rss},
                   {"series", c.series},
                   {"steps", tr.steps}};
  if (!c.tuning) {
    LoadedRun run = load_run(run_dir, "best");
    auto splits = load_data(run.recipe, run_dir);
    EvalResult ev = evaluate(*run.run.model, splits.test, run.recipe);
    // For chat / instruction data whose answers could be generated, the exact match of the
    // generated answers (what a run's best checkpoint is chosen by when validation measured it),
    // not the token accuracy, which is kept beside it.
    const bool exact = ev.response && ev.exact_match >= 0;
    j["test_accuracy"] = exact ? ev.exact_match : ev.accuracy;
    j["test_metric"] = metric_name(exact);
    if (exact) j["test_token_accuracy"] = ev.accuracy;
    j["test_loss"] = ev.loss;
    j["test_macro_f1"] = ev.macro_f1;
    j["mean_gate"] = ev.prompt_usage.empty() ? nlohmann::json(nullptr) : nlohmann::json(ev.mean_prompt_usage());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  j["seconds"] = seconds;
  write_file_atomic(result_path, j.dump(2) + "\n");  // written last: marks the cell finished
  if (c.tuning)
    std::fprintf(stderr, "%s: val score %.4f  (%s)\n", label.c_str(), val_score, format_duration(seconds).c_str());
  else
    std::fprintf(stderr, "%s: test acc %.4f  (%s)\n", label.c_str(), j["test_accuracy"].get<double>(),
                 format_duration(seconds).c_str());
  return j;
}

// Runs the cells not finished before; the results of all, in cell order. A cell tuning finished
// whose value was chosen is finished by reading its test split once (its training is not repeated).
std::vector<nlohmann::json> run_cells(const std::vector<Cell>& cells, bool verbose, SweepResult& res) {
  std::vector<nlohmann::json> results;
  for (size_t i = 0; i < cells.size(); ++i) {
    const auto& c = cells[i];
    const std::string result_path = c.recipe.run_dir() + "/result.json";
    std::string label = fmt::format("[{}/{}] {}", i + 1, cells.size(), c.name);
    bool from_tuning = false;  // a test cell whose tuning run (same value and seed) left a result without test figures
    if (fs::exists(result_path)) {
      nlohmann::json done;
      try {
        done = nlohmann::json::parse(read_file(result_path, int64_t(1) << 20));
      } catch (const nlohmann::json::exception& e) {
        throw Error(fmt::format("{}: unreadable ({}); remove it to run the cell again", result_path, e.what()));
      }
      // A chat / instruction cell tested before test_metric existed was scored by token accuracy:
      // its test split is read again, as the sweep now scores it.
      const bool stale = !c.tuning && done.contains("test_accuracy") && !done.contains("test_metric") &&
                         (c.recipe.data.dataset == DatasetKind::Chat || c.recipe.data.dataset == DatasetKind::Instruct);
      if (c.tuning || (done.contains("test_accuracy") && !stale)) {
        results.push_back(done);
        ++res.skipped;
        if (c.tuning)
          std::fprintf(stderr, "%s: done before, skipped (val score %.4f)\n", label.c_str(), done.value("val_score", 0.0));
        else
          std::fprintf(stderr, "%s: done before, skipped (test acc %.4f)\n", label.c_str(),
                       done.value("test_accuracy", 0.0));
        continue;
      }
      from_tuning = true;
    }
    results.push_back(run_cell(c, label, verbose));
    ++(from_tuning ? res.tested_from_tuning : res.ran);
  }
  return results;
}

// sweep.tune: each grid point's value with the best mean validation score over the tuning seeds
// (the first such value on a tie); tune.csv lists every value's mean.
std::vector<std::string> choose_tuned(const Recipe& base, const Dims& dims, size_t points,
                                      const std::vector<Cell>& cells, const std::vector<nlohmann::json>& results,
                                      const std::string& csv_path) {
  const auto& values = base.sweep.tune.values;
  const size_t per_value = cells.size() / (points * values.size());
  std::string csv;
  for (const auto& g : dims) csv += csv_field(g.first) + ",";
  csv += csv_field(base.sweep.tune.key) + ",seeds,mean_val_score,chosen\n";
  std::vector<std::string> chosen;
  for (size_t p = 0; p < points; ++p) {
    std::vector<double> means;
    for (size_t v = 0; v < values.size(); ++v) {
      std::vector<double> scores;
      for (size_t s = 0; s < per_value; ++s)
        scores.push_back(results[(p * values.size() + v) * per_value + s].value("val_score", std::nan("")));
      means.push_back(mean(scores));
    }
    size_t best = 0;
    for (size_t v = 1; v < means.size(); ++v)
      if (means[v] > means[best] || !std::isfinite(means[best])) best = v;
    chosen.push_back(values[best]);
    const Cell& first = cells[p * values.size() * per_value];
    if (values.size() > 2 && (best == 0 || best + 1 == values.size()))
      std::fprintf(stderr, "sweep: %s chose %s=%s, the %s value tried: the best may lie beyond the grid (widen sweep.tune.values)\n",
                   join(first.values, " ").c_str(), base.sweep.tune.key.c_str(), values[best].c_str(),
                   best == 0 ? "first" : "last");
    for (size_t v = 0; v < values.size(); ++v) {
      for (const auto& x : first.values) csv += csv_field(x) + ",";
      csv += fmt::format("{},{},{},{}\n", csv_field(values[v]), per_value, means[v], v == best ? "yes" : "");
    }
  }
  write_file_atomic(csv_path, csv);
  return chosen;
}

// sweep.csv: one row per cell (with the tuned key's chosen value after the grid's, when tuned).
std::string sweep_csv(const Dims& dims, const std::string& tuned_key, const std::vector<nlohmann::json>& results) {
  std::string csv = "cell";
  for (const auto& g : dims) csv += "," + csv_field(g.first);
  if (!tuned_key.empty()) csv += "," + csv_field(tuned_key);
  csv += ",seed,test_accuracy,test_loss,test_macro_f1,best_val_accuracy,trainable_params,samples_per_second,"
         "peak_rss_mib,steps,seconds,mean_gate\n";
  for (const auto& j : results) {
    csv += csv_field(j["cell"].get<std::string>());
    for (const auto& v : j["values"]) csv += "," + csv_field(v.get<std::string>());
    if (!tuned_key.empty()) csv += "," + csv_field(j.value("tuned", std::string()));
    csv += fmt::format(",{},{},{},{},{},{},{},{:.1f},{},{},{}\n", j["seed"].get<int64_t>(), j["test_accuracy"].get<double>(),
                       j["test_loss"].get<double>(), j["test_macro_f1"].get<double>(),
                       j["best_val_accuracy"].get<double>(), j["trainable_params"].get<int64_t>(),
                       j["samples_per_second"].get<double>(), j.value("peak_rss_mib", 0.0), j["steps"].get<int64_t>(),
                       j["seconds"].get<double>(),
                       j.contains("mean_gate") && j["mean_gate"].is_number()
                           ? fmt::format("{}", j["mean_gate"].get<double>())
                           : std::string());
  }
  return csv;
}

// The cells of each grid point (its seeds) together, in grid order.
std::vector<Group> group_by_grid_point(const std::vector<nlohmann::json>& results) {
  std::vector<Group> groups;
  std::map<std::vector<std::string>, size_t> where;
  for (const auto& j : results) {
    auto values = j["values"].get<std::vector<std::string>>();
    auto it = where.find(values);
    if (it == where.end()) {
      it = where.emplace(values, groups.size()).first;
      groups.push_back({values, j.value("series", std::string()), j.value("tuned", std::string()), {}, 0, 0, 0, {}});
    }
    auto& g = groups[it->second];
    g.rss = std::max(g.rss, j.value("peak_rss_mib", 0.0));
    if (j.contains("mean_gate") && j["mean_gate"].is_number()) g.gate.push_back(j["mean_gate"].get<double>());
    g.acc.push_back(j["test_accuracy"].get<double>());
    g.trainable = j["trainable_params"].get<double>();
    g.rate += j["samples_per_second"].get<double>();
  }
  return groups;
}

// The Markdown table of summary.md: mean ± the 95 % confidence interval's half-width (Student t
// over the seeds, src/sweep/stats.h) and the standard deviation, for each grid point.
// With tuning, the value each grid point chose follows its grid values.
std::string summary_table(const Dims& dims, const std::string& tuned_key, const std::vector<Group>& groups) {
  std::string table = "|";
  for (const auto& g : dims) table += " " + g.first + " |";
  if (!tuned_key.empty()) table += " " + tuned_key + " (tuned) |";
  const bool any_gate = std::any_of(groups.begin(), groups.end(), [](const Group& g) { return !g.gate.empty(); });
  table += " seeds | test accuracy (mean ± 95 % CI) | std | trainable params | samples/s | peak RSS MiB |";
  table += any_gate ? " mean gate |\n|" : "\n|";
  for (size_t k = 0; k < dims.size() + (tuned_key.empty() ? 0 : 1) + 6 + (any_gate ? 1 : 0); ++k) table += "---|";
  table += "\n";
  for (const auto& g : groups) {
    table += "|";
    for (const auto& v : g.values) table += " " + v + " |";
    if (!tuned_key.empty()) table += " " + g.tuned + " |";
    const auto ci = stats::mean_ci(g.acc);
    const std::string acc = g.acc.size() < 2 ? fmt::format("{:.4f} (one seed)", ci.mean)
                                             : fmt::format("{:.4f} ± {:.4f}", ci.mean, ci.half());
    table += fmt::format(" {} | {} | {:.4f} | {} | {:.0f} | {:.0f} |", g.acc.size(), acc, ci.sd,
                         with_commas(static_cast<long long>(g.trainable)), g.rate / g.acc.size(), g.rss);
    if (any_gate) table += g.gate.empty() ? " — |" : fmt::format(" {:.3f} |", mean(g.gate));
    table += "\n";
  }
  return table;
}

// The plot's x axis: trainable parameters (sweep.plot_x: trainable_params), or the first numeric
// key, else the first key as categories.
struct PlotAxis {
  bool by_params = false, numeric = false;
  size_t key = 0;  // the dimension on x, unless by_params
};

PlotAxis plot_axis(const Dims& dims, bool by_params) {
  PlotAxis x;
  x.by_params = by_params;
  x.numeric = by_params;
  for (size_t k = 0; k < dims.size() && !x.numeric; ++k)
    if (std::all_of(dims[k].second.begin(), dims[k].second.end(), is_number)) {
      x.key = k;
      x.numeric = true;
    }
  return x;
}

// The curves: one per variant series and combination of the other grid values, in first-seen order.
std::vector<std::pair<std::string, std::vector<const Group*>>> plot_series(const Dims& dims, const PlotAxis& x,
                                                                          bool variants,
                                                                          const std::vector<Group>& groups) {
  std::map<std::string, std::vector<const Group*>> series;
  std::vector<std::string> series_order;
  for (const auto& g : groups) {
    std::vector<std::string> rest;
    for (size_t k = 0; k < dims.size(); ++k) {
      if (!x.by_params && k == x.key) continue;
      if (variants && k == 0) rest.push_back(x.by_params ? g.series : g.values[0]);
      else rest.push_back(dims[k].first.substr(dims[k].first.rfind('.') + 1) + "=" + g.values[k]);
    }
    std::string label = rest.empty() ? "test accuracy" : join(rest, " ");
    if (!series.count(label)) series_order.push_back(label);
    series[label].push_back(&g);
  }
  std::vector<std::pair<std::string, std::vector<const Group*>>> out;
  for (const auto& label : series_order) out.emplace_back(label, series[label]);
  return out;
}

// Plots with gnuplot (PNG and SVG): one curve per series, log scale on x when a numeric x spans 10x
// or more. Returns the plots written.
std::vector<std::string> write_plots(const std::string& dir, const std::string& name, const std::string& gnuplot,
                                     const Dims& dims, const PlotAxis& x, bool variants,
                                     const std::vector<Group>& groups) {
  auto x_of = [&](const Group& g) { return x.by_params ? fmt::format("{:.0f}", g.trainable) : g.values[x.key]; };
  const auto series = plot_series(dims, x, variants, groups);
  const bool numeric = x.numeric;
  double lo = 1e300, hi = -1e300;
  std::string plot_cmds;
  for (size_t s = 0; s < series.size(); ++s) {
    std::string data_path = fmt::format("{}/plot_series{}.dat", dir, s);
    std::ofstream out(data_path);
    auto members = series[s].second;
    if (x.by_params)
      std::sort(members.begin(), members.end(), [](const Group* a, const Group* b) { return a->trainable < b->trainable; });
    for (const Group* g : members) {
      const std::string xv = x_of(*g);
      if (numeric) {
        lo = std::min(lo, std::atof(xv.c_str()));
        hi = std::max(hi, std::atof(xv.c_str()));
      }
      out << (numeric ? xv : "\"" + xv + "\"") << " " << mean(g->acc) << " " << stddev(g->acc) << "\n";
    }
    std::string using_ = numeric ? "1:2:3" : "0:2:3:xtic(1)";
    plot_cmds += fmt::format("{}'{}' using {} with yerrorlines title '{}'", s ? ", " : "", data_path, using_,
                             series[s].first);
  }
  const std::string xlabel = x.by_params ? "trainable parameters" : dims[x.key].first;
  std::vector<std::string> plots;
  for (const char* ext : {"png", "svg"}) {
    std::string out_path = fmt::format("{}/plot.{}", dir, ext);
    std::string script = fmt::format(
        "set terminal {}\nset output '{}'\nset title 'sweep {}'\nset xlabel '{}'\nset ylabel 'test accuracy (mean; bars: std over seeds)'\n"
        "set key bottom right\nset grid\n{}{}plot {}\n",
        std::string(ext) == "png" ? "pngcairo noenhanced size 900,600" : "svg noenhanced size 900,600", out_path, name, xlabel,
        numeric && hi >= 10 * lo && lo > 0 ? fmt::format("set logscale x\nset xrange [{}:{}]\n", lo / 1.5, hi * 1.5)
                                           : std::string(),
        // Variant names slant, so that long ones ("activation dense-to-sparse") do not overlap.
        !numeric ? "set offsets 0.5, 0.5\nset xtics rotate by 25 right\nset bmargin 7\n"
                 : hi >= 10 * lo && lo > 0 ? "" : "set offsets graph 0.05, graph 0.05\n",
        plot_cmds);
    std::string script_path = fmt::format("{}/plot_{}.gp", dir, ext);
    std::ofstream(script_path) << script;
    std::string cmd = fmt::format("'{}' '{}' 2>&1", gnuplot, script_path);
    if (std::system(cmd.c_str()) == 0 && fs::exists(out_path)) plots.push_back(out_path);
    else std::fprintf(stderr, "plot failed: %s (script %s)\n", out_path.c_str(), script_path.c_str());
  }
  return plots;
}

// sweep.compare: for each claim and each setting of the grid keys other than the variant, the
// paired t-test of a's and b's test accuracies over the seeds both ran (same seed: same
// initialisation and data order), and its verdict. Writes compare.csv; returns the Markdown table.
std::string compare_claims(const Recipe& base, const Dims& dims, const std::vector<nlohmann::json>& results,
                           const std::string& csv_path) {
  // (variant, the other grid values) -> seed -> test accuracy
  std::map<std::pair<std::string, std::vector<std::string>>, std::map<int64_t, double>> acc;
  std::vector<std::vector<std::string>> settings;
  for (const auto& j : results) {
    auto values = j["values"].get<std::vector<std::string>>();
    std::vector<std::string> setting;
    for (size_t k = 1; k < dims.size(); ++k) setting.push_back(dims[k].first + "=" + values[k]);
    if (std::find(settings.begin(), settings.end(), setting) == settings.end()) settings.push_back(setting);
    acc[{values[0], setting}][j["seed"].get<int64_t>()] = j["test_accuracy"].get<double>();
  }
  std::string csv = "claim,a,b,setting,pairs,mean_a,mean_b,diff,diff_lo,diff_hi,p,margin,verdict\n";
  std::string table =
      "| claim | setting | seeds | A | B | A − B (95 % CI) | p | verdict |\n|---|---|---|---|---|---|---|---|\n";
  for (const auto& claim : base.sweep.compare)
    for (const auto& setting : settings) {
      const auto& a = acc[{claim.a, setting}];
      const auto& b = acc[{claim.b, setting}];
      std::vector<double> xa, xb;
      for (const auto& [seed, value] : a)
        if (b.count(seed)) {
          xa.push_back(value);
          xb.push_back(b.at(seed));
        }
      const std::string where = setting.empty() ? "—" : join(setting, ", ");
      if (xa.size() < 2) {
        csv += fmt::format("{},{},{},{},{},,,,,,,{},inconclusive\n", csv_field(claim.claim), csv_field(claim.a),
                           csv_field(claim.b), csv_field(where), xa.size(), claim.margin);
        table += fmt::format("| {} | {} | {} | | | fewer than 2 paired seeds | | inconclusive |\n", claim.claim, where,
                             xa.size());
        continue;
      }
      const stats::PairedTest t = stats::paired_t_test(xa, xb);
      const std::string verdict = stats::to_string(stats::verdict(t, claim.margin));
      csv += fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{}\n", csv_field(claim.claim), csv_field(claim.a),
                         csv_field(claim.b), csv_field(where), xa.size(), mean(xa), mean(xb), t.diff.mean, t.diff.lo,
                         t.diff.hi, t.p, claim.margin, verdict);
      table += fmt::format("| {} | {} | {} | {} {:.4f} | {} {:.4f} | {:+.4f} [{:+.4f}, {:+.4f}] | {:.3g} | {} |\n",
                           claim.claim + (claim.margin != 0 ? fmt::format(" (margin {})", claim.margin) : ""), where,
                           xa.size(), claim.a, mean(xa), claim.b, mean(xb), t.diff.mean, t.diff.lo, t.diff.hi, t.p,
                           verdict);
    }
  write_file_atomic(csv_path, csv);
  return table;
}

}  // namespace

SweepResult run_sweep(const SweepOptions& opt) {
  if (auto problem = seed_list_problem(opt.seeds); !problem.empty()) throw Error("--seeds: " + problem);
  Recipe base = load_recipe(opt.recipe_path, opt.overrides);
  const Recipe whole = base;  // before a lane's selection of variants
  select_variants(base, opt);
  const Dims dims = sweep_dims(base, opt);
  std::vector<int64_t> seeds = !opt.seeds.empty() ? opt.seeds : !base.sweep.seeds.empty() ? base.sweep.seeds
                                                                                           : std::vector<int64_t>{base.seed};
  const std::string name = opt.name.empty() ? fs::path(opt.recipe_path).stem().string() : opt.name;
  SweepResult res;
  res.dir = (fs::path(opt.dir) / name).string();
  const std::string cells_dir = res.dir + "/cells";

  // Every cell is parsed (and budgets checked on the built models) before anything trains.
  const auto points = grid_points(dims);
  const SweepTune& tune = base.sweep.tune;
  const std::vector<int64_t> tune_seeds = !tune.seeds.empty() ? tune.seeds : std::vector<int64_t>{seeds[0]};
  std::vector<Cell> tuning;
  std::vector<std::string> chosen(points.size());
  if (tune.on()) tuning = make_tuning_cells(base, opt, dims, points, tune_seeds, seeds, cells_dir);
  std::vector<Cell> cells;  // with tuning: made once the values are chosen
  if (!tune.on()) cells = make_cells(base, opt, dims, points, chosen, seeds, cells_dir);
  // Budgets over the whole grid, one cell a point (a lane's partners may run in another lane), at
  // the tuned key's first value: a learning rate does not change them.
  {
    const Dims whole_dims = sweep_dims(whole, opt);
    const auto whole_points = grid_points(whole_dims);
    const std::string first = tune.on() ? tune.values[0] : "";
    check_budgets(whole, whole_dims, whole_points,
                  make_cells(whole, opt, whole_dims, whole_points, std::vector<std::string>(whole_points.size(), first),
                             {seeds[0]}, cells_dir),
                  1);
  }
  fs::create_directories(cells_dir);
  std::string protocol;
  if (tune.on()) {
    std::fprintf(stderr, "sweep %s: tuning %s over %zu values x %zu seed(s) at %zu grid point(s) (validation only)\n",
                 name.c_str(), tune.key.c_str(), tune.values.size(), tune_seeds.size(), points.size());
    const auto tuned_results = run_cells(tuning, opt.verbose, res);
    res.tune_csv = res.dir + "/tune.csv";
    chosen = choose_tuned(base, dims, points.size(), tuning, tuned_results, res.tune_csv);
    cells = make_cells(base, opt, dims, points, chosen, seeds, cells_dir);
    protocol = fmt::format("{} tuned per grid point over {} on the validation split (seeds {}; tune.csv); the test "
                           "split read once, at the value chosen.\n\n",
                           tune.key, fmt::join(tune.values, ", "), fmt::join(tune_seeds, ", "));
  }
  res.cells = static_cast<int64_t>(cells.size() + tuning.size());
  std::vector<nlohmann::json> results = run_cells(cells, opt.verbose, res);

  const std::string tuned_key = tune.on() ? tune.key : "";
  res.csv = res.dir + "/sweep.csv";
  write_file_atomic(res.csv, sweep_csv(dims, tuned_key, results));
  const std::vector<Group> groups = group_by_grid_point(results);
  res.table = summary_table(dims, tuned_key, groups);
  std::string claims;
  if (!base.sweep.compare.empty()) {
    res.compare_csv = res.dir + "/compare.csv";
    res.claims = compare_claims(base, dims, results, res.compare_csv);
    claims = "\n## Claims\n\nPaired t-test over the seeds both variants ran (same seed: same initialisation and "
             "data order); reproduced when the 95 % interval of A − B lies above the margin, not reproduced when it "
             "lies below, else inconclusive (docs/experiments.md).\n\n" +
             res.claims;
  }
  res.summary = res.dir + "/summary.md";
  std::set<std::string> metrics;  // a cell tested before test_metric existed: accuracy
  for (const auto& j : results) metrics.insert(j.value("test_metric", metric_name(false)));
  if (metrics.size() > 1)
    throw Error(fmt::format("sweep {}: its cells were tested by different metrics ({}); run them again with one "
                            "tunekit (remove the odd cells' result.json)",
                            name, join(std::vector<std::string>(metrics.begin(), metrics.end()), ", ")));
  const std::string metric = metrics.empty() ? metric_name(false) : *metrics.begin();
  write_file_atomic(res.summary, fmt::format("# Sweep {}\n\nRecipe: `{}`; seeds: {}; metric: {} on the test split "
                                                 "(best validation checkpoint).\n\n{}{}{}",
                                                 name, opt.recipe_path, fmt::join(seeds, ", "), metric, protocol,
                                                 res.table, claims));

  std::string gnuplot = find_gnuplot();
  if (dims.empty()) return res;
  if (gnuplot.empty()) {
    std::fprintf(stderr, "plots skipped: gnuplot not found (apt-get install gnuplot-nox)\n");
    return res;
  }
  const PlotAxis x = plot_axis(dims, base.sweep.plot_x == PlotX::TrainableParams);
  res.plots = write_plots(res.dir, name, gnuplot, dims, x, !base.sweep.variants.empty(), groups);
  return res;
}

}  // namespace tunekit
