// A rank file's contents: named byte sections ("zero", "rng", "sampler", ...) in one self-describing
// blob, so the trainer can store its ZeRO slices, RNG states and sampler position in the single
// rank-XXXXX.bin that the checkpoint protocol writes and verifies. The format is little-endian:
//   "ZLPAYLD1" | u64 count | count x (u64 name_len | name | u64 size | bytes)
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace zlora::ckpt {

class Payload {
 public:
  void set(const std::string& name, std::string bytes);
  bool has(const std::string& name) const { return sections_.count(name) != 0; }
  // Throws zlora::Error naming the missing section and the ones present.
  const std::string& get(const std::string& name) const;
  const std::map<std::string, std::string>& sections() const { return sections_; }

  std::string serialize() const;
  // Throws zlora::Error on a truncated or foreign blob; `what` names it in messages (e.g. the file).
  static Payload parse(std::string_view bytes, const std::string& what = "checkpoint payload");

 private:
  std::map<std::string, std::string> sections_;
};

}  // namespace zlora::ckpt
