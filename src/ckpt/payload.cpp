#include "zlora/ckpt/payload.h"

#include "zlora/core/error.h"

#include <cstring>
#include <vector>

namespace zlora::ckpt {

namespace {
constexpr char kMagic[8] = {'Z', 'L', 'P', 'A', 'Y', 'L', 'D', '1'};

void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(char((v >> (8 * i)) & 0xff));
}
}  // namespace

void Payload::set(const std::string& name, std::string bytes) {
  ZLORA_REQUIRE(!name.empty(), "a checkpoint payload section needs a name");
  sections_[name] = std::move(bytes);
}

const std::string& Payload::get(const std::string& name) const {
  auto it = sections_.find(name);
  if (it == sections_.end()) {
    std::string present;
    for (const auto& [k, v] : sections_) present += (present.empty() ? "" : ", ") + k;
    fail("checkpoint payload has no section '{}' (present: {}); was it written by another zlora version?", name,
         present.empty() ? "none" : present);
  }
  return it->second;
}

std::string Payload::serialize() const {
  std::string out(kMagic, sizeof kMagic);
  put_u64(out, sections_.size());
  for (const auto& [name, bytes] : sections_) {
    put_u64(out, name.size());
    out += name;
    put_u64(out, bytes.size());
    out += bytes;
  }
  return out;
}

Payload Payload::parse(std::string_view bytes, const std::string& what) {
  size_t pos = 0;
  auto need = [&](size_t n) {
    ZLORA_REQUIRE(bytes.size() - pos >= n, "{} is truncated ({} bytes; needs more at offset {})", what, bytes.size(),
                  pos);
  };
  auto get_u64 = [&] {
    need(8);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t(uint8_t(bytes[pos + i])) << (8 * i);
    pos += 8;
    return v;
  };
  need(sizeof kMagic);
  ZLORA_REQUIRE(std::memcmp(bytes.data(), kMagic, sizeof kMagic) == 0, "{} is not a zlora payload (bad magic)", what);
  pos += sizeof kMagic;
  Payload p;
  uint64_t count = get_u64();
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t name_len = get_u64();
    need(name_len);
    std::string name(bytes.substr(pos, name_len));
    pos += name_len;
    uint64_t size = get_u64();
    need(size);
    ZLORA_REQUIRE(!name.empty() && !p.has(name), "{}: empty or repeated section name '{}'", what, name);
    p.sections_[name] = std::string(bytes.substr(pos, size));
    pos += size;
  }
  ZLORA_REQUIRE(pos == bytes.size(), "{} has {} trailing bytes", what, bytes.size() - pos);
  return p;
}

}  // namespace zlora::ckpt
