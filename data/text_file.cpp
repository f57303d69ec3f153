#include "data/text_file.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "util/error.h"

namespace fs = std::filesystem;

namespace tunekit::data {
namespace {

std::string scalar_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return v.dump();
}

std::vector<TextRecord> read_jsonl(const TextFileSpec& s, std::istream& in) {
  std::vector<TextRecord> out;
  int64_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 1e999
      std::string msg = e.what();
      throw Error(fmt::format("{}:{}: invalid JSON ({})", s.path, line_no, msg.substr(msg.rfind(": ") + 2)));
    }
    if (!j.is_object()) throw Error(fmt::format("{}:{}: expected a JSON object per line", s.path, line_no));
    auto field = [&](const std::string& name, const char* what) -> std::string {
      if (name.empty()) return "";
      if (!j.contains(name) || j[name].is_null())
        throw Error(fmt::format("{}:{}: no {} field '{}'", s.path, line_no, what, name));
      if (j[name].is_object() || j[name].is_array())
        throw Error(fmt::format("{}:{}: field '{}' is not a string or number", s.path, line_no, name));
      return scalar_text(j[name]);
    };
    out.push_back({field(s.text_field, "text"), field(s.label_field, "label"), field(s.group_field, "group"), line_no});
  }
  return out;
}

// Splits delimited text into rows of fields; `quoting` follows RFC 4180 (CSV). Each row keeps
// the line it started on.
std::vector<std::pair<int64_t, std::vector<std::string>>> read_rows(const std::string& path, const std::string& data,
                                                                     char sep, bool quoting) {
  std::vector<std::pair<int64_t, std::vector<std::string>>> rows;
  std::vector<std::string> row;
  std::string field;
  int64_t line = 1, row_line = 1;
  bool in_quotes = false, quoted = false, any = false;
  auto end_field = [&] {
    row.push_back(field);
    field.clear();
    quoted = false;
  };
  auto end_row = [&] {
    end_field();
    bool empty = row.size() == 1 && row[0].empty();
    if (!empty) rows.emplace_back(row_line, row);
    row.clear();
    any = false;
  };
  for (size_t i = 0; i < data.size(); ++i) {
    char c = data[i];
    if (in_quotes) {
      if (c == '"') {
        if (i + 1 < data.size() && data[i + 1] == '"') {
          field.push_back('"');
          ++i;
        } else {
          in_quotes = false;
        }
      } else {
        if (c == '\n') ++line;
        field.push_back(c);
      }
      continue;
    }
    if (!any) row_line = line;
    any = true;
    if (quoting && c == '"') {
      if (!field.empty() || quoted)
        throw Error(fmt::format("{}:{}: stray '\"' inside an unquoted field", path, line));
      in_quotes = quoted = true;
    } else if (c == sep) {
      end_field();
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < data.size() && data[i + 1] == '\n') ++i;
      end_row();
      ++line;
    } else {
      if (quoted) throw Error(fmt::format("{}:{}: text after a closing quote", path, line));
      field.push_back(c);
    }
  }
  if (in_quotes) throw Error(fmt::format("{}:{}: quoted field is never closed", path, row_line));
  if (any) end_row();
  return rows;
}

std::vector<TextRecord> read_delimited(const TextFileSpec& s, const std::string& data, char sep, bool quoting) {
  auto rows = read_rows(s.path, data, sep, quoting);
  if (rows.empty()) throw Error(fmt::format("{}: empty file (expected a header row)", s.path));
  const auto& header = rows[0].second;
  auto column = [&](const std::string& name, const char* what) -> int {
    if (name.empty()) return -1;
    for (size_t i = 0; i < header.size(); ++i)
      if (header[i] == name) return static_cast<int>(i);
    throw Error(fmt::format("{}:1: no {} column '{}' in the header ({})", s.path, what, name, fmt::join(header, ", ")));
  };
  int text = column(s.text_field, "text"), label = column(s.label_field, "label"), group = column(s.group_field, "group");
  std::vector<TextRecord> out;
  for (size_t r = 1; r < rows.size(); ++r) {
    const auto& [line, f] = rows[r];
    if (f.size() != header.size())
      throw Error(fmt::format("{}:{}: expected {} fields (as in the header), got {}", s.path, line, header.size(), f.size()));
    out.push_back({f[text], label < 0 ? "" : f[label], group < 0 ? "" : f[group], line});
  }
  return out;
}

}  // namespace

std::string text_format_of(const std::string& path, const std::string& format) {
  if (format != "auto") return format;
  std::string ext = fs::path(path).extension().string();
  if (ext == ".jsonl" || ext == ".json" || ext == ".ndjson") return "jsonl";
  if (ext == ".csv") return "csv";
  if (ext == ".tsv" || ext == ".tab") return "tsv";
  throw Error(fmt::format("{}: cannot tell the format from the extension '{}' (set data.format: jsonl, csv or tsv)",
                          path, ext));
}

std::vector<TextRecord> read_text_file(const TextFileSpec& spec) {
  std::ifstream in(spec.path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open text file", spec.path));
  std::string format = text_format_of(spec.path, spec.format);
  if (format == "jsonl") return read_jsonl(spec, in);
  std::stringstream ss;
  ss << in.rdbuf();
  if (format == "csv") return read_delimited(spec, ss.str(), ',', true);
  if (format == "tsv") return read_delimited(spec, ss.str(), '\t', false);
  throw Error(fmt::format("{}: unknown format '{}' (jsonl, csv or tsv)", spec.path, format));
}

}  // namespace tunekit::data
