// Fuzz target: arbitrary bytes as an HDF5 token store, opened and read through the public reader
// (open, attributes, lengths, a few samples). The reader must turn every corrupted file into a
// zlora::Error; an accepted store's samples must match its offsets. Crashes inside libhdf5 on hostile
// files that no check in zlora can prevent are listed in docs/reliability.md.
#include "fuzz_util.h"
#include "zlora/core/error.h"
#include "zlora/data/token_store.h"

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace {

// Valid stores in the seed corpus are a few KB. 64 KiB bounds the work per input: the reader bounds
// every dataset by the bytes backing it (at most 1100x under deflate), so an input can make it read
// at most ~70 MB.
constexpr size_t kMaxInput = size_t(64) << 10;

// One scratch file per process, removed at exit.
class ScratchFile {
 public:
  ScratchFile() {
    std::string templ = (std::filesystem::temp_directory_path() / "zlora-fuzz-store-XXXXXX").string();
    int fd = mkstemp(templ.data());
    if (fd < 0) std::abort();
    close(fd);
    path_ = templ;
  }
  ~ScratchFile() { std::remove(path_.c_str()); }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void write_all(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  if (std::fclose(f) != 0) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > kMaxInput) return 0;
  static ScratchFile scratch;
  write_all(scratch.path(), data, size);
  try {
    zlora::data::TokenStore store(scratch.path());
    zlora::fuzz::accepted("token store");
    const size_t n = store.size();
    std::vector<int64_t> lengths = store.lengths();
    if (lengths.size() != n) std::abort();
    int64_t total = 0;
    for (int64_t l : lengths) {
      if (l < 0) std::abort();
      total += l;
    }
    if (total != store.meta().num_tokens) std::abort();
    try {
      store.require_compatible("0000", "default");
    } catch (const zlora::Error&) {
    }
    std::vector<size_t> indices{0, n - 1, n / 2, 0};
    try {
      std::vector<zlora::data::StoredSample> samples = store.read(indices);
      for (size_t k = 0; k < indices.size(); ++k) {
        const auto& s = samples[k];
        if (s.input_ids.size() != size_t(lengths[indices[k]]) || s.labels.size() != s.input_ids.size()) std::abort();
      }
    } catch (const zlora::Error& e) {
      zlora::fuzz::refused(e);
    }
    try {
      store.read({n});  // one past the end: an error, not a read
      std::abort();
    } catch (const zlora::Error&) {
    }
  } catch (const zlora::Error& e) {
    zlora::fuzz::refused(e);
  }
  return 0;
}
