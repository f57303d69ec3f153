// The layers depend one way (docs/architecture.md): util/ at the bottom; models/, adapters/ and
// data/ on util/ only (models::Linear's adapter slot, adapters/adapter.h, is the one arrow from
// models/ to adapters/); src/ on everything. This test reads every #include under the four
// library folders and names each one that points the wrong way as file:line.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

struct Include {
  std::string file;  // relative to the source root
  int line;
  std::string target;
};

std::vector<Include> includes_under(const std::string& folder) {
  const fs::path root(TUNEKIT_SOURCE_DIR);
  static const std::regex include_re(R"(^\s*#\s*include\s*"([^"]+)\")");
  std::vector<Include> out;
  for (const auto& e : fs::recursive_directory_iterator(root / folder)) {
    const auto ext = e.path().extension();
    if (!e.is_regular_file() || (ext != ".h" && ext != ".cpp")) continue;
    std::ifstream in(e.path());
    std::string text;
    std::smatch m;
    for (int n = 1; std::getline(in, text); ++n)
      if (std::regex_search(text, m, include_re))
        out.push_back({fs::relative(e.path(), root).string(), n, m[1].str()});
  }
  return out;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// The includes under `folder` that start with one of `banned`, except `allowed`, as file:line lines.
std::string wrong_way(const std::string& folder, const std::vector<std::string>& banned,
                      const std::vector<std::string>& allowed = {}) {
  std::string found;
  for (const auto& inc : includes_under(folder)) {
    bool bad = false;
    for (const auto& b : banned) bad = bad || starts_with(inc.target, b);
    for (const auto& a : allowed) bad = bad && inc.target != a;
    if (bad) found += "  " + inc.file + ":" + std::to_string(inc.line) + ": includes \"" + inc.target + "\"\n";
  }
  return found;
}

}  // namespace

TEST(Layers, LibraryFoldersIncludeNothingFromSrc) {
  for (const char* folder : {"util", "models", "adapters", "data"})
    EXPECT_EQ(wrong_way(folder, {"src/"}), "") << folder << "/ must not include src/ (translate recipes in src/from_recipe/)";
}

TEST(Layers, UtilIsTheBottom) {
  EXPECT_EQ(wrong_way("util", {"models/", "adapters/", "data/"}), "");
}

TEST(Layers, ModelsReachAdaptersOnlyThroughTheAdapterSlot) {
  EXPECT_EQ(wrong_way("models", {"adapters/"}, {"adapters/adapter.h"}), "")
      << "models/ may include only adapters/adapter.h (the adapter slot of models::Linear)";
}

TEST(Layers, DataKnowsNoModelsOrAdapters) {
  EXPECT_EQ(wrong_way("data", {"models/", "adapters/"}), "");
}

TEST(Layers, TheScanSeesTheIncludes) {  // guards against a scan that silently reads nothing
  EXPECT_GT(includes_under("models").size(), 10u);
  EXPECT_GT(includes_under("adapters").size(), 10u);
}
