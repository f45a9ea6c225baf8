// A generated alpaca dataset for tests that need "some data" to tokenize or train on, so that the suite
// runs on a fresh clone with nothing beside it (no ../shared/data/huanhuan.json). Deterministic: the
// same count gives the same bytes on every machine and run. The rows mix Chinese and English, empty and
// non-empty inputs, multi-line outputs, quotes, backslashes and an emoji, and some rows are long enough
// that a short cutoff_len truncates them.
#pragma once

#include "test_util.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace zlora::test {

struct AlpacaRow {
  std::string instruction, input, output;
};

// `n` rows of generated alpaca data (row i depends only on i).
inline std::vector<AlpacaRow> generated_alpaca_rows(size_t n = 48) {
  static const char* const kSubjects[] = {"小姐",     "皇上",      "槿汐",       "the gardener", "a student",
                                          "华妃娘娘", "the court", "温实初太医", "眉姐姐",       "the cat"};
  static const char* const kVerbs[] = {"说",        "wrote",  "想起",  "asked about", "看见",
                                       "remembers", "听闻了", "sings", "送来了",      "explains"};
  static const char* const kObjects[] = {
      "御花园里的海棠花", "a letter from home", "碎玉轩的月色",        "the price of rice", "一支白玉簪子",
      "the first snow",   "\"倚梅园\"的传说",   "C:\\temp\\notes.txt", "这盏茶 🍵",          "three small boats"};
  static const char* const kReplies[] = {
      "嘘——都说许愿说破是不灵的。",      "Yes, and it was raining.", "臣妾做不到啊！",
      "Nobody knows; perhaps tomorrow.", "这件事，本宫自有分寸。",   "It is on the second shelf, behind the tea.",
      "逆风如解意，容易莫摧残。",        "Ask again after dinner."};
  std::vector<AlpacaRow> rows;
  uint32_t state = 20240607u;
  auto next = [&state](uint32_t bound) {
    state = state * 1664525u + 1013904223u;  // the Numerical Recipes LCG: the same everywhere
    return (state >> 8) % bound;
  };
  for (size_t i = 0; i < n; ++i) {
    AlpacaRow r;
    r.instruction = std::string(kSubjects[next(10)]) + " " + kVerbs[next(10)] + " " + kObjects[next(10)] +
                    (i % 2 ? "，是真的吗？" : ". What happened next?");
    if (i % 3 == 1) r.input = std::string("背景：") + kObjects[next(10)] + "\n(row " + std::to_string(i) + ")";
    const size_t sentences = 1 + next(3) + (i % 7 == 3 ? 12 : 0);  // every 7th row runs long
    for (size_t k = 0; k < sentences; ++k) r.output += std::string(k ? (k % 4 ? " " : "\n") : "") + kReplies[next(8)];
    rows.push_back(std::move(r));
  }
  return rows;
}

// `s` as a JSON string literal (the rows hold no control characters besides \n).
inline std::string json_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\')
      out += std::string("\\") + c;
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out + "\"";
}

inline std::string alpaca_json(const std::vector<AlpacaRow>& rows) {
  std::string out = "[\n";
  for (size_t i = 0; i < rows.size(); ++i)
    out += "  {\"instruction\": " + json_quote(rows[i].instruction) + ", \"input\": " + json_quote(rows[i].input) +
           ", \"output\": " + json_quote(rows[i].output) + "}" + (i + 1 < rows.size() ? ",\n" : "\n");
  return out + "]\n";
}

// Writes `n` generated rows to dir/<name>.json and a dataset_info.json naming them as dataset `name`
// (replacing any there). Returns the data file's path.
inline std::filesystem::path write_alpaca_dataset(const std::filesystem::path& dir, size_t n = 48,
                                                  const std::string& name = "gen") {
  const std::filesystem::path file = dir / (name + ".json");
  write_file(file, alpaca_json(generated_alpaca_rows(n)));
  write_file(dir / "dataset_info.json", "{\"" + name + "\": {\"file_name\": \"" + name + ".json\"}}\n");
  return file;
}

// True when ../shared (ZLORA_SHARED_DIR) holds `relative`: tests that compare against the seed's own
// files GTEST_SKIP() without it, saying why.
inline bool have_shared(const std::filesystem::path& relative) {
  std::error_code ec;
  return std::filesystem::exists(shared_dir() / relative, ec);
}

// A byte-level BPE tokenizer.json without merges: GPT-2's bytes_to_unicode vocabulary as ids 0-255
// (printable bytes map to themselves, the rest to U+0100 onwards), then `special_tokens` as added
// special tokens 256, 257, ... Small real tokenizers for the template and export tests.
inline std::string byte_level_tokenizer_json(const std::vector<std::string>& special_tokens) {
  using nlohmann::json;
  auto utf8 = [](uint32_t cp) {
    std::string s;
    if (cp < 0x80) {
      s.push_back(char(cp));
    } else {
      s.push_back(char(0xC0 | (cp >> 6)));
      s.push_back(char(0x80 | (cp & 0x3F)));
    }
    return s;
  };
  json vocab = json::object();
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool direct = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    vocab[utf8(direct ? uint32_t(b) : next++)] = b;
  }
  json added = json::array();
  int id = 256;
  for (const std::string& t : special_tokens)
    added.push_back({{"id", id++},
                     {"content", t},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  const json tok = {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}}};
  return tok.dump();
}

}  // namespace zlora::test

// Skips the current test when ../shared lacks `relative`, naming the path and `why` the test needs the
// seed's own file (not just some data). Use at the top of a TEST body.
#define ZLORA_SKIP_WITHOUT_SHARED(relative, why)                                                  \
  do {                                                                                            \
    if (!::zlora::test::have_shared(relative))                                                    \
      GTEST_SKIP() << (::zlora::test::shared_dir() / (relative)).string()                         \
                   << " is absent (no ../shared beside the checkout, ZLORA_SHARED_DIR): " << why; \
  } while (0)
