// Byte-level BPE as HF `tokenizers` runs it (normalizers/nfc, pre_tokenizers/split + byte_level,
// models/bpe, decoders/byte_level, added_vocabulary). Regexes run on PCRE2 with UTF + UCP so that
// \p{L}, \p{N}, \s and case-insensitive groups follow Unicode like Rust's `regex`/`onig`; NFC comes
// from ICU, never from our own tables.
#include "zlora/data/tokenizer.h"

#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/sha256.h"
#include "zlora/core/text.h"
#include "zlora/data/json_file.h"

#include <pcre2.h>
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>

#include <algorithm>
#include <array>
#include <climits>
#include <utility>

namespace zlora::data {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------------
// UTF-8 helpers

namespace {

using text::utf8_sequence_length;

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
    // NEVER_BACKSLASH_C: \C matches one byte of a character, and a match ending mid-character would make
    // the next pcre2_match (run with NO_UTF_CHECK) start inside one, which PCRE2 leaves undefined.
    code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C, &err, &at, nullptr));
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      fail("{}: pre_tokenizer regex does not compile at offset {}: {} (pattern: {})", origin, at,
           reinterpret_cast<const char*>(msg), text::printable(pattern, 400));
    }
    // JIT is an optimisation only: PCRE2 falls back to its interpreter where JIT is unavailable.
    pcre2_jit_compile(code_.get(), PCRE2_JIT_COMPLETE);
  }
  pcre2_code* get() const { return code_.get(); }

 private:
  std::unique_ptr<pcre2_code, CodeDeleter> code_;
};

// Merge (rank, merged id) keyed by the pair of token ids (left << 32 | right). BPE looks up every
// adjacent pair of every word, so this is the innermost lookup of encoding: an open-addressing table
// (power-of-two size, linear probing, one multiply to hash) costs a few loads where std::unordered_map
// costs a modulo and a pointer chase per probe. Built once at load, read-only afterwards.
class MergeTable {
 public:
  struct Merge {
    int32_t rank;
    int32_t id;
  };

  // Keeps the first merge of a pair listed twice (the lower rank), as the former map's emplace did.
  void insert(uint64_t key, int32_t rank, int32_t id) {
    // Load factor <= 3/4 keeps probe runs short while the table stays small: Qwen's 151k merges fill
    // 262k slots (4 MiB), and lookups are bound by cache misses, so a smaller table is a faster one.
    if (4 * (size_ + 1) > 3 * slots_.size()) grow();
    Slot* s = probe(key);
    if (s->key == kEmpty) {
      *s = {key, {rank, id}};
      ++size_;
    }
  }
  const Merge* find(uint64_t key) const {
    if (slots_.empty()) return nullptr;
    const Slot* s = probe(key);
    return s->key == kEmpty ? nullptr : &s->merge;
  }

 private:
  struct Slot {
    uint64_t key;
    Merge merge;
  };
  // Token ids are < 2^31, so no real key has all 64 bits set.
  static constexpr uint64_t kEmpty = ~uint64_t(0);

  size_t slot_of(uint64_t key) const {
    // Fibonacci hashing: the multiply mixes both ids into the high bits, which pick the slot.
    return size_t((key * 0x9E3779B97F4A7C15ull) >> shift_);
  }
  // The slot holding `key`, or the empty slot where it would go.
  Slot* probe(uint64_t key) { return const_cast<Slot*>(std::as_const(*this).probe(key)); }
  const Slot* probe(uint64_t key) const {
    size_t mask = slots_.size() - 1;
    for (size_t i = slot_of(key);; i = (i + 1) & mask)
      if (slots_[i].key == key || slots_[i].key == kEmpty) return &slots_[i];
  }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    size_t n = std::max<size_t>(64, 2 * old.size());
    slots_.assign(n, Slot{kEmpty, {0, 0}});
    shift_ = 64 - __builtin_ctzll(n);
    for (const Slot& s : old)
      if (s.key != kEmpty) *probe(s.key) = s;
  }

  std::vector<Slot> slots_;
  size_t size_ = 0;
  int shift_ = 64;
};

}  // namespace

// One symbol of a word being merged by BPE: a token id in a doubly linked list over the word's bytes
// (HF's models/bpe/word.rs). A symbol merged into its left neighbour is marked dead, not erased.
struct BpeSymbol {
  int32_t id;
  int32_t prev, next;  // indices into the symbol array, -1 at either end
  bool alive;
};
// A candidate merge of the symbol at `pos` with its right neighbour.
struct BpeMerge {
  int32_t rank;
  int32_t pos;
  int32_t id;           // merged token id
  int32_t left, right;  // the pair's token ids when it was queued
};

