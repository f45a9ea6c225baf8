// Safetensors parsing, mapping and writing (torch-free). The header is untrusted input: every number in
// it is range-checked (with overflow checks) before it is used to address the map.
#include "zlora/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/text.h"

namespace zlora::model {
namespace {

using nlohmann::json;

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {{DType::kBool, "BOOL", 1}, {DType::kU8, "U8", 1},   {DType::kI8, "I8", 1},
                                  {DType::kI16, "I16", 2},   {DType::kU16, "U16", 2}, {DType::kF16, "F16", 2},
                                  {DType::kBF16, "BF16", 2}, {DType::kI32, "I32", 4}, {DType::kU32, "U32", 4},
                                  {DType::kF32, "F32", 4},   {DType::kF64, "F64", 8}, {DType::kI64, "I64", 8},
                                  {DType::kU64, "U64", 8}};

// A value of the header quoted in an error: escaped and bounded (the header is untrusted).
std::string shown(const json& v) { return text::printable(v.dump(-1, ' ', false, json::error_handler_t::replace)); }

uint64_t get_offset(const json& v, const std::string& origin, const std::string& name) {
  if (!v.is_number_unsigned())
    fail("{}: tensor '{}': data_offsets must be non-negative integers", origin, text::printable(name));
  return v.get<uint64_t>();
}

TensorInfo parse_entry(const std::string& raw_name, const json& e, const std::string& origin) {
  const std::string name = text::printable(raw_name);  // for the messages; t.name keeps the bytes
  if (!e.is_object()) fail("{}: tensor '{}': expected an object with dtype, shape, data_offsets", origin, name);
  for (auto it = e.begin(); it != e.end(); ++it)
    if (it.key() != "dtype" && it.key() != "shape" && it.key() != "data_offsets")
      fail("{}: tensor '{}': unexpected field '{}'", origin, name, text::printable(it.key()));
  TensorInfo t;
  t.name = raw_name;
  auto dt = e.find("dtype");
  if (dt == e.end() || !dt->is_string()) fail("{}: tensor '{}': missing dtype", origin, name);
  t.dtype = parse_dtype(dt->get<std::string>(), origin + ": tensor '" + name + "'");
  auto shape = e.find("shape");
  if (shape == e.end() || !shape->is_array()) fail("{}: tensor '{}': missing shape", origin, name);
  if (shape->size() > 16)
    fail("{}: tensor '{}': {} dimensions is more than supported (16)", origin, name, shape->size());
  // numel × element size must fit comfortably in int64: bound the running product before each multiply.
  const uint64_t limit = uint64_t(1) << 60;
  uint64_t numel = 1;
  for (const auto& d : *shape) {
    if (!d.is_number_unsigned())
      fail("{}: tensor '{}': shape must hold non-negative integers, got {}", origin, name, shown(*shape));
    uint64_t v = d.get<uint64_t>();
    if (v != 0 && numel > limit / v)
      fail("{}: tensor '{}': shape {} overflows (more elements than any file can hold)", origin, name, shown(*shape));
    numel *= v;
    t.shape.push_back(static_cast<int64_t>(v));
  }
  auto off = e.find("data_offsets");
  if (off == e.end() || !off->is_array() || off->size() != 2)
    fail("{}: tensor '{}': data_offsets must be [begin, end]", origin, name);
  t.begin = get_offset((*off)[0], origin, raw_name);
  t.end = get_offset((*off)[1], origin, raw_name);
  if (t.end < t.begin)
    fail("{}: tensor '{}': data_offsets [{}, {}] end before they begin", origin, name, t.begin, t.end);
  const uint64_t expect = numel * dtype_size(t.dtype);
  if (t.end - t.begin != expect)
    fail("{}: tensor '{}': {} x shape {} is {} bytes but data_offsets span {} bytes", origin, name, dtype_name(t.dtype),
         shown(*shape), expect, t.end - t.begin);
  return t;
}

void check_name(const std::string& name, const std::string& origin) {
  if (name.empty() || name.size() > 1024) fail("{}: a tensor name is empty or longer than 1024 bytes", origin);
}

}  // namespace

size_t dtype_size(DType d) {
  for (const auto& e : kDTypes)
    if (e.dtype == d) return e.size;
  fail("unknown safetensors dtype {}", static_cast<int>(d));
}

const char* dtype_name(DType d) {
  for (const auto& e : kDTypes)
    if (e.dtype == d) return e.name;
  fail("unknown safetensors dtype {}", static_cast<int>(d));
}

DType parse_dtype(const std::string& name, const std::string& origin) {
  std::vector<std::string> names;
  for (const auto& e : kDTypes) {
    if (name == e.name) return e.dtype;
    names.push_back(e.name);
  }
  fail("{}: dtype '{}' is not supported; supported: {}", origin, text::printable(name), text::join(names, ", "));
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // bounded by parse_entry
  return n;
}

const TensorInfo* SafetensorsHeader::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, uint64_t file_size, const std::string& origin) {
  if (file_size < 8) fail("{}: {} bytes is too small for a safetensors file (truncated?)", origin, file_size);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];  // little-endian, independent of the host
  if (n > kMaxHeaderBytes)
    fail("{}: header length {} exceeds the {} byte limit (corrupt file, or not safetensors)", origin, n,
         kMaxHeaderBytes);
  if (n > file_size - 8)
    fail("{}: header length {} runs past the end of the {} byte file (truncated?)", origin, n, file_size);
  if (n < 2 || bytes[8] != '{') fail("{}: the header is not a JSON object (not a safetensors file?)", origin);
  json h;
  try {
    h = json::parse(bytes + 8, bytes + 8 + n);
  } catch (const json::exception& e) {
    fail("{}: the header is not valid JSON: {}", origin, e.what());
  }
  if (!h.is_object()) fail("{}: the header is not a JSON object", origin);
  SafetensorsHeader out;
  out.data_start = 8 + n;
  const uint64_t data_size = file_size - out.data_start;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) fail("{}: __metadata__ must be an object of strings", origin);
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) fail("{}: __metadata__ value of '{}' must be a string", origin, text::printable(m.key()));
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    check_name(it.key(), origin);
    TensorInfo t = parse_entry(it.key(), *it, origin);
    if (t.end > data_size)
      fail("{}: tensor '{}': data_offsets [{}, {}] run past the {} bytes of data (truncated file?)", origin,
           text::printable(t.name), t.begin, t.end, data_size);
    out.tensors.push_back(std::move(t));
  }
  std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < out.tensors.size(); ++i) {
    const auto& a = out.tensors[i - 1];
    const auto& b = out.tensors[i];
    if (b.begin < a.end && b.nbytes() > 0 && a.nbytes() > 0)
      fail("{}: tensors '{}' [{}, {}] and '{}' [{}, {}] overlap", origin, text::printable(a.name), a.begin, a.end,
           text::printable(b.name), b.begin, b.end);
  }
  return out;
}

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path.string()) {
  int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open: {}", path_, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail("{}: cannot stat: {}", path_, std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path_);
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail("{}: cannot memory-map {} bytes: {}", path_, size_, std::strerror(e));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping stays valid without the descriptor
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path)
    : map_(path), header_(parse_safetensors_header(map_.data(), map_.size(), map_.path())) {}

