#include "src/sweep/sweep.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "src/eval/evaluator.h"
#include "src/io/checkpoint.h"
#include "src/recipe/recipe.h"
#include "src/train/setup.h"
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
  std::string series;
  std::vector<double> acc;
  double trainable = 0, rate = 0, rss = 0;
  std::vector<double> gate;  // mean prompt-expert gate weight, when the cell has prompt experts
};


}  // namespace

SweepResult run_sweep(const SweepOptions& opt) {
  // The grid: the recipe's sweep section, then --grid arguments (a key given again replaces it).
  Recipe base = load_recipe(opt.recipe_path, opt.overrides);
  auto grid = base.sweep.grid;
  for (const auto& g : opt.grid) {
    auto eq = g.find('=');
    if (eq == std::string::npos || eq == 0) throw Error(fmt::format("--grid '{}': expected key.path=v1,v2,...", g));
    std::string key = g.substr(0, eq);
    auto values = split_grid_values(g.substr(eq + 1));
    auto it = std::find_if(grid.begin(), grid.end(), [&](const auto& kv) { return kv.first == key; });
    if (it != grid.end()) it->second = values;
    else grid.emplace_back(key, values);
  }
  // The dimensions: the variants (when given) as a first "variant" key, then the grid keys.
  const auto& variants = base.sweep.variants;
  auto dims = grid;
  if (!variants.empty()) {
    std::vector<std::string> names;
    for (const auto& v : variants) names.push_back(v.name);
    dims.insert(dims.begin(), {"variant", names});
  }
  std::vector<int64_t> seeds = !opt.seeds.empty() ? opt.seeds : !base.sweep.seeds.empty() ? base.sweep.seeds
                                                                                           : std::vector<int64_t>{base.seed};
  const std::string name = opt.name.empty() ? fs::path(opt.recipe_path).stem().string() : opt.name;
  SweepResult res;
  res.dir = (fs::path(opt.dir) / name).string();
  const std::string cells_dir = res.dir + "/cells";

  // Every cell is parsed and validated before anything runs.
  std::vector<Cell> cells;
  std::vector<size_t> idx(dims.size(), 0);
  while (true) {
    for (int64_t seed : seeds) {
      Cell c;
      c.seed = seed;
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
      cells.push_back(std::move(c));
    }
    size_t k = 0;
    for (; k < dims.size(); ++k) {
      if (++idx[k] < dims[k].second.size()) break;
      idx[k] = 0;
    }
    if (k == dims.size()) break;
  }
  res.cells = static_cast<int64_t>(cells.size());
  fs::create_directories(cells_dir);

  std::vector<nlohmann::json> results;
  for (size_t i = 0; i < cells.size(); ++i) {
    const auto& c = cells[i];
    const std::string run_dir = c.recipe.run_dir(), result_path = run_dir + "/result.json";
    std::string label = fmt::format("[{}/{}] {}", i + 1, cells.size(), c.name);
    if (fs::exists(result_path)) {
      std::ifstream in(result_path);
      results.push_back(nlohmann::json::parse(in));
      ++res.skipped;
      std::fprintf(stderr, "%s: done before, skipped (test acc %.4f)\n", label.c_str(),
                   results.back().value("test_accuracy", 0.0));
      continue;
    }
    auto t0 = std::chrono::steady_clock::now();
    std::fprintf(stderr, "%s: training...\n", label.c_str());
    reset_peak_rss();  // cells run one after another in this process: measure each from here
    TrainResult tr = train(c.recipe, {/*resume=*/true, /*quiet=*/!opt.verbose, 0});
    const double rss = peak_rss_mib();
    LoadedRun run = load_run(run_dir, "best");
    auto splits = load_data(run.recipe, run_dir);
    EvalResult ev = evaluate(*run.run.model, splits.test, run.recipe);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    nlohmann::json j{{"cell", c.name},
                     {"seed", c.seed},
                     {"values", c.values},
                     {"test_accuracy", ev.accuracy},
                     {"test_loss", ev.loss},
                     {"test_macro_f1", ev.macro_f1},
                     {"best_val_accuracy", tr.best_val_accuracy},
                     {"trainable_params", tr.trainable},
                     {"samples_per_second", tr.samples_per_second},
                     {"peak_rss_mib", rss},
                     {"mean_gate", ev.prompt_usage.empty() ? nlohmann::json(nullptr) : nlohmann::json(ev.mean_prompt_usage())},
                     {"series", c.series},
                     {"steps", tr.steps},
                     {"seconds", seconds}};
    write_file_atomic(result_path, j.dump(2) + "\n");  // written last: marks the cell finished
    results.push_back(j);
    ++res.ran;
    std::fprintf(stderr, "%s: test acc %.4f  (%s)\n", label.c_str(), ev.accuracy, format_duration(seconds).c_str());
  }

  // sweep.csv: one row per cell.
  res.csv = res.dir + "/sweep.csv";
  {
    std::string csv = "cell";
    for (const auto& g : dims) csv += "," + csv_field(g.first);
    csv += ",seed,test_accuracy,test_loss,test_macro_f1,best_val_accuracy,trainable_params,samples_per_second,"
           "peak_rss_mib,steps,seconds,mean_gate\n";
    for (const auto& j : results) {
      csv += csv_field(j["cell"].get<std::string>());
      for (const auto& v : j["values"]) csv += "," + csv_field(v.get<std::string>());
      csv += fmt::format(",{},{},{},{},{},{},{},{:.1f},{},{},{}\n", j["seed"].get<int64_t>(), j["test_accuracy"].get<double>(),
                         j["test_loss"].get<double>(), j["test_macro_f1"].get<double>(),
                         j["best_val_accuracy"].get<double>(), j["trainable_params"].get<int64_t>(),
                         j["samples_per_second"].get<double>(), j.value("peak_rss_mib", 0.0), j["steps"].get<int64_t>(),
                         j["seconds"].get<double>(),
                         j.contains("mean_gate") && j["mean_gate"].is_number()
                             ? fmt::format("{}", j["mean_gate"].get<double>())
                             : std::string());
    }
    write_file_atomic(res.csv, csv);
  }

  // summary.md: mean ± std over seeds for each grid point, in grid order.
  std::vector<Group> groups;
  std::map<std::vector<std::string>, size_t> where;
  for (const auto& j : results) {
    auto values = j["values"].get<std::vector<std::string>>();
    auto it = where.find(values);
    if (it == where.end()) {
      it = where.emplace(values, groups.size()).first;
      groups.push_back({values, j.value("series", std::string()), {}, 0, 0, 0});
    }
    auto& g = groups[it->second];
    g.rss = std::max(g.rss, j.value("peak_rss_mib", 0.0));
    if (j.contains("mean_gate") && j["mean_gate"].is_number()) g.gate.push_back(j["mean_gate"].get<double>());
    g.acc.push_back(j["test_accuracy"].get<double>());
    g.trainable = j["trainable_params"].get<double>();
    g.rate += j["samples_per_second"].get<double>();
  }
  std::string table = "|";
  for (const auto& g : dims) table += " " + g.first + " |";
  const bool any_gate = std::any_of(groups.begin(), groups.end(), [](const Group& g) { return !g.gate.empty(); });
  table += " seeds | test accuracy (mean ± std) | trainable params | samples/s | peak RSS MiB |";
  table += any_gate ? " mean gate |\n|" : "\n|";
  for (size_t k = 0; k < dims.size() + 5 + (any_gate ? 1 : 0); ++k) table += "---|";
  table += "\n";
  for (const auto& g : groups) {
    table += "|";
    for (const auto& v : g.values) table += " " + v + " |";
    table += fmt::format(" {} | {:.4f} ± {:.4f} | {} | {:.0f} | {:.0f} |", g.acc.size(), mean(g.acc), stddev(g.acc),
                         with_commas(static_cast<long long>(g.trainable)), g.rate / g.acc.size(), g.rss);
    if (any_gate) table += g.gate.empty() ? " — |" : fmt::format(" {:.3f} |", mean(g.gate));
    table += "\n";
  }
  res.table = table;
  res.summary = res.dir + "/summary.md";
  write_file_atomic(res.summary, fmt::format("# Sweep {}\n\nRecipe: `{}`; seeds: {}; metric: test accuracy "
                                                 "(best validation checkpoint).\n\n{}",
                                                 name, opt.recipe_path, fmt::join(seeds, ", "), table));

  // Plots. x = trainable parameters (sweep.plot_x: trainable_params; one curve per variant
  // series and other grid values), or the first numeric key (log scale when it spans 10x or
  // more), else the first key as categories; one curve per combination of the other keys.
  std::string gnuplot = find_gnuplot();
  if (dims.empty()) return res;
  if (gnuplot.empty()) {
    std::fprintf(stderr, "plots skipped: gnuplot not found (apt-get install gnuplot-nox)\n");
    return res;
  }
  const bool by_params = base.sweep.plot_x == PlotX::TrainableParams;
  size_t xk = 0;
  bool numeric = by_params;
  for (size_t k = 0; k < dims.size() && !numeric; ++k)
    if (std::all_of(dims[k].second.begin(), dims[k].second.end(), is_number)) {
      xk = k;
      numeric = true;
    }
  auto x_of = [&](const Group& g) { return by_params ? fmt::format("{:.0f}", g.trainable) : g.values[xk]; };
  std::map<std::string, std::vector<const Group*>> series;
  std::vector<std::string> series_order;
  for (const auto& g : groups) {
    std::vector<std::string> rest;
    for (size_t k = 0; k < dims.size(); ++k) {
      if (!by_params && k == xk) continue;
      if (!variants.empty() && k == 0) rest.push_back(by_params ? g.series : g.values[0]);
      else rest.push_back(dims[k].first.substr(dims[k].first.rfind('.') + 1) + "=" + g.values[k]);
    }
    std::string label = rest.empty() ? "test accuracy" : join(rest, " ");
    if (!series.count(label)) series_order.push_back(label);
    series[label].push_back(&g);
  }
  double lo = 1e300, hi = -1e300;
  std::string plot_cmds;
  for (size_t s = 0; s < series_order.size(); ++s) {
    std::string data_path = fmt::format("{}/plot_series{}.dat", res.dir, s);
    std::ofstream out(data_path);
    auto members = series[series_order[s]];
    if (by_params)
      std::sort(members.begin(), members.end(), [](const Group* a, const Group* b) { return a->trainable < b->trainable; });
    for (const Group* g : members) {
      const std::string x = x_of(*g);
      if (numeric) {
        lo = std::min(lo, std::atof(x.c_str()));
        hi = std::max(hi, std::atof(x.c_str()));
      }
      out << (numeric ? x : "\"" + x + "\"") << " " << mean(g->acc) << " " << stddev(g->acc) << "\n";
    }
    std::string using_ = numeric ? "1:2:3" : "0:2:3:xtic(1)";
    plot_cmds += fmt::format("{}'{}' using {} with yerrorlines title '{}'", s ? ", " : "", data_path, using_,
                             series_order[s]);
  }
  const std::string xlabel = by_params ? "trainable parameters" : dims[xk].first;
  for (const char* ext : {"png", "svg"}) {
    std::string out_path = fmt::format("{}/plot.{}", res.dir, ext);
    std::string script = fmt::format(
        "set terminal {}\nset output '{}'\nset title 'sweep {}'\nset xlabel '{}'\nset ylabel 'test accuracy'\n"
        "set key bottom right\nset grid\n{}{}plot {}\n",
        std::string(ext) == "png" ? "pngcairo noenhanced size 900,600" : "svg noenhanced size 900,600", out_path, name, xlabel,
        numeric && hi >= 10 * lo && lo > 0 ? fmt::format("set logscale x\nset xrange [{}:{}]\n", lo / 1.5, hi * 1.5)
                                           : std::string(),
        !numeric ? "set offsets 0.5, 0.5\n" : hi >= 10 * lo && lo > 0 ? "" : "set offsets graph 0.05, graph 0.05\n",
        plot_cmds);
    std::string script_path = fmt::format("{}/plot_{}.gp", res.dir, ext);
    std::ofstream(script_path) << script;
    std::string cmd = fmt::format("'{}' '{}' 2>&1", gnuplot, script_path);
    if (std::system(cmd.c_str()) == 0 && fs::exists(out_path)) res.plots.push_back(out_path);
    else std::fprintf(stderr, "plot failed: %s (script %s)\n", out_path.c_str(), script_path.c_str());
  }
  return res;
}

}  // namespace tunekit