// Per-thread scratch for PCRE2 (match data, a JIT stack large enough for 10k-character whitespace runs)
// and the buffers of pre-tokenization and BPE, reused from call to call so that encoding a text does
// not allocate in the steady state.
struct EncodeScratch {
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> match{pcre2_match_data_create(16, nullptr)};
  std::unique_ptr<pcre2_match_context, MatchContextDeleter> context{pcre2_match_context_create(nullptr)};
  std::unique_ptr<pcre2_jit_stack, JitStackDeleter> jit_stack{
      pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr)};
  std::vector<BpeSymbol> symbols;
  std::vector<BpeMerge> heap;
  std::vector<std::string_view> pieces, next_pieces;
  std::vector<int32_t> word_ids;
  std::string mapped_word;  // a word in byte-level characters, for the ignore_merges vocab lookup
  EncodeScratch() {
    if (!match || !context || !jit_stack) fail("out of memory creating PCRE2 match state");
    pcre2_jit_stack_assign(context.get(), nullptr, jit_stack.get());
  }
};

BpeCache::BpeCache(size_t max_entries) : max_entries_(max_entries), scratch_(std::make_unique<EncodeScratch>()) {}
BpeCache::~BpeCache() = default;
BpeCache::BpeCache(BpeCache&&) noexcept = default;

// The slot of `word`, or the empty slot where it would go.
size_t BpeCache::probe(std::string_view word, uint64_t hash) const {
  size_t mask = slots_.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (s.ids_len == 0) return i;
    if (s.hash == hash && s.key_len == word.size() && keys_.compare(s.key_at, s.key_len, word) == 0) return i;
  }
}

bool BpeCache::find(std::string_view word, const int32_t** first, const int32_t** last) const {
  if (slots_.empty()) return false;
  const Slot& s = slots_[probe(word, std::hash<std::string_view>()(word))];
  if (s.ids_len == 0) return false;
  *first = ids_.data() + s.ids_at;
  *last = *first + s.ids_len;
  return true;
}

void BpeCache::insert(std::string_view word, const std::vector<int32_t>& ids) {
  if (ids.empty()) return;      // ids_len == 0 marks an empty slot (and no non-empty word encodes to nothing)
  if (size_ >= max_entries_) {  // a bound, not an LRU: pathological inputs only
    std::fill(slots_.begin(), slots_.end(), Slot{});
    keys_.clear();
    ids_.clear();
    size_ = 0;
  }
  if (2 * (size_ + 1) > slots_.size()) {  // grow: re-place every entry in a table twice the size
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(std::max<size_t>(1024, 2 * old.size()), Slot{});
    for (const Slot& s : old)
      if (s.ids_len) slots_[probe(std::string_view(keys_).substr(s.key_at, s.key_len), s.hash)] = s;
  }
  uint64_t hash = std::hash<std::string_view>()(word);
  Slot& s = slots_[probe(word, hash)];
  if (s.ids_len) return;  // already cached
  s = {hash, uint32_t(keys_.size()), uint32_t(word.size()), uint32_t(ids_.size()), uint32_t(ids.size())};
  keys_.append(word);
  ids_.insert(ids_.end(), ids.begin(), ids.end());
  ++size_;
}

// ---------------------------------------------------------------------------------------------------

struct Tokenizer::Impl {
  std::string origin;
  std::string sha256;
  std::string config_sha256;                       // "" without a tokenizer_config.json
  std::unordered_map<std::string, int32_t> vocab;  // model vocab + added tokens
  std::vector<std::string> id_to_token;            // "" for holes
  std::vector<bool> is_special;
  std::vector<bool> in_model_vocab;  // by id: listed in model.vocab (not only in added_tokens)
  MergeTable merges;                 // pair_key(left, right) -> (rank, merged id)
  std::array<int32_t, 256> byte_ids{};
  bool ignore_merges = false;
  bool nfc = false;
  std::vector<Regex> splits;                  // applied in order, each with "Isolated" behaviour
  std::vector<AddedToken> added;              // as listed in tokenizer.json
  std::vector<size_t> added_raw, added_norm;  // indices into `added`: matched before / after NFC
  std::unordered_map<std::string, std::string> config_tokens;

