// Text-classification files: JSONL (one object per line), CSV (RFC 4180, header row, quoted
// fields may span lines) and TSV (header row, tab-separated, no quoting: GLUE's SST-2 layout).
// Every record keeps the line it started on, so a bad label can be reported as file:line.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
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
  // A prepared file (the SpamAssassin splits): the MANIFEST.json whose files.<file name> entry its
  // size and MD5 must match, and the command that redoes it (named in the error).
  std::string manifest, prepared_by;
};

// The largest text file tunekit reads, and the largest record (a JSONL line, a CSV field).
inline constexpr int64_t kMaxTextFileBytes = int64_t(4) << 30;
inline constexpr size_t kMaxRecordBytes = size_t(16) << 20;

// The offset of the first byte of `s` that is not well-formed UTF-8, or npos.
size_t invalid_utf8_at(const std::string& s);

// Delimited text (a header row included) as rows of fields, each with the line it started on;
// `quoting` follows RFC 4180 (CSV). A field over kMaxRecordBytes or a broken quote throws
// "PATH:LINE: ...".
std::vector<std::pair<int64_t, std::vector<std::string>>> read_delimited_rows(const std::string& path,
                                                                               const std::string& data, char sep,
                                                                               bool quoting);

// The format `auto` resolves to for `path` (.jsonl/.json -> jsonl, .csv, .tsv); throws otherwise.
std::string text_format_of(const std::string& path, const std::string& format);

// Reads every record of a regular file (at most 4 GiB; a record at most 16 MiB). A malformed
// line, a missing field, a wrong field count, a field that is not UTF-8, a blank text or an empty
// label throws tunekit::Error("FILE:LINE: ..."); a UTF-8 byte order mark is skipped.
std::vector<TextRecord> read_text_file(const TextFileSpec& spec);

}  // namespace tunekit::data
