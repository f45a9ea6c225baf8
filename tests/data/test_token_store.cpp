// The HDF5 token store: round trip, hyperslab reads of arbitrary index lists, and refusal of corrupted
// or hostile files.
#include "test_util.h"

#include "zlora/core/error.h"
#include "zlora/data/token_store.h"

#include <hdf5.h>

#include <unistd.h>
#include <algorithm>
#include <functional>
#include <random>

namespace zlora::data {
namespace {

using test::TempDir;

struct Corpus {
  std::vector<int32_t> ids, labels;
  std::vector<int64_t> offsets{0};
  std::vector<std::vector<int32_t>> sample_ids, sample_labels;
};

Corpus make_corpus(size_t n, int32_t vocab) {
  std::mt19937 rng(7);
  Corpus c;
  for (size_t i = 0; i < n; ++i) {
    size_t len = 1 + rng() % 300;
    std::vector<int32_t> ids(len), labels(len);
    size_t prompt = rng() % len;
    for (size_t t = 0; t < len; ++t) {
      ids[t] = int32_t(rng() % uint32_t(vocab));
      labels[t] = t < prompt ? -100 : ids[t];
    }
    c.ids.insert(c.ids.end(), ids.begin(), ids.end());
    c.labels.insert(c.labels.end(), labels.begin(), labels.end());
    c.offsets.push_back(int64_t(c.ids.size()));
    c.sample_ids.push_back(ids);
    c.sample_labels.push_back(labels);
  }
  return c;
}

StoreMeta meta_for(int64_t vocab) {
  StoreMeta m;
  m.zlora_version = "test";
  m.tokenizer_sha256 = std::string(64, 'a');
  m.vocab_size = vocab;
  m.template_name = "qwen";
  m.cutoff_len = 1024;
  m.made_by = kMadeByPrepare;
  StoreSource src;
  src.name = "demo";
  src.files = {"demo.json"};
  src.sha256s = {std::string(64, 'b')};
  src.rows = 1000;
  src.invalid = 3;
  src.dataset_info = R"({"file_name":"demo.json"})";
  src.sizes = {12345};
  src.mtimes_ns = {1700000000123456789};
  m.sources.push_back(src);
  m.num_dropped = 3;
  return m;
}

// Replaces the integer root attribute `name` of an existing store, as an older writer would have left it.
void set_int_attribute(const std::filesystem::path& path, const char* name, int64_t value) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  hid_t a = H5Aopen(f, name, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_INT64, &value);
  H5Aclose(a);
  H5Fclose(f);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(TokenStore, RoundTripAndArbitraryIndexReads) {
  TempDir dir;
  Corpus c = make_corpus(1000, 5000);
  auto path = dir / "s.h5";
  write_token_store(path, c.ids, c.labels, c.offsets, meta_for(5000));
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(path.string() + ".tmp." + std::to_string(getpid()))));
  TokenStore s(path);
  ASSERT_EQ(s.size(), 1000u);
  for (size_t i = 0; i < 1000; ++i) EXPECT_EQ(s.length(i), int64_t(c.sample_ids[i].size()));
  EXPECT_EQ(s.meta().num_tokens, int64_t(c.ids.size()));
  EXPECT_EQ(s.meta().num_label_tokens,
            std::count_if(c.labels.begin(), c.labels.end(), [](int32_t l) { return l != -100; }));
  EXPECT_EQ(s.meta().template_name, "qwen");
  EXPECT_EQ(s.meta().num_dropped, 3);
  ASSERT_EQ(s.meta().sources.size(), 1u);
  EXPECT_EQ(s.meta().sources[0].files[0], "demo.json");
  EXPECT_EQ(s.meta().sources[0].rows, 1000);
  std::vector<size_t> idx{999, 0, 500, 500, 3, 998, 1};
  auto got = s.read(idx);
  for (size_t k = 0; k < idx.size(); ++k) {
    EXPECT_EQ(got[k].input_ids, c.sample_ids[idx[k]]);
    EXPECT_EQ(got[k].labels, c.sample_labels[idx[k]]);
  }
  EXPECT_NE(error_of([&] { s.read({1000}); }).find("sample index 1000 out of range"), std::string::npos);
  EXPECT_NE(error_of([&] { s.require_compatible(std::string(64, 'c'), "qwen"); }).find(std::string(64, 'a')),
            std::string::npos);
  EXPECT_NE(error_of([&] { s.require_compatible(std::string(64, 'a'), "llama3"); }).find("template 'qwen'"),
            std::string::npos);
  EXPECT_NO_THROW(s.require_compatible(std::string(64, 'a'), "qwen"));
}

