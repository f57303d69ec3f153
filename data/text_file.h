// Text-classification files: JSONL (one object per line), CSV (RFC 4180, header row, quoted
// fields may span lines) and TSV (header row, tab-separated, no quoting: GLUE's SST-2 layout).
// Every record keeps the line it started on, so a bad label can be reported as file:line.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tunekit::data {

struct TextRecord {
  std::string text, label, group;  // label/group empty when their field is not asked for
  int64_t line = 0;
};

struct TextFileSpec {
  std::string path;
  std::string format = "auto";  // auto (from the extension) | jsonl | csv | tsv
  std::string text_field = "text";
  std::string label_field = "label";  // "" = no labels (language-model text)
  std::string group_field;            // "" = no groups
};

// The format `auto` resolves to for `path` (.jsonl/.json -> jsonl, .csv, .tsv); throws otherwise.
std::string text_format_of(const std::string& path, const std::string& format);

// Reads every record. A malformed line, a missing field or a wrong field count throws
// tunekit::Error("FILE:LINE: ...").
std::vector<TextRecord> read_text_file(const TextFileSpec& spec);

}  // namespace tunekit::data
