// Writes the seed corpus of fuzz_token_store: small valid token stores made by the real writer, so the
// fuzzer starts from the layout `zlora prepare` produces (chunked, shuffled, deflated datasets and the
// root attributes). Run once after a format change and commit the output (each file stays < 50 KB):
//   build/tests/fuzz/make_token_store_seeds tests/fuzz/corpus/token_store
// With --hostile it writes instead the hand-made corrupted stores of tests/fuzz/regressions/
// fuzz_token_store/ (valid stores edited with the HDF5 API), one per check the reader must make:
//   build/tests/fuzz/make_token_store_seeds --hostile tests/fuzz/regressions/fuzz_token_store
#include "zlora/core/error.h"
#include "zlora/data/token_store.h"

#include <hdf5.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace {

using zlora::data::StoreMeta;

void write(const std::filesystem::path& path, const std::vector<std::vector<int32_t>>& samples, bool mask_prompt,
           StoreMeta meta) {
  std::vector<int32_t> ids, labels;
  std::vector<int64_t> offsets{0};
  for (const auto& s : samples) {
    for (size_t t = 0; t < s.size(); ++t) {
      ids.push_back(s[t]);
      labels.push_back(mask_prompt && t < s.size() / 2 ? -100 : s[t]);
    }
    offsets.push_back(int64_t(ids.size()));
  }
  zlora::data::write_token_store(path, ids, labels, offsets, std::move(meta));
  std::printf("%s: %zu samples, %zu tokens, %ju bytes\n", path.c_str(), samples.size(), ids.size(),
              uintmax_t(std::filesystem::file_size(path)));
}

// A dataset's source record as format 2 writes it (hashes, sizes and times made up).
zlora::data::StoreSource source(const char* name, std::vector<std::string> files, int64_t rows, int64_t invalid) {
  zlora::data::StoreSource s;
  s.name = name;
  s.dataset_info = std::string(R"({"file_name":")") + files.front() + "\"}";
  for (size_t i = 0; i < files.size(); ++i) {
    s.sha256s.push_back(std::string(64, char('a' + i)));
    s.sizes.push_back(int64_t(1000 + i));
    s.mtimes_ns.push_back(int64_t(1700000000000000000) + int64_t(i));
  }
  s.files = std::move(files);
  s.rows = rows;
  s.invalid = invalid;
  return s;
}

StoreMeta meta(int64_t vocab, const char* tmpl) {
  StoreMeta m;
  m.zlora_version = "0.1.0";
  m.tokenizer_sha256 = "8f2ad5bd4d6fa4bbce2de3a3b9c3bd8e3e8b0b9cd0a3c7cf7b3e2b1b5c7a9d0e";
  m.vocab_size = vocab;
  m.template_name = tmpl;
  m.cutoff_len = 2048;
  m.made_by = zlora::data::kMadeByPrepare;
  m.dataset_dir = "configs/demo-data";
  m.sources.push_back(source("demo_identity", {"demo_identity.json"}, 3, 0));
  return m;
}

// A valid tiny store, then `edit` applied to it through the HDF5 API (read-write).
void hostile(const std::filesystem::path& path, const std::function<void(hid_t)>& edit) {
  zlora::data::write_token_store(path, {1, 2, 3, 4}, {-100, 2, 3, 4}, {0, 2, 4}, meta(16, "qwen"));
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0) zlora::fail("cannot reopen {}", path.string());
  edit(f);
  H5Fclose(f);
  std::printf("%s: %ju bytes\n", path.c_str(), uintmax_t(std::filesystem::file_size(path)));
}

// Replaces root attribute `name` by one of `type` with `n` elements (n = 0: scalar) holding `data`.
void replace_attribute(hid_t f, const char* name, hid_t type, hsize_t n, const void* data) {
  H5Adelete(f, name);
  hid_t space = n ? H5Screate_simple(1, &n, nullptr) : H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, type, data);
  H5Aclose(a);
  H5Sclose(space);
}

void replace_string_attribute(hid_t f, const char* name, const std::string& value, hsize_t n) {
  hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, value.size());
  std::string buf;
  for (hsize_t k = 0; k < (n ? n : 1); ++k) buf += value;
  replace_attribute(f, name, type, n, buf.data());
  H5Tclose(type);
}

