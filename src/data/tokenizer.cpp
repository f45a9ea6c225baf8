// Byte-level BPE as HF `tokenizers` runs it (normalizers/nfc, pre_tokenizers/split + byte_level,
// models/bpe, decoders/byte_level, added_vocabulary). Regexes run on PCRE2 with UTF + UCP so that
// \p{L}, \p{N}, \s and case-insensitive groups follow Unicode like Rust's `regex`/`onig`; NFC comes
// from ICU, never from our own tables.
#include "zlora/data/tokenizer.h"

#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/sha256.h"
#include "zlora/data/json_file.h"

#include <pcre2.h>
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>

#include <algorithm>
#include <array>
#include <climits>

namespace zlora::data {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------------
// UTF-8 helpers

namespace {

// Length of the well-formed UTF-8 sequence at s[i], or 0 if none starts there (Unicode Table 3-7).
size_t utf8_sequence_length(std::string_view s, size_t i) {
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

// Length of the maximal ill-formed prefix at s[i] that becomes one U+FFFD (Rust's from_utf8_lossy).
size_t invalid_prefix_length(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  size_t need = (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 1;
  size_t k = 1;
  for (; k < need && i + k < s.size(); ++k) {
    unsigned char lo = 0x80, hi = 0xBF;
    if (k == 1 && c == 0xE0) lo = 0xA0;
    if (k == 1 && c == 0xED) hi = 0x9F;
    if (k == 1 && c == 0xF0) lo = 0x90;
    if (k == 1 && c == 0xF4) hi = 0x8F;
    if (b(i + k) < lo || b(i + k) > hi) break;
  }
  return k;
}

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_sequence_length(s, i);
    if (n) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      i += invalid_prefix_length(s, i);
    }
  }
  return out;
}

void require_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_sequence_length(s, i);
    ZLORA_REQUIRE(n, "tokenizer input is not valid UTF-8 (byte {} of {}: 0x{:02X})", i, s.size(),
                  static_cast<unsigned char>(s[i]));
    i += n;
  }
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100..
// in byte order, so that every byte is a visible character in vocab strings.
struct ByteTable {
  std::array<std::string, 256> byte_to_char;  // UTF-8 of the mapped character
  std::unordered_map<uint32_t, uint8_t> char_to_byte;
  ByteTable() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      uint32_t cp = printable ? uint32_t(b) : uint32_t(256 + n++);
      append_utf8(byte_to_char[b], cp);
      char_to_byte[cp] = uint8_t(b);
    }
  }
};

const ByteTable& byte_table() {
  static const ByteTable table;  // immutable after construction
  return table;
}

// Decodes the UTF-8 code points of a (valid) string.
std::vector<uint32_t> code_points(std::string_view s) {
  std::vector<uint32_t> cps;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = s[i];
    size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < n && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    cps.push_back(cp);
    i += n;
  }
  return cps;
}

// ---------------------------------------------------------------------------------------------------
// PCRE2, owned

struct CodeDeleter {
  void operator()(pcre2_code* p) const { pcre2_code_free(p); }
};
struct MatchDataDeleter {
  void operator()(pcre2_match_data* p) const { pcre2_match_data_free(p); }
};
struct MatchContextDeleter {
  void operator()(pcre2_match_context* p) const { pcre2_match_context_free(p); }
};
struct JitStackDeleter {
  void operator()(pcre2_jit_stack* p) const { pcre2_jit_stack_free(p); }
};

class Regex {
 public:
  Regex(const std::string& pattern, const std::string& origin) {
    int err = 0;
    PCRE2_SIZE at = 0;
    code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err,
                              &at, nullptr));
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      fail("{}: pre_tokenizer regex does not compile at offset {}: {} (pattern: {})", origin, at,
           reinterpret_cast<const char*>(msg), pattern);
    }
    // JIT is an optimisation only: PCRE2 falls back to its interpreter where JIT is unavailable.
    pcre2_jit_compile(code_.get(), PCRE2_JIT_COMPLETE);
  }
  pcre2_code* get() const { return code_.get(); }

 private:
  std::unique_ptr<pcre2_code, CodeDeleter> code_;
};

}  // namespace