SafetensorsModel::SafetensorsModel(const std::filesystem::path& dir_or_file) : origin_(dir_or_file.string()) {
  namespace stdfs = std::filesystem;
  auto add_file = [&](const stdfs::path& p, const std::vector<std::string>* only) {
    files_.push_back(std::make_unique<SafetensorsFile>(p));
    const size_t idx = files_.size() - 1;
    if (!only) {
      for (const auto& t : files_.back()->header().tensors) where_[t.name] = {idx, &t};
      return;
    }
    for (const auto& name : *only) {
      const TensorInfo* t = files_.back()->find(name);
      if (!t)
        fail("{}: the index maps '{}' to {}, which does not hold it (incomplete download?)", origin_,
             text::printable(name), p.string());
      where_[name] = {idx, t};
    }
  };
  if (stdfs::is_regular_file(dir_or_file)) {
    if (!text::ends_with(dir_or_file.string(), ".safetensors"))
      fail("{}: not a .safetensors file; zlora reads weights in safetensors format only", origin_);
    add_file(dir_or_file, nullptr);
    return;
  }
  if (!stdfs::is_directory(dir_or_file)) fail("{}: no such model directory or file", origin_);
  const stdfs::path index = dir_or_file / "model.safetensors.index.json";
  if (stdfs::exists(index)) {
    json j;
    try {
      j = json::parse(fs::read_file(index, size_t(64) << 20));
    } catch (const json::exception& e) {
      fail("{}: not valid JSON: {}", index.string(), e.what());
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      fail("{}: expected an object with a 'weight_map' {{tensor name: shard file}}", index.string());
    std::map<std::string, std::vector<std::string>> by_file;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it->is_string()) fail("{}: weight_map['{}'] must be a file name", index.string(), text::printable(it.key()));
      const std::string f = it->get<std::string>();
      // Shards must be plain names inside the model directory: a hostile index cannot point elsewhere.
      if (f.empty() || f.find('/') != std::string::npos || f == "." || f == ".." || !text::ends_with(f, ".safetensors"))
        fail("{}: weight_map['{}'] = '{}' is not a .safetensors file name inside the model directory", index.string(),
             text::printable(it.key()), text::printable(f));
      by_file[f].push_back(it.key());
    }
    for (const auto& [f, names] : by_file) {
      if (!stdfs::exists(dir_or_file / f))
        fail("{}: shard {} listed in the index is missing", origin_, text::printable(f));
      add_file(dir_or_file / f, &names);
    }
    return;
  }
  if (stdfs::exists(dir_or_file / "model.safetensors")) {
    add_file(dir_or_file / "model.safetensors", nullptr);
    return;
  }
  std::vector<std::string> pickles;
  for (const auto& e : stdfs::directory_iterator(dir_or_file)) {
    const std::string n = e.path().filename().string();
    if (text::ends_with(n, ".bin") || text::ends_with(n, ".pt") || text::ends_with(n, ".pth")) pickles.push_back(n);
  }
  std::sort(pickles.begin(), pickles.end());
  if (!pickles.empty())
    fail(
        "{}: holds PyTorch pickle weights ({}) but no safetensors; zlora reads safetensors only. Convert once with: "
        "python -c \"from transformers import AutoModelForCausalLM as M; "
        "M.from_pretrained('{}').save_pretrained('OUT_DIR', safe_serialization=True)\"",
        origin_, text::join(pickles, ", "), origin_);
  fail("{}: no model.safetensors or model.safetensors.index.json found", origin_);
}

