#include "data/text_file.h"

#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/manifest.h"
#include "util/error.h"
#include "util/file.h"

namespace fs = std::filesystem;

namespace tunekit::data {
// The offset of the first byte of `s` that is not part of well-formed UTF-8 (no overlong forms,
// no surrogates, at most U+10FFFF), or npos.
size_t invalid_utf8_at(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return i;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return i;
    const auto c1 = static_cast<unsigned char>(len > 1 ? s[i + 1] : 0);
    if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) || (c == 0xf0 && c1 < 0x90) || (c == 0xf4 && c1 > 0x8f))
      return i;
    i += len;
  }
  return std::string::npos;
}

namespace {

// Every record: no field over the record size, well-formed UTF-8, a text that is not blank, and
// a label (group) that is not empty when one is asked for. Errors name FILE:LINE and the field.
void check_records(const TextFileSpec& s, const std::vector<TextRecord>& records) {
  for (const auto& r : records) {
    if (r.text.size() + r.label.size() + r.group.size() > kMaxRecordBytes)
      throw Error(fmt::format("{}:{}: a record of {} bytes, more than the {} a record may have", s.path, r.line,
                              r.text.size() + r.label.size() + r.group.size(), kMaxRecordBytes));
    const std::pair<const std::string*, const std::string*> fields[] = {
        {&s.text_field, &r.text}, {&s.label_field, &r.label}, {&s.group_field, &r.group}};
    for (auto [name, value] : fields) {
      if (name->empty()) continue;
      const size_t bad = invalid_utf8_at(*value);
      if (bad != std::string::npos)
        throw Error(fmt::format("{}:{}: field '{}' is not valid UTF-8 (byte 0x{:02x} at offset {})", s.path, r.line, *name,
                                static_cast<unsigned char>((*value)[bad]), bad));
      if (value->find_first_not_of(" \t\r\n") == std::string::npos)
        throw Error(fmt::format("{}:{}: field '{}' is empty", s.path, r.line, *name));
    }
  }
}

std::string scalar_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return v.dump();
}

std::vector<TextRecord> read_jsonl(const TextFileSpec& s, const std::string& data) {
  std::vector<TextRecord> out;
  int64_t line_no = 0;
  for (size_t pos = 0; pos < data.size();) {
    size_t eol = data.find('\n', pos);
    if (eol == std::string::npos) eol = data.size();
    ++line_no;
    if (eol - pos > kMaxRecordBytes)
      throw Error(fmt::format("{}:{}: a line of {} bytes, more than the {} a record may have", s.path, line_no, eol - pos,
                              kMaxRecordBytes));
    std::string line = data.substr(pos, eol - pos);
    pos = eol + 1;
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
      if (name == s.text_field && !j[name].is_string())
        throw Error(fmt::format("{}:{}: field '{}' is a {}, not a string", s.path, line_no, name, j[name].type_name()));
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
    if (field.size() > kMaxRecordBytes)
      throw Error(fmt::format("{}:{}: a field of {} bytes, more than the {} a record may have", path, row_line,
                              field.size(), kMaxRecordBytes));
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

std::vector<std::pair<int64_t, std::vector<std::string>>> read_delimited_rows(const std::string& path,
                                                                               const std::string& data, char sep,
                                                                               bool quoting) {
  return read_rows(path, data, sep, quoting);
}

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
  const std::string format = text_format_of(spec.path, spec.format);
  if (format != "jsonl" && format != "csv" && format != "tsv")
    throw Error(fmt::format("{}: unknown format '{}' (jsonl, csv or tsv)", spec.path, format));
  std::string data;
  if (spec.manifest.empty()) {
    data = read_file(spec.path, kMaxTextFileBytes);  // a FIFO or /dev/zero: an error, never a read
  } else {
    const std::string redo = spec.prepared_by.empty() ? std::string("prepare it again")
                                                      : fmt::format("run `{}` to redo it", spec.prepared_by);
    if (!fs::exists(spec.manifest)) throw Error(fmt::format("{}: not found ({})", spec.manifest, redo));
    const std::string name = fs::path(spec.path).filename().string();
    data = read_verified(spec.path, manifest_entry(read_manifest(spec.manifest), spec.manifest, name), spec.manifest, redo);
  }
  if (data.compare(0, 3, "\xEF\xBB\xBF") == 0) data.erase(0, 3);  // a UTF-8 byte order mark (Excel's CSV)
  std::vector<TextRecord> records = format == "jsonl" ? read_jsonl(spec, data)
                                    : format == "csv" ? read_delimited(spec, data, ',', true)
                                                      : read_delimited(spec, data, '\t', false);
  check_records(spec, records);
  return records;
}

}  // namespace tunekit::data
