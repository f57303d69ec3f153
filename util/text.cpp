#include "util/text.h"

#include <algorithm>

namespace tunekit {

namespace {
bool glob_at(const char* p, const char* s) {
  for (; *p; ++p) {
    if (p[0] == '*' && p[1] == '*') {
      p += 2;
      for (const char* t = s;; ++t) {
        if (glob_at(p, t)) return true;
        if (!*t) return false;
      }
    }
    if (*p == '*') {
      ++p;
      for (const char* t = s;; ++t) {
        if (glob_at(p, t)) return true;
        if (!*t || *t == '.') return false;
      }
    }
    if (!*s) return false;
    if (*p != '?' && *p != *s) return false;
    if (*p == '?' && *s == '.') return false;
    ++s;
  }
  return *s == '\0';
}
}  // namespace

bool glob_match(const std::string& pattern, const std::string& name) {
  return glob_at(pattern.c_str(), name.c_str());
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  // Suggest only when at most about a third of the characters differ.
  size_t limit = std::max<size_t>(2, std::max(word.size(), best.size()) / 3);
  return best_d <= limit ? best : std::string();
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  std::string m = closest_match(word, candidates);
  return m.empty() ? std::string() : " (did you mean '" + m + "'?)";
}

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

std::string with_commas(long long n) {
  std::string digits = std::to_string(n < 0 ? -n : n);
  std::string out;
  int count = 0;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    if (count && count % 3 == 0) out.insert(out.begin(), ',');
    out.insert(out.begin(), *it);
    ++count;
  }
  return n < 0 ? "-" + out : out;
}

}  // namespace tunekit