std::vector<std::string> SafetensorsModel::names() const {
  std::vector<std::string> out;
  for (const auto& [n, w] : where_) out.push_back(n);
  return out;
}

const TensorInfo& SafetensorsModel::info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail("{}: no tensor named '{}'", origin_, text::printable(name));
  return *it->second.second;
}

const uint8_t* SafetensorsModel::data(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail("{}: no tensor named '{}'", origin_, text::printable(name));
  return files_[it->second.first]->data(*it->second.second);
}

const std::string& SafetensorsModel::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail("{}: no tensor named '{}'", origin_, text::printable(name));
  return files_[it->second.first]->path();
}

bool is_float_dtype(DType d) { return d == DType::kF16 || d == DType::kBF16 || d == DType::kF32 || d == DType::kF64; }

void require_float_weight(const SafetensorsModel& model, const std::string& name) {
  const TensorInfo& t = model.info(name);
  if (is_float_dtype(t.dtype)) return;
  fail(
      "{}: tensor '{}' has dtype {}, but a model weight must be floating-point (F16, BF16, F32 or F64); "
      "converting {} values to float would load a wrong model without a word. Quantized checkpoints (int8, GPTQ, "
      "AWQ) cannot be trained by zlora: use the unquantized model",
      model.file_of(name), text::printable(name), dtype_name(t.dtype), dtype_name(t.dtype));
}

void require_declared_layers(const SafetensorsModel& model, int64_t num_hidden_layers,
                             const std::string& config_origin) {
  static const std::string kPrefix = "model.layers.";
  std::vector<std::pair<int64_t, std::string>> extra;  // (layer, name)
  for (const std::string& name : model.names()) {
    if (name.compare(0, kPrefix.size(), kPrefix) != 0) continue;
    size_t end = kPrefix.size();
    while (end < name.size() && end < kPrefix.size() + 9 && name[end] >= '0' && name[end] <= '9') ++end;
    if (end == kPrefix.size() || end >= name.size() || name[end] != '.') continue;
    const int64_t layer = std::stoll(name.substr(kPrefix.size(), end - kPrefix.size()));
    if (layer >= num_hidden_layers) extra.emplace_back(layer, name);
  }
  if (extra.empty()) return;
  std::sort(extra.begin(), extra.end());
  constexpr size_t kShown = 4;
  std::vector<std::string> shown;
  for (size_t i = 0; i < extra.size() && i < kShown; ++i) shown.push_back(text::printable(extra[i].second));
  const std::string more = extra.size() > kShown ? fmt::format(" and {} more", extra.size() - kShown) : "";
  const std::string layers = extra.front().first == extra.back().first
                                 ? fmt::format("layer {}", extra.front().first)
                                 : fmt::format("layers {} to {}", extra.front().first, extra.back().first);
  fail(
      "{}: {} tensor(s) belong to decoder {}, which {} does not declare (num_hidden_layers {}: layers 0 to {}): "
      "{}{}. The weights and config.json disagree (another model's config.json, or an incomplete conversion); use "
      "the config.json saved with these weights",
      model.origin(), extra.size(), layers, config_origin, num_hidden_layers, num_hidden_layers - 1,
      text::join(shown, ", "), more);
}

std::string serialize_safetensors(const std::vector<TensorBytes>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    check_name(t.name, "safetensors writer");
    if (t.name == "__metadata__" || h.contains(t.name))
      fail("safetensors writer: duplicate or reserved name '{}'", t.name);
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) fail("safetensors writer: tensor '{}' has a negative dimension", t.name);
      numel *= static_cast<uint64_t>(d);
    }
    if (numel * dtype_size(t.dtype) != t.nbytes)
      fail("safetensors writer: tensor '{}' has {} bytes but {} x {} elements needs {}", t.name, t.nbytes,
           dtype_name(t.dtype), numel, numel * dtype_size(t.dtype));
    h[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + header.size() + offset);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += header;
  for (const auto& t : tensors) out.append(static_cast<const char*>(t.data), t.nbytes);
  return out;
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorBytes>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  fs::write_file_atomic(path, serialize_safetensors(tensors, metadata));
}

}  // namespace zlora::model
