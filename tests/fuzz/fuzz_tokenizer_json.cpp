// Fuzz target: a Hugging Face tokenizer.json (optionally followed by a line
// "//tokenizer_config.json" and that file's text) loaded with Tokenizer::from_json; when it loads, a
// few fixed strings are encoded and decoded. Loading may fail only with zlora::Error; a loaded
// tokenizer must encode and decode without crashing, and every id it produces must decode.
#include "fuzz_util.h"
#include "zlora/core/error.h"
#include "zlora/data/tokenizer.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

// Real tokenizer.json files are a few MB; the fuzzer's inputs stay far below, so 1 MiB bounds the
// work per input without cutting off anything it would build.
constexpr size_t kMaxInput = size_t(1) << 20;
constexpr std::string_view kConfigMarker = "\n//tokenizer_config.json\n";

const char* const kTexts[] = {
    "Hello, world! It's 2026-11-25; x = 3.14 * r^2.\n\tindented  twice",
    "你好，世界！今天是二〇二六年十一月二十五日。",
    "emoji 🙂👍🏽 and 🇩🇪 flags, e\xCC\x81 (NFD) vs \xC3\xA9",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n</think>ok<|endoftext|>",
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n   trailing spaces   ",
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > kMaxInput) return 0;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string_view json = input, config;
  if (auto at = input.find(kConfigMarker); at != std::string_view::npos) {
    json = input.substr(0, at);
    config = input.substr(at + kConfigMarker.size());
  }
  std::optional<zlora::data::Tokenizer> tok;
  try {
    tok.emplace(zlora::data::Tokenizer::from_json(json, config, "fuzz/tokenizer.json"));
  } catch (const zlora::Error& e) {
    zlora::fuzz::refused(e);
    return 0;
  }
  zlora::fuzz::accepted("tokenizer");
  zlora::data::BpeCache cache(64);
  for (const char* text : kTexts) {
    std::vector<int32_t> ids;
    try {
      ids = tok->encode(text, &cache);
    } catch (const zlora::Error&) {
      continue;  // e.g. a regex that exceeds PCRE2's match limit: reported, not a crash
    }
    for (int32_t id : ids)
      if (id < 0 || size_t(id) >= tok->vocab_size()) std::abort();
    // Every id encode produced names a token, so decoding it cannot fail.
    try {
      tok->decode(ids);
      tok->decode(ids, /*skip_special_tokens=*/true);
    } catch (const zlora::Error&) {
      std::abort();
    }
    // The cache must give the same ids as a fresh encode.
    if (tok->encode(text) != ids) std::abort();
  }
  // Arbitrary ids (holes, out of range) are an error, never a crash.
  for (int32_t id : {-1, 0, 1, 255, 256, int32_t(tok->vocab_size()) - 1, int32_t(tok->vocab_size())}) {
    try {
      tok->decode({id});
    } catch (const zlora::Error&) {
    }
  }
  for (const auto& a : tok->added_tokens())
    if (!tok->token_to_id(a.content)) std::abort();
  for (const char* key : {"bos_token", "eos_token", "pad_token"}) tok->config_token(key);
  return 0;
}
