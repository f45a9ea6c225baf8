// The HDF5 token store written by `zlora prepare` and read by training (format: docs/data-format.md).
// Datasets: `input_ids` int32 [T], `labels` int32 [T] (-100 = masked), `offsets` int64 [n+1]; chunked and
// deflate-compressed. The reader loads the offsets (8 bytes a sample) and reads the tokens of the
// samples it is asked for with hyperslab selections, so a rank never holds the whole corpus.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace zlora::data {

// Version 2 records the store's full provenance (what it was made from, below); version 1 stores still
// open, with that provenance unknown.
constexpr int64_t kTokenStoreFormatVersion = 2;
constexpr int64_t kOldestTokenStoreFormatVersion = 1;

// Who wrote a store (StoreMeta::made_by): `zlora train` may rebuild a store it made itself at its default
// path when the run's data settings change; one made by `zlora prepare` is never replaced unasked.
inline constexpr const char* kMadeByPrepare = "zlora prepare";
inline constexpr const char* kMadeByTrain = "zlora train";

// One dataset of --dataset: its files and, from format 2, what identifies them.
struct StoreSource {
  std::string name;
  std::vector<std::string> files;    // format 2: as dataset_info.json's file_name names them (a folder's files as
                                     // "folder/file"); format 1: the paths read
  std::vector<std::string> sha256s;  // of each file's bytes
  int64_t rows = 0;                  // rows read (after max_samples)
  int64_t invalid = 0;               // rows dropped as abnormal (LLaMA-Factory's "Skipping this abnormal example")
  // Format 2 only (empty in a format-1 store):
  std::string dataset_info;        // the dataset's dataset_info.json entry as canonical JSON (sorted keys, compact)
  std::vector<int64_t> sizes;      // bytes of each file
  std::vector<int64_t> mtimes_ns;  // each file's modification time when it was hashed (a later run skips
                                   // re-hashing a file whose size and mtime are unchanged)
};

// The attributes of a store: what it was built from and how (docs/data-format.md). The fields up to
// `sources` are what a run's data settings are compared with (data/provenance.h).
struct StoreMeta {
  int64_t format_version = kTokenStoreFormatVersion;
  std::string zlora_version;
  std::string tokenizer_sha256;
  int64_t vocab_size = 0;
  std::string template_name;
  int64_t cutoff_len = 0;
  bool train_on_prompt = false;
  bool mask_history = false;
  bool enable_thinking = true;  // reasoning templates; an absent attribute (older stores) reads as true
  std::vector<StoreSource> sources;
  // Format 2 only (unset or empty in a format-1 store):
  std::optional<std::string> default_system;  // --default_system, when given
  std::optional<int64_t> max_samples;         // --max_samples, when given
  std::string tokenizer_config_sha256;        // of tokenizer_config.json beside tokenizer.json; "" when absent
  std::string made_by;                        // kMadeByPrepare or kMadeByTrain
  std::string dataset_dir;                    // where the datasets were read (shown, not compared)
  // Counts, filled by write_token_store from the data.
  int64_t num_samples = 0;
  int64_t num_tokens = 0;
  int64_t num_label_tokens = 0;  // labels != -100
  int64_t num_dropped = 0;       // rows dropped as abnormal

  // False for a format-1 store: it did not record default_system, max_samples, the tokenizer config, the
  // datasets' entries or their files' sizes, so what it was made from is unknown.
  bool provenance_known() const { return format_version >= 2; }
};

struct StoredSample {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> labels;
};

// Writes `samples` (concatenated: ids/labels flat, offsets) to `path` atomically (temp name, rename).
// meta's counts are filled from the data.
void write_token_store(const std::filesystem::path& path, const std::vector<int32_t>& input_ids,
                       const std::vector<int32_t>& labels, const std::vector<int64_t>& offsets, StoreMeta meta);

class TokenStore {
 public:
  // Opens and validates: datasets present with the right types and ranks, offsets monotone from 0 to
  // the token count, ids within the vocabulary on read. Any violation is a zlora::Error naming the file.
  explicit TokenStore(const std::filesystem::path& path);
  ~TokenStore();
  TokenStore(TokenStore&&) noexcept;
  TokenStore(const TokenStore&) = delete;
  TokenStore& operator=(const TokenStore&) = delete;

  size_t size() const { return offsets_.size() - 1; }
  std::vector<int64_t> lengths() const;
  int64_t length(size_t i) const { return offsets_.at(i + 1) - offsets_.at(i); }
  const StoreMeta& meta() const { return meta_; }
  const std::filesystem::path& path() const { return path_; }

  // The samples `indices` (any order, repeats allowed), read with hyperslabs.
  std::vector<StoredSample> read(const std::vector<size_t>& indices) const;

  // Refuses a store built with another tokenizer or template than the run's (both hashes named).
  void require_compatible(const std::string& tokenizer_sha256, const std::string& template_name) const;

 private:
  struct Handles;
  std::filesystem::path path_;
  std::unique_ptr<Handles> h_;
  std::vector<int64_t> offsets_;
  StoreMeta meta_;
};

}  // namespace zlora::data
