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
  m.sources.push_back({"demo", {"/x/demo.json"}, {std::string(64, 'b')}, 1000, 3});
  m.num_dropped = 3;
  return m;
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
  EXPECT_EQ(s.meta().sources[0].files[0], "/x/demo.json");
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