// Per-thread scratch for PCRE2 (match data, a JIT stack large enough for 10k-character whitespace runs)
// plus the word -> ids memo.
struct EncodeScratch {
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> match{pcre2_match_data_create(16, nullptr)};
  std::unique_ptr<pcre2_match_context, MatchContextDeleter> context{pcre2_match_context_create(nullptr)};
  std::unique_ptr<pcre2_jit_stack, JitStackDeleter> jit_stack{
      pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr)};
  EncodeScratch() {
    if (!match || !context || !jit_stack) fail("out of memory creating PCRE2 match state");
    pcre2_jit_stack_assign(context.get(), nullptr, jit_stack.get());
  }
};

BpeCache::BpeCache(size_t max_entries) : max_entries_(max_entries), scratch_(std::make_unique<EncodeScratch>()) {}
BpeCache::~BpeCache() = default;
BpeCache::BpeCache(BpeCache&&) noexcept = default;

const std::vector<int32_t>* BpeCache::find(std::string_view word) const {
  auto it = map_.find(word);
  return it == map_.end() ? nullptr : &it->second;
}

void BpeCache::insert(std::string_view word, std::vector<int32_t> ids) {
  if (map_.size() >= max_entries_) {  // a bound, not an LRU: pathological inputs only
    map_.clear();
    keys_.clear();
  }
  keys_.emplace_back(word);
  map_.emplace(std::string_view(keys_.back()), std::move(ids));
}

// ---------------------------------------------------------------------------------------------------

struct Tokenizer::Impl {
  std::string origin;
  std::string sha256;
  std::unordered_map<std::string, int32_t> vocab;  // model vocab + added tokens
  std::vector<std::string> id_to_token;            // "" for holes
  std::vector<bool> is_special;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (left,right) -> (rank, merged id)
  std::array<int32_t, 256> byte_ids{};
  bool ignore_merges = false;
  bool nfc = false;
  std::vector<Regex> splits;                  // applied in order, each with "Isolated" behaviour
  std::vector<AddedToken> added;              // as listed in tokenizer.json
  std::vector<size_t> added_raw, added_norm;  // indices into `added`: matched before / after NFC
  std::unordered_map<std::string, std::string> config_tokens;

  static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  std::vector<int32_t> bpe(std::string_view word) const;
  void encode_words(std::string_view normalized, std::vector<int32_t>& out, BpeCache& cache) const;
  void encode_segment(std::string_view raw, std::vector<int32_t>& out, BpeCache& cache) const;
  std::string normalize(std::string_view s) const;
};

