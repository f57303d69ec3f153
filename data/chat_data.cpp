#include "data/chat_data.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/text_file.h"
#include "util/error.h"
#include "util/file.h"
#include "util/text.h"

namespace fs = std::filesystem;

namespace tunekit::data {
namespace {

using nlohmann::json;

// "FILE:LINE: " before a record's errors.
std::string at(const std::string& file, int64_t line) { return fmt::format("{}:{}: ", file, line); }

// A string field of a JSON record; `required` false: absent or null gives "".
std::string json_string(const json& j, const std::string& name, const std::string& where, bool required) {
  if (!j.contains(name) || j[name].is_null()) {
    if (!required) return "";
    throw Error(fmt::format("{}{}: missing", where, name));
  }
  if (!j[name].is_string()) throw Error(fmt::format("{}{}: expected a string, got {}", where, name, j[name].type_name()));
  return j[name].get<std::string>();
}

std::vector<ChatMessage> json_messages(const json& j, const ChatFileSpec& s, const std::string& where) {
  const std::string& f = s.messages_field;
  if (!j.contains(f) || j[f].is_null()) throw Error(fmt::format("{}{}: missing", where, f));
  if (!j[f].is_array())
    throw Error(fmt::format("{}{}: expected a list of {{role, content}} objects, got {}", where, f, j[f].type_name()));
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < j[f].size(); ++i) {
    const json& m = j[f][i];
    const std::string name = fmt::format("{}[{}]", f, i);
    if (!m.is_object()) throw Error(fmt::format("{}{}: expected an object {{role, content}}, got {}", where, name, m.type_name()));
    out.push_back({json_string(m, "role", where + name + ".", true), json_string(m, "content", where + name + ".", true)});
  }
  return out;
}

// The record's fields checked as a conversation or an instruction; errors name FILE:LINE and the field.
void check_record(const ChatRecord& r, const ChatFileSpec& s) {
  const std::string where = at(r.file, r.line);
  if (!s.instruct) {
    std::string problem = conversation_problem(r.messages, false);
    if (problem.rfind("messages", 0) == 0) problem = s.messages_field + problem.substr(8);  // the file's own field name
    if (!problem.empty()) throw Error(where + problem);
    return;
  }
  const std::pair<const std::string*, const std::string*> fields[] = {
      {&s.instruction_field, &r.instruction}, {&s.input_field, &r.input}, {&s.output_field, &r.output}};
  for (auto [name, value] : fields) {
    const size_t bad = invalid_utf8_at(*value);
    if (bad != std::string::npos)
      throw Error(fmt::format("{}{}: not valid UTF-8 (byte 0x{:02x} at offset {})", where, *name,
                              static_cast<unsigned char>((*value)[bad]), bad));
    if (name != &s.input_field && value->find_first_not_of(" \t\r\n") == std::string::npos)
      throw Error(fmt::format("{}{}: empty", where, *name));
  }
}

std::vector<ChatRecord> read_jsonl(const ChatFileSpec& s, const std::string& data) {
  std::vector<ChatRecord> out;
  int64_t line_no = 0;
  for (size_t pos = 0; pos < data.size();) {
    size_t eol = data.find('\n', pos);
    if (eol == std::string::npos) eol = data.size();
    ++line_no;
    const std::string where = at(s.path, line_no);
    if (eol - pos > static_cast<size_t>(kMaxRecordBytes))
      throw Error(fmt::format("{}a line of {} bytes, more than the {} a record may have", where, eol - pos, kMaxRecordBytes));
    std::string line = data.substr(pos, eol - pos);
    pos = eol + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {  // parse_error (ill-formed UTF-8 included), out_of_range for 1e999
      const std::string msg = e.what();
      throw Error(fmt::format("{}invalid JSON ({})", where, msg.substr(msg.rfind(": ") + 2)));
    }
    if (!j.is_object()) throw Error(where + "expected a JSON object per line");
    ChatRecord r;
    r.file = s.path;
    r.line = line_no;
    if (s.instruct) {
      r.instruction = json_string(j, s.instruction_field, where, true);
      r.input = json_string(j, s.input_field, where, false);
      r.output = json_string(j, s.output_field, where, true);
    } else {
      r.messages = json_messages(j, s, where);
    }
    check_record(r, s);
    out.push_back(std::move(r));
  }
  return out;
}

// CSV/TSV instruction records: a header row naming the instruction and output columns (input optional).
std::vector<ChatRecord> read_delimited(const ChatFileSpec& s, const std::string& data, char sep, bool quoting) {
  if (!s.instruct)
    throw Error(fmt::format("{}: chat records (a list of messages per record) are read from JSONL only", s.path));
  const auto rows = read_delimited_rows(s.path, data, sep, quoting);
  if (rows.empty()) throw Error(fmt::format("{}: empty file (expected a header row)", s.path));
  const auto& header = rows[0].second;
  auto column = [&](const std::string& name, bool required) -> int {
    for (size_t i = 0; i < header.size(); ++i)
      if (header[i] == name) return static_cast<int>(i);
    if (!required) return -1;
    throw Error(fmt::format("{}:1: no column '{}' in the header ({})", s.path, name, join(header, ", ")));
  };
  const int instruction = column(s.instruction_field, true), input = column(s.input_field, false),
            output = column(s.output_field, true);
  std::vector<ChatRecord> out;
  for (size_t i = 1; i < rows.size(); ++i) {
    const auto& [line, f] = rows[i];
    if (f.size() != header.size())
      throw Error(fmt::format("{}:{}: expected {} fields (as in the header), got {}", s.path, line, header.size(), f.size()));
    ChatRecord r;
    r.file = s.path;
    r.line = line;
    r.instruction = f[instruction];
    r.input = input < 0 ? "" : f[input];
    r.output = f[output];
    check_record(r, s);
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<ChatRecord> read_one_file(const ChatFileSpec& s) {
  const std::string format = text_format_of(s.path, s.format);
  if (format != "jsonl" && format != "csv" && format != "tsv")
    throw Error(fmt::format("{}: unknown format '{}' (jsonl, csv or tsv)", s.path, format));
  std::string data = read_file(s.path, kMaxTextFileBytes);  // a FIFO or /dev/zero: an error, never a read
  if (data.compare(0, 3, "\xEF\xBB\xBF") == 0) data.erase(0, 3);  // a UTF-8 byte order mark
  return format == "jsonl" ? read_jsonl(s, data)
         : format == "csv" ? read_delimited(s, data, ',', true)
                           : read_delimited(s, data, '\t', false);
}

// Seeded: `fraction` of the records held out (the second), both in file order.
std::pair<std::vector<ChatRecord>, std::vector<ChatRecord>> split_records(const std::vector<ChatRecord>& records,
                                                                          double fraction, uint64_t seed) {
  const auto n = static_cast<int64_t>(records.size());
  auto gen = seeded_generator(seed + 29);
  auto perm = torch::randperm(n, gen, torch::kLong);
  const auto n_held = static_cast<int64_t>(static_cast<double>(n) * fraction + 0.5);
  std::vector<uint8_t> held(records.size(), 0);
  for (int64_t i = 0; i < n_held; ++i) held[perm[i].item<int64_t>()] = 1;
  std::pair<std::vector<ChatRecord>, std::vector<ChatRecord>> out;
  for (size_t i = 0; i < records.size(); ++i) (held[i] ? out.second : out.first).push_back(records[i]);
  return out;
}

// Row r of inputs/labels filled from `e` starting at column `col`.
void put_example(const RenderedChat& e, int64_t r, int64_t col, torch::TensorAccessor<int64_t, 2> x,
                 torch::TensorAccessor<int64_t, 2> y) {
  for (size_t t = 0; t < e.ids.size(); ++t) {
    x[r][col + static_cast<int64_t>(t)] = e.ids[t];
    y[r][col + static_cast<int64_t>(t)] = e.train[t] ? e.ids[t] : kIgnoreLabel;
  }
}

}  // namespace

std::vector<ChatRecord> read_chat_records(const ChatFileSpec& spec) {
  if (!fs::is_directory(spec.path)) {
    if (!fs::exists(spec.path)) throw Error(fmt::format("{}: no such file", spec.path));
    return read_one_file(spec);
  }
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(spec.path)) {
    const std::string ext = e.path().extension().string();
    if (ext == ".jsonl" || ext == ".csv" || ext == ".tsv") files.push_back(e.path().string());
  }
  if (files.empty()) throw Error(fmt::format("{}: a directory with no .jsonl, .csv or .tsv files", spec.path));
  std::sort(files.begin(), files.end());
  std::vector<ChatRecord> out;
  for (const auto& f : files) {
    ChatFileSpec one = spec;
    one.path = f;
    auto records = read_one_file(one);
    out.insert(out.end(), std::make_move_iterator(records.begin()), std::make_move_iterator(records.end()));
  }
  return out;
}

RenderedChat render_record(const ChatRecord& r, ChatTemplate t, const std::string& system, const Tokenizer& tok) {
  try {
    if (r.messages.empty()) return render_instruction(t, system, r.instruction, r.input, r.output, tok);
    if (system.empty() || r.messages[0].role == "system") return render_chat(t, r.messages, tok);
    std::vector<ChatMessage> ms{{"system", system}};
    ms.insert(ms.end(), r.messages.begin(), r.messages.end());
    return render_chat(t, ms, tok);
  } catch (const Error& e) {
    throw Error(at(r.file, r.line) + e.what());
  }
}

int64_t chat_pad_id(const Tokenizer& tok) {
  return tok.pad_id() >= 0 ? tok.pad_id() : tok.eos_id() >= 0 ? tok.eos_id() : 0;
}

std::vector<RenderedChat> truncate_examples(std::vector<RenderedChat> examples, int64_t max_len, int64_t* dropped) {
  std::vector<RenderedChat> out;
  int64_t n_dropped = 0;
  for (auto& e : examples) {
    if (static_cast<int64_t>(e.ids.size()) > max_len) {
      e.ids.resize(static_cast<size_t>(max_len));
      e.train.resize(static_cast<size_t>(max_len));
    }
    if (std::find(e.train.begin(), e.train.end(), 1) == e.train.end()) {
      ++n_dropped;
      continue;
    }
    out.push_back(std::move(e));
  }
  if (dropped) *dropped = n_dropped;
  return out;
}

LabelledDataset example_rows(const std::vector<RenderedChat>& examples, int64_t max_len, int64_t pad_id) {
  const auto n = static_cast<int64_t>(examples.size());
  LabelledDataset d;
  d.inputs = torch::full({n, max_len}, pad_id, torch::kLong);
  d.labels = torch::full({n, max_len}, kIgnoreLabel, torch::kLong);
  auto x = d.inputs.accessor<int64_t, 2>();
  auto y = d.labels.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    if (static_cast<int64_t>(examples[i].ids.size()) > max_len)
      throw Error(fmt::format("chat data: an example of {} tokens in rows of {} (truncate first)", examples[i].ids.size(), max_len));
    put_example(examples[i], i, 0, x, y);
  }
  d.class_names = {"response"};
  return d;
}