  static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  void bpe(std::string_view word, EncodeScratch& scratch, std::vector<int32_t>& ids) const;
  void encode_words(std::string_view normalized, std::vector<int32_t>& out, BpeCache& cache) const;
  void encode_segment(std::string_view raw, std::vector<int32_t>& out, BpeCache& cache) const;
  std::string_view normalize(std::string_view s, std::string& storage) const;
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
  // Only a position whose byte starts some added token can match: skip the others without comparing
  // against every token (Qwen's 26 added tokens all start with '<', which Chinese prose rarely holds).
  std::array<bool, 256> starts{};
  for (size_t k : which)
    if (!added[k].content.empty()) starts[static_cast<unsigned char>(added[k].content[0])] = true;
  size_t last = 0, pos = 0;
  while (pos < s.size()) {
    if (!starts[static_cast<unsigned char>(s[pos])]) {
      ++pos;
      continue;
    }
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

// NFC of `s`: `s` itself when it is already NFC (nearly always), else the normalized text in `storage`.
std::string_view Tokenizer::Impl::normalize(std::string_view s, std::string& storage) const {
  if (!nfc) return s;
  bool ascii = std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (ascii) return s;  // ASCII is always NFC
  UErrorCode ec = U_ZERO_ERROR;
  const icu::Normalizer2* n = icu::Normalizer2::getNFCInstance(ec);
  if (U_FAILURE(ec)) fail("ICU NFC normalizer unavailable: {}", u_errorName(ec));
  icu::StringPiece sp(s.data(), static_cast<int32_t>(s.size()));
  if (n->isNormalizedUTF8(sp, ec) && U_SUCCESS(ec)) return s;
  storage.clear();
  icu::StringByteSink<std::string> sink(&storage);
  ec = U_ZERO_ERROR;
  n->normalizeUTF8(0, sp, sink, nullptr, ec);
  if (U_FAILURE(ec)) fail("NFC normalization failed: {}", u_errorName(ec));
  return storage;
}

void Tokenizer::Impl::bpe(std::string_view word, EncodeScratch& scratch, std::vector<int32_t>& ids) const {
  ids.clear();
  if (ignore_merges) {  // Llama-3 style: a word that is itself a token is never split
    // HF (models/bpe/model.rs, tokenize_with_cache) looks the word up as the model sees it, after the
    // ByteLevel pre-tokenizer: in byte-level characters (" việc" -> "Ġviá»ĩc"), and in the model's own
    // vocab only, not among the added tokens.
    std::string& mapped = scratch.mapped_word;
    mapped.clear();
    const ByteTable& bt = byte_table();
    for (char c : word) mapped += bt.byte_to_char[static_cast<unsigned char>(c)];
    auto it = vocab.find(mapped);
    if (it != vocab.end() && in_model_vocab[size_t(it->second)]) {
      ids.push_back(it->second);
      return;
    }
  }
  // HF's merge loop (models/bpe/word.rs, merge_all): a min-heap of candidate merges ordered by (rank,
  // position) over a linked list of symbols, one symbol per byte to start with. Each step merges the
  // lowest-ranked pair, leftmost first, and queues the two pairs the merged symbol now forms with its
  // neighbours: O(n log n) in the word's length, where rescanning all pairs after every merge is O(n^2)
  // (and a whole Chinese sentence is one pre-token).
  std::vector<BpeSymbol>& sym = scratch.symbols;
  std::vector<BpeMerge>& heap = scratch.heap;
  const int32_t n = int32_t(word.size());
  sym.resize(size_t(n));
  for (int32_t i = 0; i < n; ++i)
    sym[size_t(i)] = {byte_ids[static_cast<unsigned char>(word[size_t(i)])], i - 1, i + 1 < n ? i + 1 : -1, true};
  // std::*_heap keep the largest element on top, so "later" means larger rank, then larger position.
  auto later = [](const BpeMerge& a, const BpeMerge& b) { return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos; };
  heap.clear();
  // Appends the merge of (left, right) at `pos` to `heap`, if the pair has one.
  auto candidate = [&](int32_t pos, int32_t left, int32_t right) {
    const MergeTable::Merge* m = merges.find(pair_key(left, right));
    if (m) heap.push_back({m->rank, pos, m->id, left, right});
    return m != nullptr;
  };
  for (int32_t i = 0; i + 1 < n; ++i) candidate(i, sym[size_t(i)].id, sym[size_t(i + 1)].id);
  std::make_heap(heap.begin(), heap.end(), later);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    BpeMerge top = heap.back();
    heap.pop_back();
    BpeSymbol& left = sym[size_t(top.pos)];
    if (!left.alive || left.next < 0) continue;
    // Skip a stale candidate, one of whose symbols has merged since it was queued: HF looks the pair up
    // again and compares the merged id with the queued one. An unchanged pair gives the same answer, so
    // only a changed one needs the lookup (each lookup is a likely cache miss in a 4 MiB table).
    BpeSymbol& right = sym[size_t(left.next)];
    if (left.id != top.left || right.id != top.right) {
      const MergeTable::Merge* now = merges.find(pair_key(left.id, right.id));
      if (!now || now->id != top.id) continue;
    }
    left.id = top.id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) sym[size_t(right.next)].prev = top.pos;
    // The merged symbol forms new pairs with both neighbours.
    if (left.prev >= 0 && candidate(left.prev, sym[size_t(left.prev)].id, left.id))
      std::push_heap(heap.begin(), heap.end(), later);
    if (left.next >= 0 && candidate(top.pos, left.id, sym[size_t(left.next)].id))
      std::push_heap(heap.begin(), heap.end(), later);
  }
  for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = sym[size_t(i)].next) ids.push_back(sym[size_t(i)].id);
}