// Format 2 records the provenance a later run compares with (data/provenance.h): every field round-trips,
// and an unset option stays unset (not 0 or "").
TEST(TokenStore, ProvenanceRoundTrips) {
  TempDir dir;
  Corpus c = make_corpus(10, 100);
  StoreMeta m = meta_for(100);
  m.default_system = "你是甄嬛。";
  m.max_samples = 64;
  m.tokenizer_config_sha256 = std::string(64, 'd');
  m.made_by = kMadeByTrain;
  m.dataset_dir = "/data/sets";
  m.train_on_prompt = true;
  write_token_store(dir / "v2.h5", c.ids, c.labels, c.offsets, m);
  const StoreMeta got = TokenStore(dir / "v2.h5").meta();
  EXPECT_EQ(got.format_version, kTokenStoreFormatVersion);
  EXPECT_TRUE(got.provenance_known());
  EXPECT_EQ(got.default_system, std::optional<std::string>("你是甄嬛。"));
  EXPECT_EQ(got.max_samples, std::optional<int64_t>(64));
  EXPECT_EQ(got.tokenizer_config_sha256, std::string(64, 'd'));
  EXPECT_EQ(got.made_by, kMadeByTrain);
  EXPECT_EQ(got.dataset_dir, "/data/sets");
  EXPECT_TRUE(got.train_on_prompt);
  ASSERT_EQ(got.sources.size(), 1u);
  EXPECT_EQ(got.sources[0].dataset_info, R"({"file_name":"demo.json"})");
  EXPECT_EQ(got.sources[0].sizes, std::vector<int64_t>{12345});
  EXPECT_EQ(got.sources[0].mtimes_ns, std::vector<int64_t>{1700000000123456789});

  write_token_store(dir / "unset.h5", c.ids, c.labels, c.offsets, meta_for(100));
  const StoreMeta unset = TokenStore(dir / "unset.h5").meta();
  EXPECT_FALSE(unset.default_system.has_value());
  EXPECT_FALSE(unset.max_samples.has_value());
  EXPECT_EQ(unset.tokenizer_config_sha256, "");

  // The writer refuses a store that would not say who made it or what its files were.
  StoreMeta anonymous = meta_for(100);
  anonymous.made_by = "";
  EXPECT_NE(
      error_of([&] { write_token_store(dir / "x.h5", c.ids, c.labels, c.offsets, anonymous); }).find("without a maker"),
      std::string::npos);
  StoreMeta sizeless = meta_for(100);
  sizeless.sources[0].sizes.clear();
  EXPECT_NE(error_of([&] {
              write_token_store(dir / "x.h5", c.ids, c.labels, c.offsets, sizeless);
            }).find("has 1 files but 1 hashes, 0 sizes"),
            std::string::npos);
}

// A format-1 store (made before stores recorded their provenance) still opens and trains, its provenance
// unknown; a format newer than this zlora's is refused with the versions it reads.
TEST(TokenStore, FormatOneOpensWithUnknownProvenanceAndNewerFormatsAreRefused) {
  TempDir dir;
  Corpus c = make_corpus(10, 100);
  write_token_store(dir / "v1.h5", c.ids, c.labels, c.offsets, meta_for(100));
  set_int_attribute(dir / "v1.h5", "format_version", 1);
  TokenStore v1(dir / "v1.h5");
  EXPECT_EQ(v1.meta().format_version, 1);
  EXPECT_FALSE(v1.meta().provenance_known());
  EXPECT_EQ(v1.meta().made_by, "");
  EXPECT_TRUE(v1.meta().sources[0].sizes.empty());
  EXPECT_EQ(v1.size(), 10u);
  EXPECT_EQ(v1.read({3})[0].input_ids, c.sample_ids[3]);

  write_token_store(dir / "v9.h5", c.ids, c.labels, c.offsets, meta_for(100));
  set_int_attribute(dir / "v9.h5", "format_version", 9);
  EXPECT_NE(error_of([&] { TokenStore s(dir / "v9.h5"); })
                .find("format version 9 is not supported (this zlora reads "
                      "versions 1 to 2)"),
            std::string::npos);
}

