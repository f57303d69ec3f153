#include "data/hf_tokenizer.h"

#include <fmt/format.h>

#include <filesystem>

#include "util/error.h"

namespace fs = std::filesystem;

namespace tunekit::data {

bool is_hf_tokenizer(const std::string& path) {
  const fs::path p(path);
  if (fs::is_directory(p)) return fs::exists(p / "tokenizer.json") || (fs::exists(p / "vocab.json") && fs::exists(p / "merges.txt"));
  const std::string name = p.filename().string();
  return name.size() >= 5 && name.substr(name.size() - 5) == ".json";
}

Tokenizer load_hf_tokenizer(const std::string& path) {
  throw Error(fmt::format("{}: Hugging Face tokenizers are not read yet (issue 16 in progress)", path));
}

void read_special_tokens(const std::string& /*dir*/, const TokenizerBackend& /*tok*/, SpecialTokens& /*special*/) {}

}  // namespace tunekit::data