// Replaces dataset `name` by a 1-D one of `type` and `length` elements with creation properties
// `dcpl`; nothing is written to it (HDF5 reads unwritten chunks as the fill value).
void replace_dataset(hid_t f, const char* name, hid_t type, hsize_t length, hid_t dcpl) {
  H5Ldelete(f, name, H5P_DEFAULT);
  hid_t space = H5Screate_simple(1, &length, nullptr);
  hid_t d = H5Dcreate2(f, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Dclose(d);
  H5Sclose(space);
}

void write_hostile(const std::filesystem::path& dir) {
  const int64_t many[1000] = {3};
  // get_int read every element of an attribute into one int64 (a stack overflow).
  hostile(dir / "int-attribute-with-1000-elements.h5",
          [&](hid_t f) { replace_attribute(f, "num_samples", H5T_STD_I64LE, 1000, many); });
  // get_string read every element of a string attribute into one string's buffer (a heap overflow).
  hostile(dir / "string-attribute-with-64-elements.h5",
          [](hid_t f) { replace_string_attribute(f, "template", "qwen", 64); });
  // 'sources' counts as floats beyond int64: nlohmann's conversion is undefined behaviour.
  hostile(dir / "sources-rows-1e300.h5", [](hid_t f) {
    replace_string_attribute(f, "sources", R"([{"name":"a","files":[],"sha256":[],"rows":1e300,"invalid":0}])", 0);
  });
  // An offsets dataset of 2^31 entries with no storage behind it: allocated 16 GiB before reading.
  hostile(dir / "offsets-2e31-entries-no-storage.h5", [](hid_t f) {
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t chunk = 1 << 16;
    H5Pset_chunk(dcpl, 1, &chunk);
    replace_dataset(f, "offsets", H5T_STD_I64LE, hsize_t(1) << 31, dcpl);
    int64_t n = (int64_t(1) << 31) - 1;
    replace_attribute(f, "num_samples", H5T_STD_I64LE, 0, &n);
    H5Pclose(dcpl);
  });
  // A chunk of 2^28 elements (1 GiB): libhdf5 allocates a whole chunk to read from it.
  hostile(dir / "input-ids-chunk-2e28.h5", [](hid_t f) {
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t chunk = hsize_t(1) << 28;
    H5Pset_chunk(dcpl, 1, &chunk);
    replace_dataset(f, "input_ids", H5T_STD_I32LE, chunk, dcpl);
    H5Pclose(dcpl);
  });
  // Unsigned ids: values above 2^31 would be clipped by the conversion instead of refused.
  hostile(dir / "input-ids-unsigned.h5",
          [](hid_t f) { replace_dataset(f, "input_ids", H5T_STD_U32LE, 4, H5P_DEFAULT); });
  // Data in an external file: a store must not read other files of the machine.
  hostile(dir / "labels-external-file.h5", [](hid_t f) {
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_external(dcpl, "/etc/hostname", 0, 16);
    replace_dataset(f, "labels", H5T_STD_I32LE, 4, dcpl);
    H5Pclose(dcpl);
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--hostile") == 0) {
    try {
      std::filesystem::create_directories(argv[2]);
      write_hostile(argv[2]);
    } catch (const zlora::Error& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return 1;
    }
    return 0;
  }
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s [--hostile] OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  std::filesystem::path dir = argv[1];
  try {
    std::filesystem::create_directories(dir);
    // Three short samples, one source.
    write(dir / "tiny.h5", {{1, 2, 3, 4}, {5, 6}, {7, 8, 9}}, true, meta(16, "qwen"));
    // An empty sample, two sources, everything trained on.
    StoreMeta two = meta(151665, "llama3");
    two.train_on_prompt = true;
    two.num_dropped = 2;
    two.default_system = "You are a helpful assistant.";
    two.max_samples = 10;
    two.tokenizer_config_sha256 = std::string(64, 'e');
    two.made_by = zlora::data::kMadeByTrain;
    two.sources.push_back(source("alpaca", {"a.jsonl", "b.jsonl"}, 10, 2));
    write(dir / "empty-sample-two-sources.h5", {{151643, 151644, 9707}, {}, {151645}}, false, two);
    // More tokens than one chunk (2^16), so the datasets span two chunks: repetitive, so it stays small.
    std::vector<std::vector<int32_t>> many;
    for (int i = 0; i < 300; ++i) many.push_back(std::vector<int32_t>(230, i % 50));
    write(dir / "two-chunks.h5", many, true, meta(64, "default"));
  } catch (const zlora::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