// Overwrites `n` elements of a dataset of an existing store, as a corrupting tool would.
template <typename T>
void poke(const std::filesystem::path& path, const char* name, hid_t type, hsize_t at, T value) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  hid_t fs = H5Dget_space(d);
  hsize_t one = 1;
  H5Sselect_hyperslab(fs, H5S_SELECT_SET, &at, nullptr, &one, nullptr);
  hid_t ms = H5Screate_simple(1, &one, nullptr);
  H5Dwrite(d, type, ms, fs, H5P_DEFAULT, &value);
  H5Sclose(ms);
  H5Sclose(fs);
  H5Dclose(d);
  H5Fclose(f);
}

// Replaces the string root attribute `name` of an existing store.
void set_string_attribute(const std::filesystem::path& path, const char* name, const std::string& value) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  H5Adelete(f, name);
  hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, value.size());
  hid_t space = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, type, value.data());
  H5Aclose(a);
  H5Sclose(space);
  H5Tclose(type);
  H5Fclose(f);
}

TEST(TokenStore, CorruptedFilesAreRefused) {
  TempDir dir;
  Corpus c = make_corpus(20, 100);
  auto fresh = [&](const std::string& name) {
    auto p = dir / name;
    write_token_store(p, c.ids, c.labels, c.offsets, meta_for(100));
    return p;
  };
  auto p = fresh("mono.h5");
  poke<int64_t>(p, "offsets", H5T_NATIVE_INT64, 5, 1);
  EXPECT_NE(error_of([&] { TokenStore s(p); }).find("offsets are not monotone at sample"), std::string::npos);
  p = fresh("end.h5");
  poke<int64_t>(p, "offsets", H5T_NATIVE_INT64, 20, int64_t(c.ids.size()) + 5);
  EXPECT_NE(error_of([&] { TokenStore s(p); }).find("offsets end at"), std::string::npos);
  p = fresh("first.h5");
  poke<int64_t>(p, "offsets", H5T_NATIVE_INT64, 0, -4);
  EXPECT_NE(error_of([&] { TokenStore s(p); }).find("offsets[0] is -4"), std::string::npos);
  p = fresh("vocab.h5");
  poke<int32_t>(p, "input_ids", H5T_NATIVE_INT32, 0, 100000);
  EXPECT_NE(error_of([&] { TokenStore(p).read({0}); }).find("outside the vocabulary"), std::string::npos);
  p = fresh("label.h5");
  poke<int32_t>(p, "labels", H5T_NATIVE_INT32, c.ids.size() - 1, 7777);
  EXPECT_NE(error_of([&] { TokenStore(p).read({19}); }).find("has label 7777"), std::string::npos);
  // Format 2's per-file records must match the file list; a name from the file is quoted escaped.
  p = fresh("sizes.h5");
  set_string_attribute(p, "sources",
                       R"([{"name":"d\u001b[31m","dataset_info":{},"files":["a.json"],"sha256":["x"],)"
                       R"("sizes":[],"mtimes_ns":[1],"rows":1,"invalid":0}])");
  const std::string sizes_error = error_of([&] { TokenStore s(p); });
  EXPECT_NE(sizes_error.find("dataset 'd\\x1B[31m': 'sizes' must list one integer per file"), std::string::npos)
      << sizes_error;
  EXPECT_EQ(sizes_error.find('\x1b'), std::string::npos) << sizes_error;
  p = fresh("entry.h5");
  set_string_attribute(p, "sources",
                       R"([{"name":"d","files":["a.json"],"sha256":["x"],"sizes":[1],"mtimes_ns":[1],"rows":1,)"
                       R"("invalid":0}])");
  EXPECT_NE(error_of([&] { TokenStore s(p); }).find("dataset 'd' has no dataset_info object"), std::string::npos);
  test::write_file(dir / "text.h5", "not hdf5 at all");
  EXPECT_NE(error_of([&] { TokenStore s(dir / "text.h5"); }).find("not an HDF5 file"), std::string::npos);
  EXPECT_NE(error_of([&] { TokenStore s(dir / "none.h5"); }).find("does not exist"), std::string::npos);
  // An HDF5 file that is not a token store.
  hid_t f = H5Fcreate((dir / "other.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  H5Fclose(f);
  EXPECT_NE(error_of([&] { TokenStore s(dir / "other.h5"); }).find("not a zlora token store"), std::string::npos);
}

}  // namespace
}  // namespace zlora::data