namespace {

// HF's added-token word boundary test (single_word): alphanumeric or '_' on either side blocks a match.
bool is_word_byte(unsigned char c) { return std::isalnum(c) || c == '_' || c >= 0x80; }
bool is_space_byte(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

struct Piece {
  std::string_view text;
  int32_t token = -1;  // >= 0: an added token matched here
};

// Splits `s` around the added tokens `which` (leftmost, then longest match), honouring single_word,
// lstrip and rstrip as HF's AddedVocabulary does.
std::vector<Piece> split_added(std::string_view s, const std::vector<AddedToken>& added,
                               const std::vector<size_t>& which) {
  std::vector<Piece> out;
  if (which.empty()) {
    out.push_back({s, -1});
    return out;
  }
  size_t last = 0, pos = 0;
  while (pos < s.size()) {
    const AddedToken* best = nullptr;
    for (size_t k : which) {
      const AddedToken& t = added[k];
      if (t.content.empty() || t.content.size() > s.size() - pos) continue;
      if (s.compare(pos, t.content.size(), t.content) != 0) continue;
      if (best && best->content.size() >= t.content.size()) continue;
      if (t.single_word) {
        size_t end = pos + t.content.size();
        if ((pos > 0 && is_word_byte(s[pos - 1])) || (end < s.size() && is_word_byte(s[end]))) continue;
      }
      best = &t;
    }
    if (!best) {
      ++pos;
      continue;
    }
    size_t start = pos, end = pos + best->content.size();
    if (best->lstrip)
      while (start > last && is_space_byte(s[start - 1])) --start;
    if (best->rstrip)
      while (end < s.size() && is_space_byte(s[end])) ++end;
    if (start > last) out.push_back({s.substr(last, start - last), -1});
    out.push_back({s.substr(start, end - start), best->id});
    last = pos = end;
  }
  if (last < s.size()) out.push_back({s.substr(last), -1});
  return out;
}

}  // namespace

std::string Tokenizer::Impl::normalize(std::string_view s) const {
  if (!nfc) return std::string(s);
  bool ascii = std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (ascii) return std::string(s);  // ASCII is always NFC
  UErrorCode ec = U_ZERO_ERROR;
  const icu::Normalizer2* n = icu::Normalizer2::getNFCInstance(ec);
  if (U_FAILURE(ec)) fail("ICU NFC normalizer unavailable: {}", u_errorName(ec));
  icu::StringPiece sp(s.data(), static_cast<int32_t>(s.size()));
  if (n->isNormalizedUTF8(sp, ec) && U_SUCCESS(ec)) return std::string(s);
  std::string out;
  icu::StringByteSink<std::string> sink(&out);
  ec = U_ZERO_ERROR;
  n->normalizeUTF8(0, sp, sink, nullptr, ec);
  if (U_FAILURE(ec)) fail("NFC normalization failed: {}", u_errorName(ec));
  return out;
}

std::vector<int32_t> Tokenizer::Impl::bpe(std::string_view word) const {
  if (ignore_merges) {  // Llama-3 style: a word that is itself a token is never split
    auto it = vocab.find(std::string(word));
    if (it != vocab.end()) return {it->second};
  }
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  for (unsigned char c : word) ids.push_back(byte_ids[c]);
  // Repeatedly merge the lowest-ranked adjacent pair, all its non-overlapping occurrences left to
  // right (GPT-2's loop; HF's priority queue merges the same pairs in the same order).
  while (ids.size() > 1) {
    int32_t best_rank = INT32_MAX, best_a = 0, best_b = 0, merged = 0;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      auto it = merges.find(pair_key(ids[i], ids[i + 1]));
      if (it != merges.end() && it->second.first < best_rank) {
        best_rank = it->second.first;
        best_a = ids[i];
        best_b = ids[i + 1];
        merged = it->second.second;
      }
    }
    if (best_rank == INT32_MAX) break;
    size_t w = 0;
    for (size_t i = 0; i < ids.size();) {
      if (i + 1 < ids.size() && ids[i] == best_a && ids[i + 1] == best_b) {
        ids[w++] = merged;
        i += 2;
      } else {
        ids[w++] = ids[i++];
      }
    }
    ids.resize(w);
  }
  return ids;
}

void Tokenizer::Impl::encode_words(std::string_view text, std::vector<int32_t>& out, BpeCache& cache) const {
  // Pre-tokenize: each Split regex cuts every current piece into matches and the gaps between them.
  std::vector<std::string_view> pieces{text};
  EncodeScratch& scratch = cache.scratch();
  for (const Regex& re : splits) {
    std::vector<std::string_view> next;
    for (std::string_view p : pieces) {
      size_t last = 0, offset = 0;
      while (offset <= p.size()) {
        int rc = pcre2_match(re.get(), reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(), offset, PCRE2_NO_UTF_CHECK,
                             scratch.match.get(), scratch.context.get());
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          PCRE2_UCHAR msg[256];
          pcre2_get_error_message(rc, msg, sizeof msg);
          fail("{}: pre_tokenizer regex failed on a {}-byte piece: {}", origin, p.size(),
               reinterpret_cast<const char*>(msg));
        }
        PCRE2_SIZE* ov = pcre2_get_ovector_pointer(scratch.match.get());
        size_t s = ov[0], e = ov[1];
        if (e == s) {  // empty match: HF drops empty splits; step over one character
          if (s >= p.size()) break;
          offset = s + std::max<size_t>(1, utf8_sequence_length(p, s));
          continue;
        }
        if (s > last) next.push_back(p.substr(last, s - last));
        next.push_back(p.substr(s, e - s));
        last = offset = e;
      }
      if (last < p.size()) next.push_back(p.substr(last));
    }
    pieces = std::move(next);
  }
  for (std::string_view w : pieces) {
    if (const auto* hit = cache.find(w)) {
      out.insert(out.end(), hit->begin(), hit->end());
      continue;
    }
    std::vector<int32_t> ids = bpe(w);
    out.insert(out.end(), ids.begin(), ids.end());
    if (w.size() <= 256) cache.insert(w, std::move(ids));
  }
}

