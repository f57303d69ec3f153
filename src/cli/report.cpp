#include "src/cli/report.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/progress.h"
#include "util/text.h"

namespace fs = std::filesystem;

namespace tunekit {

namespace {
nlohmann::json last_line_of_type(const std::string& path, const std::string& type) {
  nlohmann::json found;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("type", "") == type) found = j;
  }
  return found;
}
nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) return {};
  auto j = nlohmann::json::parse(in, nullptr, false);
  return j.is_discarded() ? nlohmann::json() : j;
}
}  // namespace

std::string report_table(const std::vector<std::string>& run_dirs) {
  struct Row {
    std::vector<std::string> cells;
  };
  std::vector<std::string> header{"run", "trainable params", "test acc", "samples/s", "train time", "outputs"};
  std::vector<Row> rows;
  for (const auto& dir : run_dirs) {
    std::string metrics = (fs::path(dir) / "metrics.jsonl").string();
    if (!fs::exists(metrics)) throw Error(fmt::format("{}: no metrics.jsonl (not a finished run)", dir));
    auto summary = last_line_of_type(metrics, "summary");
    auto eval = read_json((fs::path(dir) / "eval_test.json").string());
    std::string params = summary.is_null() ? "?"
                                           : fmt::format("{} / {}", with_commas(summary.value("trainable_params", 0LL)),
                                                         with_commas(summary.value("total_params", 0LL)));
    std::string acc = eval.is_null()               ? "(run eval)"
                      : eval.contains("perplexity") ? fmt::format("ppl {:.1f}", eval.value("perplexity", 0.0))  // LM
                                                    : fmt::format("{:.4f}", eval.value("accuracy", 0.0));
    std::string rate = summary.is_null() ? "?" : fmt::format("{:.0f}", summary.value("samples_per_second", 0.0));
    std::string time = summary.is_null() ? "?" : format_duration(summary.value("wall_seconds", 0.0));
    std::vector<std::string> outputs{(fs::path(dir) / "checkpoints/best").string()};
    fs::path exported = fs::path(dir) / "export" / "model.pt";
    if (fs::exists(exported)) outputs.push_back(exported.string());
    rows.push_back({{fs::path(dir).filename().string(), params, acc, rate, time, join(outputs, ", ")}});
  }
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) {
    width[c] = header[c].size();
    for (const auto& r : rows) width[c] = std::max(width[c], r.cells[c].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s = "|";
    for (size_t c = 0; c < cells.size(); ++c) s += fmt::format(" {:<{}} |", cells[c], width[c]);
    return s + "\n";
  };
  std::string out = line(header);
  std::string sep = "|";
  for (size_t c = 0; c < header.size(); ++c) sep += std::string(width[c] + 2, '-') + "|";
  out += sep + "\n";
  for (const auto& r : rows) out += line(r.cells);
  return out;
}

}  // namespace tunekit
