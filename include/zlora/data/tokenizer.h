// A byte-level BPE tokenizer read from a Hugging Face `tokenizer.json`, id-for-id equal to HF
// `tokenizers` for the GPT-2/Qwen2/Llama-3 family: NFC normalizer, Split(regex, Isolated) + ByteLevel
// pre-tokenizer, BPE model (vocab + ranked merges), ByteLevel decoder, added tokens matched before
// anything else. Anything outside that family is refused by name when the file is loaded, so a model
// whose ids would silently differ never gets tokenized.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace zlora::data {

struct EncodeScratch;

// Memo of pre-token -> ids plus PCRE2 match state and encoding buffers. Words repeat heavily in text, so
// BPE runs once per distinct word. One cache per thread: the Tokenizer itself is immutable and may be
// shared.
class BpeCache {
 public:
  explicit BpeCache(size_t max_entries = 1 << 18);
  ~BpeCache();
  BpeCache(BpeCache&&) noexcept;
  BpeCache(const BpeCache&) = delete;
  BpeCache& operator=(const BpeCache&) = delete;

  // The ids cached for `word` as [*first, *last), pointing into the cache (valid until the next insert);
  // false when `word` is not cached.
  bool find(std::string_view word, const int32_t** first, const int32_t** last) const;
  // `word` must be non-empty, `ids` its non-empty encoding.
  void insert(std::string_view word, const std::vector<int32_t>& ids);
  EncodeScratch& scratch() { return *scratch_; }

 private:
  // Flat storage, so that a miss costs no allocation once the buffers have grown: words and ids are
  // appended back to back to keys_ and ids_, and an open-addressing table (power-of-two size, at most
  // half full, linear probing) holds where each entry lies. ids_len == 0 marks an empty slot.
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_at = 0, key_len = 0, ids_at = 0, ids_len = 0;
  };
  size_t probe(std::string_view word, uint64_t hash) const;  // slot of `word`, or the empty one for it

  size_t max_entries_;
  size_t size_ = 0;
  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> ids_;
  std::unique_ptr<EncodeScratch> scratch_;
};

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

// The files Tokenizer::load reads for `path` (a model directory holding tokenizer.json, or the
// tokenizer.json file itself): tokenizer.json and the tokenizer_config.json beside it.
struct TokenizerFiles {
  std::filesystem::path tokenizer_json;
  std::filesystem::path config_json;  // may not exist
};
TokenizerFiles tokenizer_files(const std::filesystem::path& path);

class Tokenizer {
 public:
  // `path`: a model directory holding tokenizer.json (and optionally tokenizer_config.json, which names
  // the bos/eos/pad tokens), or a tokenizer.json file.
  static Tokenizer load(const std::filesystem::path& path);
  // From the JSON text itself (`origin` names it in error messages). `config_json` may be empty.
  static Tokenizer from_json(std::string_view tokenizer_json, std::string_view config_json, const std::string& origin);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Ids of `text` with add_special_tokens=False (no BOS/EOS added): what LLaMA-Factory asks for per slot.
  std::vector<int32_t> encode(std::string_view text, BpeCache* cache = nullptr) const;
  // Text of `ids`; ByteLevel bytes that do not form valid UTF-8 become U+FFFD (as HF does).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  size_t vocab_size() const;  // 1 + the largest id (model vocab and added tokens)
  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string& id_to_token(int32_t id) const;  // throws zlora::Error for an unknown id
  const std::vector<AddedToken>& added_tokens() const;

  // The token tokenizer_config.json names for `bos_token`/`eos_token`/`pad_token`, if any.
  std::optional<std::string> config_token(const std::string& name) const;
  // SHA-256 of tokenizer.json's bytes: the store records it, training compares it.
  const std::string& sha256() const;
  // SHA-256 of the tokenizer_config.json that load() read beside it (it names bos/eos, which templates
  // insert), "" when there was none.
  const std::string& config_sha256() const;
  const std::string& origin() const;  // path or name it was loaded from

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace zlora::data
