#include "zlora/train/tensorboard.h"

#include "zlora/core/error.h"
#include "zlora/core/fs.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace zlora::train {

namespace {

// CRC-32C, reflected polynomial 0x82F63B78, one table of 256.
const std::array<uint32_t, 256>& crc_table() {
  static const std::array<uint32_t, 256> t = [] {
    std::array<uint32_t, 256> table{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      table[i] = c;
    }
    return table;
  }();
  return t;
}

// Protobuf wire format: varints, tags (field << 3 | wire type), little-endian fixed64/fixed32.
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void put_tag(std::string& out, int field, int wire_type) { put_varint(out, (uint64_t(field) << 3) | wire_type); }
template <typename T>
void put_fixed(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // x86-64 and aarch64 are little-endian, as the wire format
  out.append(b, sizeof(T));
}
void put_bytes(std::string& out, int field, std::string_view bytes) {
  put_tag(out, field, 2);
  put_varint(out, bytes.size());
  out.append(bytes.data(), bytes.size());
}

// Event fields (event.proto): wall_time = 1 (double), step = 2 (int64), file_version = 3 (string),
// summary = 5 (Summary). Summary: value = 1 (Value). Summary.Value: tag = 1, simple_value = 2 (float).
std::string event_header(double wall_time, int64_t step) {
  std::string e;
  put_tag(e, 1, 1);
  put_fixed(e, wall_time);
  if (step != 0) {
    put_tag(e, 2, 0);
    put_varint(e, static_cast<uint64_t>(step));
  }
  return e;
}

}  // namespace

uint32_t crc32c(std::string_view data) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : data) c = crc_table()[(c ^ b) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(std::string_view data) {
  const uint32_t c = crc32c(data);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string encode_file_version_event(double wall_time) {
  std::string e = event_header(wall_time, 0);
  put_bytes(e, 3, "brain.Event:2");
  return e;
}

std::string encode_scalar_event(double wall_time, int64_t step, std::string_view tag, float value) {
  std::string v;
  put_bytes(v, 1, tag);
  put_tag(v, 2, 5);
  put_fixed(v, value);
  std::string summary;
  put_bytes(summary, 1, v);
  std::string e = event_header(wall_time, step);
  put_bytes(e, 5, summary);
  return e;
}

std::string frame_record(std::string_view data) {
  std::string out, len;
  put_fixed(len, static_cast<uint64_t>(data.size()));
  out += len;
  put_fixed(out, masked_crc32c(len));
  out.append(data.data(), data.size());
  put_fixed(out, masked_crc32c(data));
  return out;
}

TensorBoardWriter::TensorBoardWriter(const std::filesystem::path& dir, double wall_time) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail("cannot create the TensorBoard directory '{}': {}", dir.string(), ec.message());
  char host[256] = "localhost";
  ::gethostname(host, sizeof(host) - 1);
  // tensorboardX / torch.utils.tensorboard's name; the counter keeps two writers of one process apart.
  for (int n = 0;; ++n) {
    path_ = dir / fmt::format("events.out.tfevents.{}.{}.{}.{}", static_cast<long long>(wall_time), host,
                              static_cast<long long>(::getpid()), n);
    if (!std::filesystem::exists(path_)) break;
  }
  file_ = std::fopen(path_.c_str(), "wb");
  if (!file_) fail("cannot create the TensorBoard event file '{}': {}", path_.string(), fs::errno_message(errno));
  write(frame_record(encode_file_version_event(wall_time)));
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fclose(file_);
}

void TensorBoardWriter::scalar(std::string_view tag, double value, int64_t step, double wall_time) {
  write(frame_record(encode_scalar_event(wall_time, step, tag, static_cast<float>(value))));
}

void TensorBoardWriter::write(const std::string& record) {
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size())
    fail("cannot write the TensorBoard event file '{}': {}", path_.string(), fs::errno_message(errno));
}

void TensorBoardWriter::flush() {
  if (std::fflush(file_) != 0)
    fail("cannot write the TensorBoard event file '{}': {}", path_.string(), fs::errno_message(errno));
}

}  // namespace zlora::train
