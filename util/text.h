// Small string utilities shared by the recipe parser, adapter targeting and the CLI:
// glob matching for module-name patterns and "did you mean" suggestions.
#pragma once
#include <string>
#include <vector>

namespace tunekit {

// Glob over dotted module names: '*' matches any run of characters within one
// dot-separated segment, '**' matches across segments, '?' one character.
bool glob_match(const std::string& pattern, const std::string& name);

// Levenshtein distance.
size_t edit_distance(const std::string& a, const std::string& b);

// The candidate closest to `word`, or "" when nothing is close enough to suggest.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

// " (did you mean 'x'?)" or "".
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);

std::string join(const std::vector<std::string>& parts, const std::string& sep);

// Human-readable integer with thousands separators: 1234567 -> "1,234,567".
std::string with_commas(long long n);

}  // namespace tunekit
