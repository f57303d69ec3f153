// Tokenizers against Hugging Face's own `tokenizers` library: a directory named by
// TUNEKIT_HF_TOKENIZER_REFERENCE holds texts.json ({"texts": [...]}) and, per tokenizer, a folder
// with the tokenizer.json (+ tokenizer_config.json) that `tokenizers` wrote and ids.json
// ({"ids": [[...], ...], "decoded": [...]}) that it produced for those texts (see README: "Checked
// against Hugging Face tokenizers"). tunekit must load each folder and give identical ids and
// decodings. Skipped when the variable is unset: the reference is made on a machine that has the
// Python libraries, which this one does not.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/tokenizer.h"

namespace fs = std::filesystem;
using namespace tunekit;

namespace {
nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}
}  // namespace

TEST(HfTokenizerReference, IdsAndDecodingsMatchHuggingFaceTokenizers) {
  const char* env = std::getenv("TUNEKIT_HF_TOKENIZER_REFERENCE");
  if (!env || !*env) GTEST_SKIP() << "TUNEKIT_HF_TOKENIZER_REFERENCE is not set (a directory of Hugging Face reference outputs)";
  const fs::path root(env);
  const auto texts = read_json(root / "texts.json").at("texts").get<std::vector<std::string>>();
  int folders = 0;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (!fs::exists(entry.path() / "ids.json") || !fs::exists(entry.path() / "tokenizer.json")) continue;
    ++folders;
    const auto ref = read_json(entry.path() / "ids.json");
    const auto ids = ref.at("ids").get<std::vector<std::vector<int64_t>>>();
    ASSERT_EQ(ids.size(), texts.size()) << entry.path();
    const auto tok = data::Tokenizer::load(entry.path().string());
    int64_t mismatched = 0, tokens = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      const auto got = tok.encode(texts[i]);
      tokens += static_cast<int64_t>(got.size());
      if (got != ids[i]) {
        if (++mismatched <= 3) ADD_FAILURE() << entry.path().filename() << ": text " << i << " differs (" << got.size() << " vs " << ids[i].size() << " ids): " << texts[i].substr(0, 80);
      }
      if (ref.contains("decoded")) EXPECT_EQ(tok.decode(ids[i]), ref["decoded"][i].get<std::string>()) << entry.path().filename() << ": decode of text " << i;
    }
    int64_t reference_tokens = 0;
    for (const auto& row : ids) reference_tokens += static_cast<int64_t>(row.size());
    EXPECT_GT(reference_tokens, 0) << entry.path().filename() << ": the reference holds no token (a broken reference)";
    EXPECT_EQ(mismatched, 0) << entry.path().filename() << ": " << mismatched << " of " << texts.size() << " texts differ";
    std::cout << entry.path().filename().string() << ": " << texts.size() << " texts, " << tokens << " tokens, " << mismatched << " differ\n";
  }
  EXPECT_GT(folders, 0) << root << " holds no tokenizer folder with ids.json";
}