void Tokenizer::Impl::encode_segment(std::string_view raw, std::vector<int32_t>& out, BpeCache& cache) const {
  std::string normalized = normalize(raw);
  for (const Piece& p : split_added(normalized, added, added_norm)) {
    if (p.token >= 0)
      out.push_back(p.token);
    else
      encode_words(p.text, out, cache);
  }
}

// ---------------------------------------------------------------------------------------------------
// Loading

namespace {

std::string type_of(const json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : "";
}

bool flag(const json& j, const char* key, bool def) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return def;
  return j[key].get<bool>();
}

// The GPT-2 pre-tokenizer regex that ByteLevel applies when its use_regex is true.
const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::filesystem::path& path) {
  std::filesystem::path file = path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) file = path / "tokenizer.json";
  ZLORA_REQUIRE(std::filesystem::exists(file, ec),
                "tokenizer not found: {} does not exist (--tokenizer takes a model directory holding tokenizer.json, "
                "or the tokenizer.json file itself)",
                file.string());
  std::string text = fs::read_file(file);
  std::string config;
  auto config_path = file.parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(config_path, ec)) config = fs::read_file(config_path);
  return from_json(text, config, file.string());
}

Tokenizer Tokenizer::from_json(std::string_view text, std::string_view config_text, const std::string& origin) {
  auto impl = std::make_unique<Impl>();
  impl->origin = origin;
  impl->sha256 = sha256_hex(text);
  json j = parse_json(text, origin);
  ZLORA_REQUIRE(j.is_object() && j.contains("model") && j["model"].is_object(),
                "{}: not a Hugging Face tokenizer.json (no \"model\" object)", origin);
  try {
    // -- model
    const json& m = j["model"];
    std::string mtype = type_of(m);
    if (mtype.empty() && m.contains("merges")) mtype = "BPE";  // HF infers BPE from the merges key
    ZLORA_REQUIRE(mtype == "BPE", "{}: model type '{}' is not supported; zlora reads byte-level BPE tokenizers (BPE)",
                  origin, mtype);
    ZLORA_REQUIRE(!flag(m, "byte_fallback", false), "{}: BPE byte_fallback (SentencePiece-style) is not supported",
                  origin);
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      ZLORA_REQUIRE(!m.contains(key) || m[key].is_null() || m[key].get<std::string>().empty(),
                    "{}: BPE {} is not supported by a byte-level tokenizer", origin, key);
    ZLORA_REQUIRE(!m.contains("dropout") || m["dropout"].is_null() || m["dropout"].get<double>() == 0.0,
                  "{}: BPE dropout is not supported (tokenization would be random)", origin);
    impl->ignore_merges = flag(m, "ignore_merges", false);
    ZLORA_REQUIRE(m.contains("vocab") && m["vocab"].is_object(), "{}: model.vocab is missing", origin);
    int32_t max_id = -1;
    for (auto& [tok, id] : m["vocab"].items()) {
      int32_t i = id.get<int32_t>();
      ZLORA_REQUIRE(i >= 0, "{}: model.vocab['{}'] has negative id {}", origin, tok, i);
      impl->vocab[tok] = i;
      max_id = std::max(max_id, i);
    }
    // -- added tokens
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const json& a : j["added_tokens"]) {
        AddedToken t;
        t.id = a.at("id").get<int32_t>();
        t.content = a.at("content").get<std::string>();
        t.special = flag(a, "special", false);
        t.single_word = flag(a, "single_word", false);
        t.lstrip = flag(a, "lstrip", false);
        t.rstrip = flag(a, "rstrip", false);
        t.normalized = flag(a, "normalized", !t.special);
        impl->vocab[t.content] = t.id;
        max_id = std::max(max_id, t.id);
        impl->added.push_back(std::move(t));
      }
    }
    impl->id_to_token.assign(size_t(max_id + 1), std::string());
    impl->is_special.assign(size_t(max_id + 1), false);
    for (auto& [tok, id] : impl->vocab) impl->id_to_token[id] = tok;
    for (size_t k = 0; k < impl->added.size(); ++k) {
      const AddedToken& t = impl->added[k];
      impl->id_to_token[t.id] = t.content;
      impl->is_special[t.id] = t.special;
      (t.normalized ? impl->added_norm : impl->added_raw).push_back(k);
    }
    // -- byte alphabet
    const ByteTable& bt = byte_table();
    for (int b = 0; b < 256; ++b) {
      auto it = impl->vocab.find(bt.byte_to_char[b]);
      ZLORA_REQUIRE(it != impl->vocab.end(), "{}: not a byte-level BPE vocabulary: byte 0x{:02X} ('{}') has no token",
                    origin, b, bt.byte_to_char[b]);
      impl->byte_ids[b] = it->second;
    }
    // -- merges: "a b" strings (tokenizers < 0.20) or [a, b] pairs (newer files)
    ZLORA_REQUIRE(m.contains("merges") && m["merges"].is_array(), "{}: model.merges is missing", origin);
    int32_t rank = 0;
    for (const json& mg : m["merges"]) {
      std::string a, b;
      if (mg.is_string()) {
        const std::string& s = mg.get_ref<const std::string&>();
        auto sp = s.find(' ');
        ZLORA_REQUIRE(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos,
                      "{}: merge #{} '{}' is not two tokens separated by one space", origin, rank, s);
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else {
        ZLORA_REQUIRE(mg.is_array() && mg.size() == 2, "{}: merge #{} is neither \"a b\" nor [a, b]", origin, rank);
        a = mg[0].get<std::string>();
        b = mg[1].get<std::string>();
      }
      auto ia = impl->vocab.find(a), ib = impl->vocab.find(b), im = impl->vocab.find(a + b);
      ZLORA_REQUIRE(ia != impl->vocab.end() && ib != impl->vocab.end() && im != impl->vocab.end(),
                    "{}: merge #{} ('{}' + '{}') names a token missing from the vocabulary", origin, rank, a, b);
      impl->merges.emplace(Impl::pair_key(ia->second, ib->second), std::make_pair(rank, im->second));
      ++rank;
    }
    // -- normalizer
    const json& norm = j.contains("normalizer") ? j["normalizer"] : json();
    std::vector<json> norms;
    if (type_of(norm) == "Sequence")
      for (const json& n : norm.at("normalizers")) norms.push_back(n);
    else if (!norm.is_null())
      norms.push_back(norm);
    for (const json& n : norms) {
      ZLORA_REQUIRE(type_of(n) == "NFC", "{}: normalizer '{}' is not supported (supported: NFC, or none)", origin,
                    type_of(n));
      impl->nfc = true;
    }
    // -- pre-tokenizer: [Split(Regex, Isolated)...] then ByteLevel
    const json& pre = j.contains("pre_tokenizer") ? j["pre_tokenizer"] : json();
    std::vector<json> pres;
    if (type_of(pre) == "Sequence")
      for (const json& p : pre.at("pretokenizers")) pres.push_back(p);
    else if (!pre.is_null())
      pres.push_back(pre);
    bool byte_level = false;
    for (size_t k = 0; k < pres.size(); ++k) {
      const json& p = pres[k];
      std::string t = type_of(p);
      if (t == "Split") {
        ZLORA_REQUIRE(!byte_level, "{}: a Split after ByteLevel is not supported", origin);
        ZLORA_REQUIRE(p.contains("pattern") && p["pattern"].contains("Regex"),
                      "{}: Split pre_tokenizer with a String pattern is not supported (supported: Regex)", origin);
        std::string behavior = p.value("behavior", std::string("Isolated"));
        ZLORA_REQUIRE(behavior == "Isolated", "{}: Split behavior '{}' is not supported (supported: Isolated)", origin,
                      behavior);
        ZLORA_REQUIRE(!flag(p, "invert", false), "{}: Split with invert=true is not supported", origin);
        impl->splits.emplace_back(p["pattern"]["Regex"].get<std::string>(), origin);
      } else if (t == "ByteLevel") {
        ZLORA_REQUIRE(!flag(p, "add_prefix_space", false),
                      "{}: ByteLevel add_prefix_space=true is not supported (supported: false)", origin);
        if (flag(p, "use_regex", true)) impl->splits.emplace_back(kGpt2Pattern, origin);
        byte_level = true;
      } else {
        fail("{}: pre_tokenizer '{}' is not supported (supported: Sequence of Split(Regex, Isolated) and ByteLevel)",
             origin, t);
      }
    }
    ZLORA_REQUIRE(byte_level, "{}: the pre_tokenizer has no ByteLevel step; zlora reads byte-level BPE tokenizers only",
                  origin);
    // -- decoder
    const json& dec = j.contains("decoder") ? j["decoder"] : json();
    ZLORA_REQUIRE(type_of(dec) == "ByteLevel", "{}: decoder '{}' is not supported (supported: ByteLevel)", origin,
                  dec.is_null() ? "null" : type_of(dec));
  } catch (const json::exception& e) {
    fail("{}: unexpected tokenizer.json structure: {}", origin, e.what());
  }
  // -- tokenizer_config.json: names of bos/eos/pad (a string, or an AddedToken object)
  if (!config_text.empty()) {
    json c = parse_json(config_text, origin + " (tokenizer_config.json)");
    for (const char* key : {"bos_token", "eos_token", "pad_token", "unk_token"}) {
      if (!c.contains(key)) continue;
      const json& v = c[key];
      if (v.is_string())
        impl->config_tokens[key] = v.get<std::string>();
      else if (v.is_object() && v.contains("content"))
        impl->config_tokens[key] = v["content"].get<std::string>();
    }
  }
  return Tokenizer(std::move(impl));
}