void Tokenizer::Impl::encode_words(std::string_view text, std::vector<int32_t>& out, BpeCache& cache) const {
  // Pre-tokenize: each Split regex cuts every current piece into matches and the gaps between them.
  EncodeScratch& scratch = cache.scratch();
  std::vector<std::string_view>& pieces = scratch.pieces;
  std::vector<std::string_view>& next = scratch.next_pieces;
  pieces.assign(1, text);
  for (const Regex& re : splits) {
    next.clear();
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
    pieces.swap(next);
  }
  std::vector<int32_t>& ids = scratch.word_ids;
  for (std::string_view w : pieces) {
    const int32_t *first, *last;
    if (cache.find(w, &first, &last)) {
      out.insert(out.end(), first, last);
      continue;
    }
    bpe(w, scratch, ids);
    out.insert(out.end(), ids.begin(), ids.end());
    if (w.size() <= 256) cache.insert(w, ids);
  }
}

void Tokenizer::Impl::encode_segment(std::string_view raw, std::vector<int32_t>& out, BpeCache& cache) const {
  std::string storage;
  std::string_view normalized = normalize(raw, storage);
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

// A token id as tokenizer.json writes it: an integer in [0, 2^31). (get<int32_t> would truncate a
// larger one, or hit undefined behaviour on a float such as 1e300.)
int32_t token_id(const json& v, const std::string& origin, const std::string& what) {
  ZLORA_REQUIRE(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= INT32_MAX,
                "{}: {} must be a token id (an integer in [0, 2^31)), got {}", origin, what,
                text::printable(v.dump(-1, ' ', false, json::error_handler_t::replace)));
  return int32_t(v.get<int64_t>());
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

TokenizerFiles tokenizer_files(const std::filesystem::path& path) {
  std::error_code ec;
  TokenizerFiles f;
  f.tokenizer_json = std::filesystem::is_directory(path, ec) ? path / "tokenizer.json" : path;
  f.config_json = f.tokenizer_json.parent_path() / "tokenizer_config.json";
  return f;
}

Tokenizer Tokenizer::load(const std::filesystem::path& path) {
  const TokenizerFiles files = tokenizer_files(path);
  const std::filesystem::path& file = files.tokenizer_json;
  std::error_code ec;
  ZLORA_REQUIRE(std::filesystem::exists(file, ec),
                "tokenizer not found: {} does not exist (--tokenizer takes a model directory holding tokenizer.json, "
                "or the tokenizer.json file itself)",
                file.string());
  // Real tokenizer.json files are 2-35 MB; the caps stop a wrong path (a weights file) being slurped.
  std::string text = fs::read_file(file, size_t(256) << 20);
  std::string config;
  const bool have_config = std::filesystem::exists(files.config_json, ec);
  if (have_config) config = fs::read_file(files.config_json, size_t(16) << 20);
  Tokenizer tok = from_json(text, config, file.string());
  if (have_config) tok.impl_->config_sha256 = sha256_hex(config);
  return tok;
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
                  origin, text::printable(mtype));
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
      int32_t i = token_id(id, origin, "model.vocab['" + text::printable(tok) + "']");
      impl->vocab[tok] = i;
      max_id = std::max(max_id, i);
    }
    // -- added tokens
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const json& a : j["added_tokens"]) {
        AddedToken t;
        t.id = token_id(a.at("id"), origin, "added_tokens[].id");
        t.content = a.at("content").get<std::string>();
        ZLORA_REQUIRE(!t.content.empty(), "{}: added token {} has empty content", origin, t.id);
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
    // id_to_token is indexed by id: a hostile id such as 2^31-1 must not size it. Real files number their
    // tokens densely (Qwen2: 151665 tokens, largest id 151664), so ids beyond twice the token count plus
    // a margin are refused rather than allocated.
    const size_t n_tokens = impl->vocab.size() + impl->added.size();
    ZLORA_REQUIRE(max_id < 0 || size_t(max_id) < 2 * n_tokens + 65536,
                  "{}: token id {} is far beyond the {} tokens defined (ids must number the vocabulary densely)",
                  origin, max_id, n_tokens);
    impl->id_to_token.assign(size_t(max_id + 1), std::string());
    impl->is_special.assign(size_t(max_id + 1), false);
    impl->in_model_vocab.assign(size_t(max_id + 1), false);
    for (auto& [tok, id] : m["vocab"].items()) impl->in_model_vocab[size_t(id.get<int64_t>())] = true;
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
                      "{}: merge #{} '{}' is not two tokens separated by one space", origin, rank, text::printable(s));
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else {
        ZLORA_REQUIRE(mg.is_array() && mg.size() == 2, "{}: merge #{} is neither \"a b\" nor [a, b]", origin, rank);
        a = mg[0].get<std::string>();
        b = mg[1].get<std::string>();
      }
      auto ia = impl->vocab.find(a), ib = impl->vocab.find(b), im = impl->vocab.find(a + b);
      ZLORA_REQUIRE(ia != impl->vocab.end() && ib != impl->vocab.end() && im != impl->vocab.end(),
                    "{}: merge #{} ('{}' + '{}') names a token missing from the vocabulary", origin, rank,
                    text::printable(a), text::printable(b));
      impl->merges.insert(Impl::pair_key(ia->second, ib->second), rank, im->second);
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
                    text::printable(type_of(n)));
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
                      text::printable(behavior));
        ZLORA_REQUIRE(!flag(p, "invert", false), "{}: Split with invert=true is not supported", origin);
        impl->splits.emplace_back(p["pattern"]["Regex"].get<std::string>(), origin);
      } else if (t == "ByteLevel") {
        ZLORA_REQUIRE(!flag(p, "add_prefix_space", false),
                      "{}: ByteLevel add_prefix_space=true is not supported (supported: false)", origin);
        if (flag(p, "use_regex", true)) impl->splits.emplace_back(kGpt2Pattern, origin);
        byte_level = true;
      } else {
        fail("{}: pre_tokenizer '{}' is not supported (supported: Sequence of Split(Regex, Isolated) and ByteLevel)",
             origin, text::printable(t));
      }
    }
    ZLORA_REQUIRE(byte_level, "{}: the pre_tokenizer has no ByteLevel step; zlora reads byte-level BPE tokenizers only",
                  origin);
    // -- decoder
    const json& dec = j.contains("decoder") ? j["decoder"] : json();
    ZLORA_REQUIRE(type_of(dec) == "ByteLevel", "{}: decoder '{}' is not supported (supported: ByteLevel)", origin,
                  dec.is_null() ? "null" : text::printable(type_of(dec)));
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
      else if (v.is_object() && v.contains("content")) {
        ZLORA_REQUIRE(v["content"].is_string(), "{} (tokenizer_config.json): {}.content must be a string", origin, key);
        impl->config_tokens[key] = v["content"].get<std::string>();
      }
    }
  }
  return Tokenizer(std::move(impl));
}

// ---------------------------------------------------------------------------------------------------

std::vector<int32_t> Tokenizer::encode(std::string_view text, BpeCache* cache) const {
  require_utf8(text);
  // A cache of our own only when the caller has none: creating one maps a PCRE2 JIT stack (an mmap and
  // a munmap per call, which cost as much as encoding a short text).
  std::optional<BpeCache> local;
  if (!cache) local.emplace(1 << 12);
  BpeCache& c = cache ? *cache : *local;
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
const std::string& Tokenizer::config_sha256() const { return impl_->config_sha256; }
const std::string& Tokenizer::origin() const { return impl_->origin; }

}  // namespace zlora::data