LabelledDataset packed_rows(const std::vector<RenderedChat>& examples, int64_t max_len, int64_t pad_id) {
  std::vector<std::vector<size_t>> rows;
  int64_t used = max_len;
  for (size_t i = 0; i < examples.size(); ++i) {
    const auto len = static_cast<int64_t>(examples[i].ids.size());
    if (len > max_len) throw Error(fmt::format("chat data: an example of {} tokens in rows of {} (truncate first)", len, max_len));
    if (used + len > max_len) {
      rows.emplace_back();
      used = 0;
    }
    rows.back().push_back(i);
    used += len;
  }
  const auto n = static_cast<int64_t>(rows.size());
  LabelledDataset d;
  d.inputs = torch::full({n, max_len}, pad_id, torch::kLong);
  d.labels = torch::full({n, max_len}, kIgnoreLabel, torch::kLong);
  d.segments = torch::zeros({n, max_len}, torch::kLong);
  auto x = d.inputs.accessor<int64_t, 2>();
  auto y = d.labels.accessor<int64_t, 2>();
  auto s = d.segments.accessor<int64_t, 2>();
  for (int64_t r = 0; r < n; ++r) {
    int64_t col = 0, seg = 0;
    for (size_t i : rows[r]) {
      put_example(examples[i], r, col, x, y);
      for (size_t t = 0; t < examples[i].ids.size(); ++t) s[r][col++] = seg;
      ++seg;
    }
    for (; col < max_len; ++col) s[r][col] = seg;  // the padding: a segment of its own
  }
  d.class_names = {"response"};
  return d;
}