// ---------------------------------------------------------------------------------------------------

std::vector<int32_t> Tokenizer::encode(std::string_view text, BpeCache* cache) const {
  require_utf8(text);
  BpeCache local(1 << 12);
  BpeCache& c = cache ? *cache : local;
  std::vector<int32_t> out;
  out.reserve(text.size() / 2 + 4);
  for (const Piece& p : split_added(text, impl_->added, impl_->added_raw)) {
    if (p.token >= 0)
      out.push_back(p.token);
    else
      impl_->encode_segment(p.text, out, c);
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const ByteTable& bt = byte_table();
  std::string bytes;
  for (int32_t id : ids) {
    const std::string& tok = id_to_token(id);
    if (skip_special_tokens && impl_->is_special[id]) continue;
    // ByteLevel decoder: map every character back to its byte; a token with a character outside the
    // table (an added token such as "<think> x") contributes its UTF-8 bytes unchanged.
    std::string mapped;
    bool ok = true;
    for (uint32_t cp : code_points(tok)) {
      auto it = bt.char_to_byte.find(cp);
      if (it == bt.char_to_byte.end()) {
        ok = false;
        break;
      }
      mapped += char(it->second);
    }
    bytes += ok ? mapped : tok;
  }
  return utf8_lossy(bytes);
}

size_t Tokenizer::vocab_size() const { return impl_->id_to_token.size(); }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->vocab.find(std::string(token));
  if (it == impl_->vocab.end()) return std::nullopt;
  return it->second;
}

const std::string& Tokenizer::id_to_token(int32_t id) const {
  ZLORA_REQUIRE(id >= 0 && size_t(id) < impl_->id_to_token.size() && !impl_->id_to_token[id].empty(),
                "token id {} is not in the vocabulary of {} (valid ids: 0..{})", id, impl_->origin,
                impl_->id_to_token.size() - 1);
  return impl_->id_to_token[id];
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }

std::optional<std::string> Tokenizer::config_token(const std::string& name) const {
  auto it = impl_->config_tokens.find(name);
  if (it == impl_->config_tokens.end()) return std::nullopt;
  return it->second;
}

const std::string& Tokenizer::sha256() const { return impl_->sha256; }
const std::string& Tokenizer::origin() const { return impl_->origin; }

}  // namespace zlora::data
