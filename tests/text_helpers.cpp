#include "tests/text_helpers.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "data/md5.h"

namespace fs = std::filesystem;

namespace tunekit::testkit {

SyntheticCorpus synthetic_mails(int n, unsigned seed) {
  static const std::vector<std::string> ham{"meeting", "project", "schedule", "review", "notes", "agenda", "kernel",
                                            "patch", "release", "thanks", "tomorrow", "draft"};
  static const std::vector<std::string> spam{"free", "money", "offer", "click", "winner", "cash", "viagra", "loan",
                                             "cheap", "prize", "urgent", "guaranteed"};
  static const std::vector<std::string> shared{"the", "a", "for", "you", "we", "this", "is", "and", "to", "of", "in", "it"};
  std::mt19937 rng(seed);
  SyntheticCorpus c;
  for (int i = 0; i < n; ++i) {
    bool is_spam = rng() % 2;
    const auto& pool = is_spam ? spam : ham;
    std::string text = is_spam ? "Subject: Re offer" : "Subject: Re meeting";
    int words = 8 + static_cast<int>(rng() % 16);
    for (int w = 0; w < words; ++w) {
      bool own = rng() % 3 != 0;
      const auto& p = own ? pool : shared;
      text += " " + p[rng() % p.size()];
    }
    text += is_spam ? " now!" : ".";
    c.texts.push_back(text);
    c.labels.push_back(is_spam ? "spam" : "ham");
    c.groups.push_back(std::string(is_spam ? "spam-" : "ham-") + (rng() % 2 ? "a" : "b"));
  }
  return c;
}

void write_jsonl(const std::string& path, const SyntheticCorpus& c, int begin, int end) {
  std::ofstream out(path);
  for (int i = begin; i < end; ++i)
    out << nlohmann::json{{"text", c.texts[i]}, {"label", c.labels[i]}, {"group", c.groups[i]}}.dump() << "\n";
}

std::string write_spam_package(const std::string& dir, int per_group) {
  const std::vector<std::string> groups{"easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2"};
  auto corpus = synthetic_mails(per_group * 5, 11);
  int k = 0;
  for (const auto& g : groups) {
    fs::path gdir = fs::path(dir) / "package" / "data" / g;
    fs::create_directories(gdir);
    for (int i = 0; i < per_group; ++i, ++k) {
      // Mails 7 and 13 of spam-1 repeat mail 3's subject and body under other headers.
      int src = (g == "spam-1" && (i == 7 || i == 13)) ? k - i + 3 : k;
      std::string body = corpus.texts[src].substr(corpus.texts[src].find(' ', 9) + 1);
      std::string raw = fmt::format("From x@example.com  Mon Jan 1 00:00:{:02d} 2002\nReceived: by host{}\n"
                                    "Subject: {}\n\n{}\n", i % 60, k, g.rfind("spam", 0) == 0 ? "Offer" : "Meeting", body);
      std::string id = fmt::format("{:05d}", i + 1);
      std::string md5 = data::md5_hex(raw);
      std::ofstream(gdir / (id + "." + md5 + ".txt"), std::ios::binary) << raw;
      std::ofstream(gdir / (id + "." + md5 + ".json"))
          << nlohmann::json{{"id", id}, {"group", g}, {"checksum", {{"type", "MD5"}, {"value", md5}}}, {"text", raw}}.dump();
    }
  }
  return dir;
}

std::string tiny_text_recipe_yaml(const std::string& data_dir, const std::string& runs_dir, const std::string& task,
                                  const std::string& extra) {
  const bool lm = task == "causal_lm";
  return fmt::format(R"(seed: 2
threads: {{torch: 1, blas: 1}}
model: {{kind: text, task: {task}, vocab_size: 400, max_seq_len: 32, dim: 32, depth: 2, heads: 2, mlp_ratio: 2.0{classes}}}
data:
  dataset: text
  train_file: "{dir}/train.jsonl"
  val_file: "{dir}/val.jsonl"
  test_file: "{dir}/test.jsonl"
  {group}batch_size: 16
  eval_batch_size: 32
optimizer: {{lr: 3.0e-3}}
schedule: {{kind: cosine, warmup_steps: 5}}
train: {{epochs: {epochs}, log_every: 5}}
output: {{dir: "{runs}", name: tiny_{task}}}
{extra})",
                     fmt::arg("task", task), fmt::arg("classes", lm ? "" : ", num_classes: 2"), fmt::arg("dir", data_dir),
                     fmt::arg("group", lm ? "" : "group_field: group\n  "), fmt::arg("epochs", lm ? 12 : 6),
                     fmt::arg("runs", runs_dir), fmt::arg("extra", extra));
}

}  // namespace tunekit::testkit
