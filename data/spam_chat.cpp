#include "data/spam_chat.h"

#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/manifest.h"
#include "data/md5.h"
#include "util/error.h"
#include "util/file.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace tunekit::data {
namespace {

constexpr const char* kSplits[] = {"train", "val", "test"};
constexpr const char* kRedo = "run `tunekit prepare spam_chat --force` to redo it";

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// Length of the UTF-8 sequence starting at s[i] when it is well formed, else 1 (one invalid byte).
size_t sequence_length(const std::string& s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
  if (i + n > s.size()) return 1;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 1;
  return n;
}

struct SourceMail {
  std::string id, label, text;
};

// One prepared split, verified against the SpamAssassin MANIFEST.json, as mails.
std::vector<SourceMail> read_split(const std::string& source, const std::string& name, std::string* md5) {
  const std::string mpath = (fs::path(source) / "MANIFEST.json").string();
  if (!fs::exists(mpath)) throw Error(fmt::format("{}: not found (run `tunekit prepare spam_assassin` first)", mpath));
  const std::string path = (fs::path(source) / name).string();
  const std::string bytes = read_verified(path, manifest_entry(read_manifest(mpath), mpath, name), mpath,
                                          "run `tunekit prepare spam_assassin --force` to redo it");
  *md5 = md5_hex(bytes);
  std::vector<SourceMail> mails;
  std::istringstream in(bytes);
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (trim(line).empty()) continue;
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) throw Error(fmt::format("{}:{}: not a JSON object", path, n));
    for (const char* key : {"id", "label", "text"})
      if (!j.contains(key) || !j[key].is_string()) throw Error(fmt::format("{}:{}: {}: missing or not a string", path, n, key));
    SourceMail m{j["id"].get<std::string>(), j["label"].get<std::string>(), j["text"].get<std::string>()};
    if (m.label != "spam" && m.label != "ham")
      throw Error(fmt::format("{}:{}: label: '{}' is not spam or ham", path, n, m.label));
    mails.push_back(std::move(m));
  }
  return mails;
}

void write_checked(const fs::path& dest, const std::string& name, const std::string& out, int64_t records, json& files) {
  write_file_atomic((dest / name).string(), out);
  files[name] = {{"md5", md5_hex(out)}, {"bytes", out.size()}, {"records", records}};
}

// The files a prepared directory holds besides MANIFEST.json.
std::vector<std::string> chat_files() {
  return {"train.jsonl", "val.jsonl", "test.jsonl", "test_spam.jsonl", "test_subject.jsonl"};
}

}  // namespace

std::string cut_characters(const std::string& text, int64_t max_chars) {
  size_t i = 0;
  for (int64_t chars = 0; i < text.size() && chars < max_chars; ++chars) i += sequence_length(text, i);
  return text.substr(0, i);
}

std::vector<SpamChatExample> spam_chat_examples(const std::string& id, const std::string& label,
                                                const std::string& text, int64_t max_chars) {
  std::vector<SpamChatExample> out;
  const std::string mail = trim(text);
  out.push_back({id, "spam", fmt::format("{}\n\n{}", kSpamQuestion, trim(cut_characters(mail, max_chars))), label});
  const std::string head = "Subject:";
  if (mail.compare(0, head.size(), head) != 0) return out;
  const size_t eol = mail.find('\n');
  const std::string subject = trim(mail.substr(head.size(), eol == std::string::npos ? std::string::npos : eol - head.size()));
  const std::string body = eol == std::string::npos ? "" : trim(mail.substr(eol + 1));
  if (subject.empty() || body.empty()) return out;
  out.push_back({id, "subject", fmt::format("{}\n\n{}", kSubjectQuestion, trim(cut_characters(body, max_chars))), subject});
  return out;
}

std::string spam_chat_line(const SpamChatExample& e) {
  json j{{"id", e.id},
         {"task", e.task},
         {"messages", json::array({json{{"role", "user"}, {"content", e.prompt}},
                                   json{{"role", "assistant"}, {"content", e.answer}}})}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

void check_spam_chat(const std::string& dir) {
  const std::string mpath = (fs::path(dir) / "MANIFEST.json").string();
  if (!fs::exists(mpath)) throw Error(fmt::format("{}: not found (run `tunekit prepare spam_chat`)", mpath));
  const json m = read_manifest(mpath);
  for (const auto& name : chat_files())
    read_verified((fs::path(dir) / name).string(), manifest_entry(m, mpath, name), mpath, kRedo);
}

std::string prepare_spam_chat(const SpamChatOptions& o) {
  if (o.max_chars < 1) throw Error(fmt::format("spam_chat: max_chars must be at least 1, not {}", o.max_chars));
  std::vector<std::vector<SourceMail>> splits;
  json source_md5 = json::object();
  for (const char* s : kSplits) {
    std::string md5;
    splits.push_back(read_split(o.source, std::string(s) + ".jsonl", &md5));
    source_md5[std::string(s) + ".jsonl"] = md5;
  }
  const fs::path dest(o.dest);
  const std::string mpath = (dest / "MANIFEST.json").string();
  if (!o.force && fs::exists(mpath)) {
    try {
      check_spam_chat(o.dest);
      const json m = read_manifest(mpath);
      if (m.value("source_md5", json()) == source_md5 && m.value("max_chars", json()) == json(o.max_chars))
        return fmt::format("spam_chat: {} is prepared and intact (from {}); kept. Use --force to redo.", o.dest, o.source);
    } catch (const Error&) {  // damaged or from other mails: made again below
    }
  }
  fs::create_directories(dest);
  json manifest{{"source", o.source}, {"source_md5", source_md5}, {"max_chars", o.max_chars},
                {"spam_question", kSpamQuestion}, {"subject_question", kSubjectQuestion}, {"files", json::object()}};
  std::string summary = fmt::format("spam_chat: chat records from {} (mails cut to {} characters)\n", o.source, o.max_chars);
  std::string test_spam, test_subject;
  int64_t n_spam = 0, n_subject = 0;
  for (size_t s = 0; s < splits.size(); ++s) {
    std::string out;
    int64_t records = 0, subjects = 0;
    for (const auto& mail : splits[s])
      for (const auto& e : spam_chat_examples(mail.id, mail.label, mail.text, o.max_chars)) {
        const std::string line = spam_chat_line(e);
        out += line;
        ++records;
        subjects += e.task == "subject";
        if (s == 2 && e.task == "spam") {
          test_spam += line;
          ++n_spam;
        } else if (s == 2) {
          test_subject += line;
          ++n_subject;
        }
      }
    write_checked(dest, std::string(kSplits[s]) + ".jsonl", out, records, manifest["files"]);
    summary += fmt::format("  {:<5} {} mails: {} records ({} spam/ham, {} subject)\n", kSplits[s], splits[s].size(),
                           records, records - subjects, subjects);
  }
  write_checked(dest, "test_spam.jsonl", test_spam, n_spam, manifest["files"]);
  write_checked(dest, "test_subject.jsonl", test_subject, n_subject, manifest["files"]);
  write_file_atomic(mpath, manifest.dump(2) + "\n");
  summary += fmt::format("wrote {}/{{train,val,test,test_spam,test_subject}}.jsonl", o.dest);
  return summary;
}

}  // namespace tunekit::data
