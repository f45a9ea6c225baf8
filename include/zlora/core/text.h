// Small string helpers shared by every parser: splitting, trimming, "did you mean" suggestions, and
// quoting untrusted input in error messages.
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

// Length of the well-formed UTF-8 sequence at s[i] (1-4), or 0 if none starts there (Unicode Table 3-7:
// no overlong forms, surrogates or values above U+10FFFF). Inline: the tokenizer calls it per byte.
inline size_t utf8_sequence_length(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  size_t n = s.size();
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return (i + 1 < n && (b(i + 1) & 0xC0) == 0x80) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (i + 2 >= n) return 0;
    unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    if (b(i + 1) < lo || b(i + 1) > hi || (b(i + 2) & 0xC0) != 0x80) return 0;
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (i + 3 >= n) return 0;
    unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    if (b(i + 1) < lo || b(i + 1) > hi || (b(i + 2) & 0xC0) != 0x80 || (b(i + 3) & 0xC0) != 0x80) return 0;
    return 4;
  }
  return 0;
}

// The longest excerpt of untrusted input an error message quotes by default.
constexpr size_t kMaxExcerptBytes = 120;

// `s` made safe to print in an error message that quotes untrusted input (a file's bytes, a key or value
// read from it): a garbage file must not put terminal escape sequences, other control characters or
// invalid UTF-8 on the user's terminal, nor a megabyte of text. Valid printable UTF-8 (Chinese included)
// is kept as it is; C0/C1 controls and DEL become \n, \r, \t, \xNN or \u{NNNN}; bidirectional overrides
// and isolates (U+202A-U+202E, U+2066-U+2069) and line/paragraph separators become \u{NNNN}, since they
// reorder or break what is shown; a byte that is not part of valid UTF-8 becomes \xNN. Beyond
// `max_bytes` of input the rest is cut at a character boundary and "... (N more bytes)" says how much
// was left out. Backslashes are kept (paths and regexes stay readable).
std::string printable(std::string_view s, size_t max_bytes = kMaxExcerptBytes);

}  // namespace zlora::text