namespace {

std::vector<ChatRecord> read_split(const ChatDataOptions& o, const std::string& path, const char* key) {
  if (!fs::exists(path)) throw Error(fmt::format("data.{}: {}: no such file or directory", key, path));
  ChatFileSpec spec = o.files();
  spec.path = path;
  auto records = read_chat_records(spec);
  if (records.empty()) throw Error(fmt::format("{}: no records", path));
  return records;
}

// A split's examples: rendered, cut to max_seq_len; `note` gets "N examples (C cut, D dropped)".
std::vector<RenderedChat> split_examples(const std::vector<ChatRecord>& records, const ChatDataOptions& o,
                                         const Tokenizer& tok, std::string& note) {
  std::vector<RenderedChat> examples;
  examples.reserve(records.size());
  int64_t cut = 0, dropped = 0;
  for (const auto& r : records) {
    examples.push_back(render_record(r, o.chat_template(), o.system(), tok));
    cut += static_cast<int64_t>(examples.back().ids.size()) > o.max_seq_len();
  }
  examples = truncate_examples(std::move(examples), o.max_seq_len(), &dropped);
  note = fmt::format("{} examples", examples.size());
  if (cut > 0) note += fmt::format(" ({} cut to {} tokens, {} of them dropped: no response token left)", cut, o.max_seq_len(), dropped);
  return examples;
}

}  // namespace

