// SHA-256 of bytes and files (token-store provenance, checkpoint manifests).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace zlora {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(std::string_view s) { update(s.data(), s.size()); }
  std::string hex();  // finishes the hash; the object must not be updated afterwards

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(std::string_view data);
// Streams the file; throws zlora::Error naming the path when it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace zlora
