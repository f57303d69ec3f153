// Tokenizer speed (issue 16: at least 1 MB of text per second on one core): how many MB of text
// per second tunekit's encoder turns into ids, on the texts of JSONL files ("text" fields, e.g.
// the SpamAssassin splits), on one thread. "cold" is the first pass over the texts with a freshly
// loaded tokenizer (its cache of pre-token results empty), "warm" the best of --reps later passes.
// bench/run_tokenizer.sh runs it beside the npm encoders (tests/npm/encode.js --time) on the
// same text and prints the table.
//   bench_tokenizer --tokenizer PATH [--reps 3] [--cpu N] [--json] FILE.jsonl...
// --cpu N pins the process to CPU N (the script pins node to the same one).
#include <fmt/format.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "util/error.h"
#include "util/startup.h"

using namespace tunekit;
using Clock = std::chrono::steady_clock;

namespace {

const char* kUsage = "usage: bench_tokenizer --tokenizer PATH [--reps 3] [--cpu N] [--json] FILE.jsonl...\n";

struct Args {
  std::string tokenizer;
  std::vector<std::string> files;
  int reps = 3, cpu = -1;
  bool json = false;
};

Args parse_args(int argc, char** argv) {
  Args a;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw Error(fmt::format("{} needs a value\n{}", argv[i], kUsage));
    return argv[++i];
  };
  auto integer = [&](int& i) -> int {
    const std::string flag = argv[i], v = value(i);
    try {
      size_t used = 0;
      const int n = std::stoi(v, &used);
      if (used == v.size() && n >= 0) return n;
    } catch (const std::exception&) {
    }
    throw Error(fmt::format("{}: '{}' is not a non-negative integer", flag, v));
  };
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "--tokenizer") a.tokenizer = value(i);
    else if (f == "--reps") a.reps = integer(i);
    else if (f == "--cpu") a.cpu = integer(i);
    else if (f == "--json") a.json = true;
    else if (f.rfind("--", 0) == 0) throw Error(fmt::format("unknown argument '{}'\n{}", f, kUsage));
    else a.files.push_back(f);
  }
  if (a.tokenizer.empty() || a.files.empty()) throw Error(fmt::format("--tokenizer and a JSONL file are required\n{}", kUsage));
  if (a.reps < 1) throw Error("--reps must be at least 1");
  return a;
}

std::vector<std::string> read_texts(const std::vector<std::string>& files) {
  std::vector<std::string> texts;
  for (const auto& path : files) {
    std::ifstream in(path);
    if (!in) throw Error(fmt::format("{}: cannot open", path));
    std::string line;
    for (int64_t n = 1; std::getline(in, line); ++n) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
        throw Error(fmt::format("{}:{}: not a JSON object with a \"text\" string", path, n));
      texts.push_back(j["text"].get<std::string>());
    }
  }
  return texts;
}

struct Pass {
  double seconds = 0;
  int64_t tokens = 0;
  uint64_t digest = 1469598103934665603ull;  // FNV-1a over the ids: every pass must give the same
};

Pass encode_all(const data::Tokenizer& tok, const std::vector<std::string>& texts) {
  Pass p;
  const auto t0 = Clock::now();
  for (const auto& t : texts) {
    const auto ids = tok.encode(t);
    p.tokens += int64_t(ids.size());
    for (int64_t id : ids) p.digest = (p.digest ^ uint64_t(id)) * 1099511628211ull;
  }
  p.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return p;
}

int run(const Args& a) {
  if (a.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(a.cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) throw Error(fmt::format("--cpu {}: cannot pin to it", a.cpu));
  }
  const auto texts = read_texts(a.files);
  int64_t bytes = 0;
  for (const auto& t : texts) bytes += int64_t(t.size());
  const auto t0 = Clock::now();
  const auto tok = data::Tokenizer::load(a.tokenizer);
  const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const Pass cold = encode_all(tok, texts);
  Pass warm;
  warm.seconds = 1e300;
  for (int r = 0; r < a.reps; ++r) {
    Pass p = encode_all(tok, texts);
    if (p.digest != cold.digest || p.tokens != cold.tokens) throw Error("a later pass gave other ids than the first");
    if (p.seconds < warm.seconds) warm = p;
  }
  const double mb = double(bytes) / 1e6;
  if (a.json) {
    std::cout << nlohmann::json{{"encoder", "tunekit"}, {"kind", tok.kind()}, {"texts", texts.size()}, {"bytes", bytes},
                                {"tokens", cold.tokens}, {"load_s", load_s}, {"cold_s", cold.seconds},
                                {"warm_s", warm.seconds}}
                     .dump()
              << "\n";
  } else {
    std::cout << fmt::format("{} ({}): {} texts, {:.2f} MB, {} tokens; load {:.2f} s\n", a.tokenizer, tok.kind(),
                             texts.size(), mb, cold.tokens, load_s)
              << fmt::format("cold: {:.2f} s = {:.2f} MB/s\nwarm: {:.2f} s = {:.2f} MB/s (best of {})\n", cold.seconds,
                             mb / cold.seconds, warm.seconds, mb / warm.seconds, a.reps);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (!start_up(argv, "bench_tokenizer")) return 2;  // as tunekit's main (util/startup.h)
  try {
    return run(parse_args(argc, argv));
  } catch (const std::exception& e) {
    std::cerr << "bench_tokenizer: " << e.what() << "\n";
    return 1;
  }
}
