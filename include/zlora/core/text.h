// Small string helpers shared by every parser: splitting, trimming, and "did you mean" suggestions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace zlora::text {

std::string trim(std::string_view s);
std::vector<std::string> split(std::string_view s, char sep, bool skip_empty = true);
std::string join(const std::vector<std::string>& parts, std::string_view sep);
bool starts_with(std::string_view s, std::string_view prefix);
bool ends_with(std::string_view s, std::string_view suffix);
std::string lower(std::string_view s);

// Levenshtein edit distance (used for "did you mean" suggestions).
size_t edit_distance(std::string_view a, std::string_view b);

// The candidate closest to `word`, or "" when none is close enough to be a plausible typo.
std::string nearest(std::string_view word, const std::vector<std::string>& candidates);

// ", did you mean 'x'?" or "" — appended to "unknown X" messages.
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates);

// Strict numeric parsing: the whole string must be consumed. Return false on failure.
bool parse_int64(std::string_view s, long long& out);
bool parse_double(std::string_view s, double& out);
// LLaMA-Factory / HF boolean forms: true/false, True/False, yes/no, 1/0, on/off (case-insensitive).
bool parse_bool(std::string_view s, bool& out);

}  // namespace zlora::text
