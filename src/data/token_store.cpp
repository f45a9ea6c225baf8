#include "zlora/data/token_store.h"

#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/text.h"
#include "zlora/data/json_file.h"

#include <hdf5.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>

namespace zlora::data {

namespace {

// One owned HDF5 identifier; the close function matches its kind (file, dataset, space, ...).
class Hid {
 public:
  using Closer = herr_t (*)(hid_t);
  Hid() = default;
  Hid(hid_t id, Closer close) : id_(id), close_(close) {}
  Hid(Hid&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = H5I_INVALID_HID; }
  Hid& operator=(Hid&& o) noexcept {
    std::swap(id_, o.id_);
    std::swap(close_, o.close_);
    return *this;
  }
  Hid(const Hid&) = delete;
  ~Hid() {
    if (id_ >= 0 && close_) close_(id_);
  }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer close_ = nullptr;
};

// HDF5 prints its error stack to stderr by default; zlora reports errors itself. Scoped, restored after.
class QuietHdf5 {
 public:
  QuietHdf5() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietHdf5() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

void check(herr_t rc, const std::string& what, const std::filesystem::path& path) {
  ZLORA_REQUIRE(rc >= 0, "HDF5 error: {} ({})", what, path.string());
}

// The longest string attribute read (the 'sources' JSON of thousands of files is well under 1 MiB).
constexpr size_t kMaxStringAttribute = size_t(16) << 20;

// An attribute is read into one value: H5Aread writes every element of its dataspace, so a hostile
// attribute of 1000 elements read into one int64 would overrun it.
void require_scalar(hid_t attr, const char* name, const std::filesystem::path& path) {
  Hid space(H5Aget_space(attr), H5Sclose);
  ZLORA_REQUIRE(space.valid() && H5Sget_simple_extent_npoints(space.get()) == 1,
                "{}: attribute '{}' must hold a single value", path.string(), name);
}

// -- attributes on the root group

void put_string(hid_t loc, const char* name, const std::string& value, const std::filesystem::path& path) {
  Hid type(H5Tcopy(H5T_C_S1), H5Tclose);
  check(H5Tset_size(type.get(), std::max<size_t>(1, value.size())), "string type", path);
  Hid space(H5Screate(H5S_SCALAR), H5Sclose);
  Hid attr(H5Acreate2(loc, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  ZLORA_REQUIRE(attr.valid(), "HDF5 error: cannot create attribute '{}' in {}", name, path.string());
  std::string buf = value.empty() ? std::string(1, '\0') : value;
  check(H5Awrite(attr.get(), type.get(), buf.data()), std::string("write attribute ") + name, path);
}

void put_int(hid_t loc, const char* name, int64_t value, const std::filesystem::path& path) {
  Hid space(H5Screate(H5S_SCALAR), H5Sclose);
  Hid attr(H5Acreate2(loc, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  ZLORA_REQUIRE(attr.valid(), "HDF5 error: cannot create attribute '{}' in {}", name, path.string());
  check(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), std::string("write attribute ") + name, path);
}

std::string get_string(hid_t loc, const char* name, const std::filesystem::path& path) {
  ZLORA_REQUIRE(H5Aexists(loc, name) > 0,
                "{}: not a zlora token store (attribute '{}' is missing); rebuild it with "
                "`zlora prepare`",
                path.string(), name);
  Hid attr(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
  ZLORA_REQUIRE(attr.valid(), "{}: cannot open attribute '{}' (corrupted file?)", path.string(), name);
  require_scalar(attr.get(), name, path);
  Hid type(H5Aget_type(attr.get()), H5Tclose);
  ZLORA_REQUIRE(H5Tget_class(type.get()) == H5T_STRING && H5Tis_variable_str(type.get()) == 0,
                "{}: attribute '{}' is not a fixed-length string", path.string(), name);
  size_t n = H5Tget_size(type.get());
  ZLORA_REQUIRE(n > 0 && n <= kMaxStringAttribute, "{}: attribute '{}' has an implausible size ({} bytes)",
                path.string(), name, n);
  std::string buf(n, '\0');
  check(H5Aread(attr.get(), type.get(), buf.data()), std::string("read attribute ") + name, path);
  buf.resize(strnlen(buf.data(), buf.size()));
  return buf;
}

int64_t get_int(hid_t loc, const char* name, const std::filesystem::path& path) {
  ZLORA_REQUIRE(H5Aexists(loc, name) > 0,
                "{}: not a zlora token store (attribute '{}' is missing); rebuild it with "
                "`zlora prepare`",
                path.string(), name);
  Hid attr(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
  ZLORA_REQUIRE(attr.valid(), "{}: cannot open attribute '{}' (corrupted file?)", path.string(), name);
  require_scalar(attr.get(), name, path);
  Hid type(H5Aget_type(attr.get()), H5Tclose);
  ZLORA_REQUIRE(H5Tget_class(type.get()) == H5T_INTEGER, "{}: attribute '{}' is not an integer", path.string(), name);
  int64_t v = 0;
  check(H5Aread(attr.get(), H5T_NATIVE_INT64, &v), std::string("read attribute ") + name, path);
  return v;
}

// -- datasets

template <typename T>
void write_dataset(hid_t file, const char* name, hid_t file_type, hid_t mem_type, const std::vector<T>& data,
                   const std::filesystem::path& path) {
  hsize_t n = data.size();
  Hid space(H5Screate_simple(1, &n, nullptr), H5Sclose);
  Hid dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (n > 0) {
    hsize_t chunk = std::min<hsize_t>(n, 1 << 16);  // 256 KiB of int32: a few samples per chunk read
    check(H5Pset_chunk(dcpl.get(), 1, &chunk), "set chunk", path);
    check(H5Pset_shuffle(dcpl.get()), "set shuffle", path);
    check(H5Pset_deflate(dcpl.get(), 4), "set deflate", path);
  }
  Hid ds(H5Dcreate2(file, name, file_type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), H5Dclose);
  ZLORA_REQUIRE(ds.valid(), "HDF5 error: cannot create dataset '{}' in {}", name, path.string());
  if (n > 0)
    check(H5Dwrite(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()), std::string("write ") + name, path);
}

}  // namespace

void write_token_store(const std::filesystem::path& path, const std::vector<int32_t>& input_ids,
                       const std::vector<int32_t>& labels, const std::vector<int64_t>& offsets, StoreMeta meta) {
  ZLORA_REQUIRE(input_ids.size() == labels.size() && offsets.size() >= 2 && offsets.front() == 0 &&
                    offsets.back() == int64_t(input_ids.size()),
                "internal: inconsistent token store contents for {}", path.string());
  ZLORA_REQUIRE(meta.made_by == kMadeByPrepare || meta.made_by == kMadeByTrain,
                "internal: token store {} without a maker ('{}')", path.string(), meta.made_by);
  nlohmann::json sources = nlohmann::json::array();
  for (const auto& s : meta.sources) {
    const size_t n = s.files.size();
    ZLORA_REQUIRE(s.sha256s.size() == n && s.sizes.size() == n && s.mtimes_ns.size() == n,
                  "internal: dataset '{}' of token store {} has {} files but {} hashes, {} sizes, {} times", s.name,
                  path.string(), n, s.sha256s.size(), s.sizes.size(), s.mtimes_ns.size());
    nlohmann::json entry = nlohmann::json::parse(s.dataset_info, nullptr, false);
    ZLORA_REQUIRE(entry.is_object(), "internal: dataset '{}' of token store {} has no dataset_info.json entry", s.name,
                  path.string());
    sources.push_back({{"name", s.name},
                       {"dataset_info", entry},
                       {"files", s.files},
                       {"sha256", s.sha256s},
                       {"sizes", s.sizes},
                       {"mtimes_ns", s.mtimes_ns},
                       {"rows", s.rows},
                       {"invalid", s.invalid}});
  }
  meta.format_version = kTokenStoreFormatVersion;
  meta.num_samples = int64_t(offsets.size() - 1);
  meta.num_tokens = int64_t(input_ids.size());
  meta.num_label_tokens = std::count_if(labels.begin(), labels.end(), [](int32_t l) { return l != -100; });
  QuietHdf5 quiet;
  std::filesystem::path tmp = fs::temp_sibling(path);
  {
    Hid file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    ZLORA_REQUIRE(file.valid(), "cannot create {} (is the folder writable?)", tmp.string());
    write_dataset(file.get(), "input_ids", H5T_STD_I32LE, H5T_NATIVE_INT32, input_ids, path);
    write_dataset(file.get(), "labels", H5T_STD_I32LE, H5T_NATIVE_INT32, labels, path);
    write_dataset(file.get(), "offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, offsets, path);
    hid_t root = file.get();
    put_int(root, "format_version", meta.format_version, path);
    put_string(root, "zlora_version", meta.zlora_version, path);
    put_string(root, "tokenizer_sha256", meta.tokenizer_sha256, path);
    put_int(root, "vocab_size", meta.vocab_size, path);
    put_string(root, "template", meta.template_name, path);
    put_int(root, "cutoff_len", meta.cutoff_len, path);
    put_int(root, "train_on_prompt", meta.train_on_prompt, path);
    put_int(root, "mask_history", meta.mask_history, path);
    put_int(root, "enable_thinking", meta.enable_thinking, path);
    put_int(root, "num_samples", meta.num_samples, path);
    put_int(root, "num_tokens", meta.num_tokens, path);
    put_int(root, "num_label_tokens", meta.num_label_tokens, path);
    put_int(root, "num_dropped", meta.num_dropped, path);
    put_string(root, "sources", sources.dump(), path);
    // Format 2: the rest of the provenance. An unset option is an absent attribute.
    if (meta.default_system) put_string(root, "default_system", *meta.default_system, path);
    if (meta.max_samples) put_int(root, "max_samples", *meta.max_samples, path);
    put_string(root, "tokenizer_config_sha256", meta.tokenizer_config_sha256, path);
    put_string(root, "made_by", meta.made_by, path);
    put_string(root, "dataset_dir", meta.dataset_dir, path);
    check(H5Fflush(root, H5F_SCOPE_GLOBAL), "flush", path);
  }
  fs::fsync_path(tmp);
  fs::rename_durable(tmp, path);
}

// ---------------------------------------------------------------------------------------------------

struct TokenStore::Handles {
  Hid file, ids, labels;
};

namespace {

// Deflate never expands data more than 1032:1; with HDF5's chunk headers 1100 is a safe ceiling.
constexpr uint64_t kMaxCompressionRatio = 1100;
// The writer's chunks hold 2^16 elements; HDF5 allocates a whole chunk to read from it, so a hostile
// chunk shape must not ask for gigabytes.
constexpr hsize_t kMaxChunkElements = hsize_t(1) << 20;

// Checks a dataset's storage the way the writer lays it out (contiguous, compact or chunked; only the
// shuffle, deflate and fletcher32 filters; no external files or virtual sources) and bounds its length
// by the bytes that actually back it, so the element count read from the header can be allocated.
void check_storage(hid_t ds, const char* name, size_t bytes, hsize_t length, uint64_t file_size,
                   const std::filesystem::path& path) {
  Hid dcpl(H5Dget_create_plist(ds), H5Pclose);
  ZLORA_REQUIRE(dcpl.valid(), "{}: cannot read the storage properties of dataset '{}'", path.string(), name);
  H5D_layout_t layout = H5Pget_layout(dcpl.get());
  ZLORA_REQUIRE(layout == H5D_CONTIGUOUS || layout == H5D_COMPACT || layout == H5D_CHUNKED,
                "{}: dataset '{}' has an unsupported storage layout (a zlora token store is contiguous or chunked)",
                path.string(), name);
  ZLORA_REQUIRE(H5Pget_external_count(dcpl.get()) == 0,
                "{}: dataset '{}' refers to external files; a zlora token store is self-contained", path.string(),
                name);
  if (layout == H5D_CHUNKED) {
    hsize_t chunk = 0;
    ZLORA_REQUIRE(H5Pget_chunk(dcpl.get(), 1, &chunk) == 1 && chunk > 0 && chunk <= kMaxChunkElements,
                  "{}: dataset '{}' has an implausible chunk shape", path.string(), name);
  }
  int nfilters = H5Pget_nfilters(dcpl.get());
  ZLORA_REQUIRE(nfilters >= 0 && nfilters <= 8, "{}: dataset '{}' has an unreadable filter pipeline", path.string(),
                name);
  bool compressed = false;
  for (int k = 0; k < nfilters; ++k) {
    unsigned flags = 0;
    size_t nvalues = 0;
    H5Z_filter_t f = H5Pget_filter2(dcpl.get(), unsigned(k), &flags, &nvalues, nullptr, 0, nullptr, nullptr);
    ZLORA_REQUIRE(f == H5Z_FILTER_DEFLATE || f == H5Z_FILTER_SHUFFLE || f == H5Z_FILTER_FLETCHER32,
                  "{}: dataset '{}' uses HDF5 filter {}; a zlora token store uses only shuffle and deflate",
                  path.string(), name, int(f));
    compressed = compressed || f == H5Z_FILTER_DEFLATE;
  }
  const uint64_t stored = H5Dget_storage_size(ds);
  ZLORA_REQUIRE(stored <= file_size, "{}: dataset '{}' claims {} bytes of storage in a {}-byte file", path.string(),
                name, stored, file_size);
  const uint64_t backed = stored * (compressed ? kMaxCompressionRatio : 1);
  ZLORA_REQUIRE(length <= backed / bytes,
                "{}: dataset '{}' declares {} elements but only {} bytes back it (truncated or corrupted file?)",
                path.string(), name, length, stored);
}

// Opens a 1-D integer dataset of `bytes`-wide signed elements and returns it with its (storage-checked)
// length.
Hid open_vector(hid_t file, const char* name, size_t bytes, hsize_t& length, uint64_t file_size,
                const std::filesystem::path& path) {
  ZLORA_REQUIRE(H5Lexists(file, name, H5P_DEFAULT) > 0, "{}: not a zlora token store (dataset '{}' is missing)",
                path.string(), name);
  Hid ds(H5Dopen2(file, name, H5P_DEFAULT), H5Dclose);
  ZLORA_REQUIRE(ds.valid(), "{}: cannot open dataset '{}'", path.string(), name);
  Hid type(H5Dget_type(ds.get()), H5Tclose);
  ZLORA_REQUIRE(H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_size(type.get()) == bytes &&
                    H5Tget_sign(type.get()) == H5T_SGN_2,
                "{}: dataset '{}' must hold {}-byte signed integers", path.string(), name, bytes);
  Hid space(H5Dget_space(ds.get()), H5Sclose);
  ZLORA_REQUIRE(space.valid() && H5Sget_simple_extent_ndims(space.get()) == 1,
                "{}: dataset '{}' must be one-dimensional", path.string(), name);
  ZLORA_REQUIRE(H5Sget_simple_extent_dims(space.get(), &length, nullptr) == 1,
                "{}: cannot read the length of dataset '{}'", path.string(), name);
  check_storage(ds.get(), name, bytes, length, file_size, path);
  return ds;
}

template <typename T>
void read_range(hid_t ds, hid_t mem_type, hsize_t start, hsize_t count, T* out, const std::filesystem::path& path,
                const char* name) {
  if (count == 0) return;
  Hid fspace(H5Dget_space(ds), H5Sclose);
  check(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr), "select hyperslab", path);
  Hid mspace(H5Screate_simple(1, &count, nullptr), H5Sclose);
  ZLORA_REQUIRE(H5Dread(ds, mem_type, mspace.get(), fspace.get(), H5P_DEFAULT, out) >= 0,
                "{}: cannot read {} [{}, {}) (corrupted file?)", path.string(), name, start, start + count);
}

}  // namespace

TokenStore::TokenStore(const std::filesystem::path& path) : path_(path), h_(std::make_unique<Handles>()) {
  QuietHdf5 quiet;
  std::error_code ec;
  ZLORA_REQUIRE(std::filesystem::exists(path, ec), "token store {} does not exist (make it with `zlora prepare`)",
                path.string());
#if H5_VERSION_GE(1, 12, 0)
  const bool is_hdf5 = H5Fis_accessible(path.c_str(), H5P_DEFAULT) > 0;
#else
  const bool is_hdf5 = H5Fis_hdf5(path.c_str()) > 0;
#endif
  ZLORA_REQUIRE(is_hdf5,
                "{}: not an HDF5 file (a zlora token store is made "
                "by `zlora prepare`)",
                path.string());
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  ZLORA_REQUIRE(!ec, "{}: cannot read its size: {}", path.string(), ec.message());
  h_->file = Hid(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  ZLORA_REQUIRE(h_->file.valid(), "{}: cannot open the HDF5 file", path.string());
  hid_t f = h_->file.get();
  meta_.format_version = get_int(f, "format_version", path);
  ZLORA_REQUIRE(
      meta_.format_version >= kOldestTokenStoreFormatVersion && meta_.format_version <= kTokenStoreFormatVersion,
      "{}: token store format version {} is not supported (this zlora reads versions {} to {}); rebuild it "
      "with `zlora prepare`",
      path.string(), meta_.format_version, kOldestTokenStoreFormatVersion, kTokenStoreFormatVersion);
  const bool v2 = meta_.format_version >= 2;
  meta_.zlora_version = get_string(f, "zlora_version", path);
  meta_.tokenizer_sha256 = get_string(f, "tokenizer_sha256", path);
  meta_.vocab_size = get_int(f, "vocab_size", path);
  meta_.template_name = get_string(f, "template", path);
  meta_.cutoff_len = get_int(f, "cutoff_len", path);
  meta_.train_on_prompt = get_int(f, "train_on_prompt", path) != 0;
  meta_.mask_history = get_int(f, "mask_history", path) != 0;
  // Added within format 2: a store written before it has no attribute, and was made with thoughts on.
  meta_.enable_thinking = H5Aexists(f, "enable_thinking") > 0 ? get_int(f, "enable_thinking", path) != 0 : true;
  meta_.num_samples = get_int(f, "num_samples", path);
  meta_.num_tokens = get_int(f, "num_tokens", path);
  meta_.num_label_tokens = get_int(f, "num_label_tokens", path);
  meta_.num_dropped = get_int(f, "num_dropped", path);
  if (v2) {
    if (H5Aexists(f, "default_system") > 0) meta_.default_system = get_string(f, "default_system", path);
    if (H5Aexists(f, "max_samples") > 0) meta_.max_samples = get_int(f, "max_samples", path);
    meta_.tokenizer_config_sha256 = get_string(f, "tokenizer_config_sha256", path);
    meta_.made_by = get_string(f, "made_by", path);
    meta_.dataset_dir = get_string(f, "dataset_dir", path);
  }
  {
    const std::string origin = path.string() + ": attribute 'sources'";
    nlohmann::json sources = parse_json(get_string(f, "sources", path), origin);
    ZLORA_REQUIRE(sources.is_array(), "{} must be a JSON array", origin);
    auto count = [&](const nlohmann::json& s, const char* key) {
      ZLORA_REQUIRE(s.contains(key) && s[key].is_number_integer(), "{}: '{}' must be an integer", origin, key);
      return s[key].get<int64_t>();
    };
    try {
      for (const auto& s : sources) {
        ZLORA_REQUIRE(s.is_object(), "{}: each source must be an object", origin);
        StoreSource src;
        src.name = s.at("name").get<std::string>();
        src.files = s.at("files").get<std::vector<std::string>>();
        src.sha256s = s.at("sha256").get<std::vector<std::string>>();
        src.rows = count(s, "rows");
        src.invalid = count(s, "invalid");
        ZLORA_REQUIRE(src.sha256s.size() == src.files.size(), "{}: dataset '{}' lists {} files but {} hashes", origin,
                      text::printable(src.name), src.files.size(), src.sha256s.size());
        if (v2) {
          ZLORA_REQUIRE(s.contains("dataset_info") && s["dataset_info"].is_object(),
                        "{}: dataset '{}' has no dataset_info object", origin, text::printable(src.name));
          src.dataset_info = s["dataset_info"].dump();
          auto integers = [&](const char* key) {
            ZLORA_REQUIRE(s.contains(key) && s[key].is_array() && s[key].size() == src.files.size(),
                          "{}: dataset '{}': '{}' must list one integer per file", origin, text::printable(src.name),
                          key);
            std::vector<int64_t> v;
            for (const auto& x : s[key]) {
              ZLORA_REQUIRE(x.is_number_integer(), "{}: dataset '{}': '{}' must hold integers", origin,
                            text::printable(src.name), key);
              v.push_back(x.get<int64_t>());
            }
            return v;
          };
          src.sizes = integers("sizes");
          src.mtimes_ns = integers("mtimes_ns");
        }
        meta_.sources.push_back(std::move(src));
      }
    } catch (const nlohmann::json::exception& e) {
      fail("{} is not valid ({})", origin, text::printable(e.what(), 240));
    }
  }
  ZLORA_REQUIRE(meta_.vocab_size > 0 && meta_.vocab_size < (int64_t(1) << 31), "{}: vocab_size {} is invalid",
                path.string(), meta_.vocab_size);

  hsize_t n_ids = 0, n_labels = 0, n_offsets = 0;
  h_->ids = open_vector(f, "input_ids", 4, n_ids, file_size, path);
  h_->labels = open_vector(f, "labels", 4, n_labels, file_size, path);
  Hid offsets = open_vector(f, "offsets", 8, n_offsets, file_size, path);
  // Bounds before allocating: a hostile header must not make us allocate terabytes.
  ZLORA_REQUIRE(n_offsets >= 2 && n_offsets <= (hsize_t(1) << 32), "{}: offsets has {} entries (expected 2..2^32)",
                path.string(), n_offsets);
  ZLORA_REQUIRE(n_ids == n_labels, "{}: input_ids has {} tokens but labels {}", path.string(), n_ids, n_labels);
  ZLORA_REQUIRE(int64_t(n_offsets - 1) == meta_.num_samples && int64_t(n_ids) == meta_.num_tokens,
                "{}: the datasets ({} samples, {} tokens) disagree with the attributes ({} samples, {} tokens)",
                path.string(), n_offsets - 1, n_ids, meta_.num_samples, meta_.num_tokens);
  offsets_.resize(n_offsets);
  read_range(offsets.get(), H5T_NATIVE_INT64, 0, n_offsets, offsets_.data(), path, "offsets");
  ZLORA_REQUIRE(offsets_.front() == 0, "{}: offsets[0] is {}, expected 0", path.string(), offsets_.front());
  for (size_t i = 1; i < offsets_.size(); ++i)
    ZLORA_REQUIRE(offsets_[i] >= offsets_[i - 1], "{}: offsets are not monotone at sample {} ({} < {})", path.string(),
                  i - 1, offsets_[i], offsets_[i - 1]);
  ZLORA_REQUIRE(offsets_.back() == int64_t(n_ids), "{}: offsets end at {} but input_ids holds {} tokens", path.string(),
                offsets_.back(), n_ids);
}

TokenStore::~TokenStore() = default;
TokenStore::TokenStore(TokenStore&&) noexcept = default;

std::vector<int64_t> TokenStore::lengths() const {
  std::vector<int64_t> l(size());
  for (size_t i = 0; i < l.size(); ++i) l[i] = offsets_[i + 1] - offsets_[i];
  return l;
}

std::vector<StoredSample> TokenStore::read(const std::vector<size_t>& indices) const {
  QuietHdf5 quiet;
  std::vector<StoredSample> out(indices.size());
  for (size_t k = 0; k < indices.size(); ++k) {
    size_t i = indices[k];
    ZLORA_REQUIRE(i < size(), "{}: sample index {} out of range (the store holds {} samples)", path_.string(), i,
                  size());
    hsize_t start = hsize_t(offsets_[i]), count = hsize_t(offsets_[i + 1] - offsets_[i]);
    StoredSample& s = out[k];
    s.input_ids.resize(count);
    s.labels.resize(count);
    read_range(h_->ids.get(), H5T_NATIVE_INT32, start, count, s.input_ids.data(), path_, "input_ids");
    read_range(h_->labels.get(), H5T_NATIVE_INT32, start, count, s.labels.data(), path_, "labels");
    for (size_t t = 0; t < count; ++t) {
      ZLORA_REQUIRE(s.input_ids[t] >= 0 && s.input_ids[t] < meta_.vocab_size,
                    "{}: sample {} token {} has id {} outside the vocabulary [0, {})", path_.string(), i, t,
                    s.input_ids[t], meta_.vocab_size);
      ZLORA_REQUIRE(s.labels[t] == -100 || s.labels[t] == s.input_ids[t],
                    "{}: sample {} token {} has label {} (must be -100 or the token's id {})", path_.string(), i, t,
                    s.labels[t], s.input_ids[t]);
    }
  }
  return out;
}

void TokenStore::require_compatible(const std::string& tokenizer_sha256, const std::string& template_name) const {
  ZLORA_REQUIRE(
      tokenizer_sha256 == meta_.tokenizer_sha256,
      "{} was built with another tokenizer (tokenizer.json sha256 {}) than this model's ({}); rebuild it with "
      "`zlora prepare` or set overwrite_cache: true",
      path_.string(), text::printable(meta_.tokenizer_sha256), tokenizer_sha256);
  ZLORA_REQUIRE(template_name == meta_.template_name,
                "{} was built with template '{}' but this run uses '{}'; rebuild it with `zlora prepare` or set "
                "overwrite_cache: true",
                path_.string(), text::printable(meta_.template_name), template_name);
}

}  // namespace zlora::data