ImageSplits load_chat_data(const ChatDataOptions& o, const Tokenizer& tok, std::string* message) {
  if (o.max_seq_len() < 2) throw Error(fmt::format("chat data: max_seq_len {} is below 2", o.max_seq_len()));
  check_chat_template(o.chat_template(), tok);
  std::vector<ChatRecord> train = read_split(o, o.train_file(), "train_file"), val, test;
  if (!o.val_file().empty()) val = read_split(o, o.val_file(), "val_file");
  else if (o.val_fraction() > 0) std::tie(train, val) = split_records(train, o.val_fraction(), o.seed());
  if (!o.test_file().empty()) test = read_split(o, o.test_file(), "test_file");
  if (train.empty()) throw Error(fmt::format("{}: no training records left after holding out data.val_fraction", o.train_file()));

  const int64_t pad = chat_pad_id(tok);
  ImageSplits s;
  std::string note;
  auto train_ex = split_examples(train, o, tok, note);
  if (train_ex.empty())
    throw Error(fmt::format("{}: no training example keeps a response token within max_seq_len {}", o.train_file(), o.max_seq_len()));
  if (o.limit_train() > 0 && o.limit_train() < static_cast<int64_t>(train_ex.size())) {
    auto gen = seeded_generator(o.seed() + 17);
    auto idx = std::get<0>(torch::randperm(static_cast<int64_t>(train_ex.size()), gen, torch::kLong).slice(0, 0, o.limit_train()).sort());
    std::vector<RenderedChat> kept;
    for (int64_t i = 0; i < idx.numel(); ++i) kept.push_back(std::move(train_ex[idx[i].item<int64_t>()]));
    train_ex = std::move(kept);
    note += fmt::format(", {} kept (data.limit_train)", train_ex.size());
  }
  s.train = o.packing() ? packed_rows(train_ex, o.max_seq_len(), pad) : example_rows(train_ex, o.max_seq_len(), pad);
  std::string msg = fmt::format("chat data ({}): train {}{}", to_string(o.chat_template()), note,
                                o.packing() ? fmt::format(", packed into {} rows of {}", s.train.size(), o.max_seq_len()) : "");
  const std::pair<std::vector<ChatRecord>*, LabelledDataset*> held[] = {{&val, &s.val}, {&test, &s.test}};
  const char* names[] = {"val", "test"};
  for (size_t k = 0; k < 2; ++k) {
    if (held[k].first->empty()) continue;
    auto ex = split_examples(*held[k].first, o, tok, note);
    if (!ex.empty()) *held[k].second = example_rows(ex, o.max_seq_len(), pad);
    msg += fmt::format("; {} {}", names[k], note);
  }
  if (message) *message = msg;
  return s;
}

}  // namespace tunekit::data
