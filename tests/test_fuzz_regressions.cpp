// The fuzz targets' inputs in the normal build: every seed (fuzz/corpus/<target>/) and every input
// a fuzzing run found a bug with (fuzz/regressions/<target>/) goes through the same entry point
// as the libFuzzer target (fuzz/entry_points.h) and must end in success or tunekit::Error.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "fuzz/entry_points.h"

namespace fs = std::filesystem;
using namespace tunekit;

namespace {

std::vector<fs::path> inputs_of(const fs::path& dir) {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::string bytes_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `target` on every file of `dir`; returns how many there were.
size_t run_all(const std::string& name, fuzz::Target target, const fs::path& dir) {
  const auto files = inputs_of(dir);
  for (const auto& f : files) {
    try {
      target(bytes_of(f));
    } catch (const Error&) {
      // the accepted outcome for bad input
    } catch (const std::exception& e) {
      ADD_FAILURE() << name << ": " << f.string() << ": escaped as " << typeid(e).name() << ": " << e.what();
    } catch (...) {
      ADD_FAILURE() << name << ": " << f.string() << ": a non-std exception escaped";
    }
  }
  return files.size();
}

}  // namespace

TEST(FuzzRegressions, SeedsAndFoundInputsEndInSuccessOrError) {
  const fs::path root = fs::path(TUNEKIT_SOURCE_DIR) / "fuzz";
  for (const auto& [name, target] : fuzz::targets()) {
    SCOPED_TRACE(name);
    EXPECT_GT(run_all(name, target, root / "corpus" / name), 0u) << "no seeds in fuzz/corpus/" << name;
    run_all(name, target, root / "regressions" / name);
  }
}

// Every target has a libFuzzer executable and a seed corpus, and nothing else sits in the folders.
TEST(FuzzRegressions, EveryTargetHasItsFiles) {
  const fs::path root = fs::path(TUNEKIT_SOURCE_DIR) / "fuzz";
  for (const auto& [name, target] : fuzz::targets()) {
    EXPECT_TRUE(fs::exists(root / ("fuzz_" + name + ".cpp"))) << name;
    EXPECT_TRUE(fs::is_directory(root / "corpus" / name)) << name;
  }
  for (const char* sub : {"corpus", "regressions"})
    if (fs::is_directory(root / sub))
      for (const auto& e : fs::directory_iterator(root / sub))
        EXPECT_TRUE(fuzz::targets().count(e.path().filename().string())) << "fuzz/" << sub << "/" << e.path().filename();
}
