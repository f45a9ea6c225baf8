// The safetensors format, torch-free: an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the data.
// Files are memory-mapped; every header field is validated before any byte of data is trusted, so a
// truncated, corrupt or hostile file is a zlora::Error, never a crash or a huge allocation.
// Tensor views (LibTorch) are in tensor_io.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace zlora::model {

enum class DType { kBool, kU8, kI8, kI16, kU16, kF16, kBF16, kI32, kU32, kF32, kF64, kI64, kU64 };

size_t dtype_size(DType d);
const char* dtype_name(DType d);  // the format's spelling: "BF16", "F32", ...
DType parse_dtype(const std::string& name, const std::string& origin);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the data section
  uint64_t end = 0;
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// The largest header accepted (the format's reference implementation uses 100 MB too).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in file order (ascending offsets)
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + header length
  const TensorInfo* find(const std::string& name) const;
};

// Parses and validates the header of a file of `file_size` bytes whose first bytes are `bytes`
// (at least min(file_size, 8 + header length) of them). `origin` names the file in errors.
SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, uint64_t file_size, const std::string& origin);

// A read-only memory map of a whole file (RAII).
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  std::string path_;
};

// One .safetensors file: its validated header over a memory map.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);
  const SafetensorsHeader& header() const { return header_; }
  const std::string& path() const { return map_.path(); }
  const TensorInfo* find(const std::string& name) const { return header_.find(name); }
  // The tensor's bytes inside the map (valid while this object lives).
  const uint8_t* data(const TensorInfo& t) const { return map_.data() + header_.data_start + t.begin; }

 private:
  MappedFile map_;
  SafetensorsHeader header_;
};

// A model's weights: `model.safetensors`, or shards listed by `model.safetensors.index.json`
// (weight_map: tensor name → shard file). Directories holding only pytorch_model.bin / *.pt are refused
// with the conversion to do. Also opens one .safetensors file given directly.
class SafetensorsModel {
 public:
  explicit SafetensorsModel(const std::filesystem::path& dir_or_file);
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  const uint8_t* data(const std::string& name) const;
  const std::string& file_of(const std::string& name) const;
  const std::string& origin() const { return origin_; }

 private:
  std::string origin_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<size_t, const TensorInfo*>> where_;
};

// ---- model files against config.json ------------------------------------------------------------

// F16, BF16, F32, F64: the dtypes a model weight may have.
bool is_float_dtype(DType d);

// Refuses tensor `name` of `model` unless its dtype is floating-point, naming the file, the tensor, its
// dtype and the accepted ones: an integer or BOOL weight (a quantized or mislabelled checkpoint)
// converted to float would load as nonsense without a word. load_flat_range calls it for every
// conversion to a floating dtype.
void require_float_weight(const SafetensorsModel& model, const std::string& name);

// Refuses tensors of decoder layers beyond config.json's num_hidden_layers (model.layers.N.* with
// N >= num_hidden_layers), naming the first few, their count and `config_origin`'s num_hidden_layers:
// the weights and config.json come from different models, and the extra layers would be dropped without
// a word. ResidentWeightStore and the export run it; a weight loader of its own (ZeRO-3) should too.
void require_declared_layers(const SafetensorsModel& model, int64_t num_hidden_layers,
                             const std::string& config_origin);

// One tensor to write: its bytes are copied out during serialisation.
struct TensorBytes {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  uint64_t nbytes = 0;
};

// The file's bytes: tensors in the given order, header padded with spaces to a multiple of 8 (as the
// Python writer does, so the data is aligned). Names must be unique and sizes must match dtype × shape.
std::string serialize_safetensors(const std::vector<TensorBytes>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});
// Writes atomically (temporary file, fsync, rename).
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorBytes>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace zlora::model
