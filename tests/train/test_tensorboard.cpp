// TensorBoard event files (train/tensorboard.h): CRC-32C's check value, one Event's bytes as the
// protobuf spec lays them out, and RunLogger's files read back by an independent reader written here
// from the TFRecord and protobuf specifications (bitwise CRC, its own varint decoder).
#include "test_util.h"
#include "zlora/train/run_logger.h"
#include "zlora/train/tensorboard.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>

using namespace zlora::train;
using zlora::test::read_file;
using zlora::test::TempDir;
namespace stdfs = std::filesystem;

namespace {

// Bit by bit, not the writer's table: the reference for the frames' checksums.
uint32_t crc32c_bitwise(std::string_view s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
  }
  return ~c;
}
uint32_t mask(uint32_t c) { return ((c >> 15) | (c << 17)) + 0xa282ead8u; }

template <typename T>
T read_le(std::string_view s, size_t at) {
  T v;
  std::memcpy(&v, s.data() + at, sizeof(T));
  return v;
}

uint64_t varint(std::string_view s, size_t& at) {
  uint64_t v = 0;
  for (int shift = 0;; shift += 7) {
    const uint8_t b = static_cast<uint8_t>(s.at(at++));
    v |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
}

struct Scalar {
  double wall_time = 0;
  int64_t step = 0;
  std::string tag;
  float value = 0;
};

// The events of a file: checks every frame's two CRCs and decodes Event{1 wall_time, 2 step,
// 3 file_version, 5 summary{1 value{1 tag, 2 simple_value}}}.
std::vector<Scalar> read_events(const std::string& file, std::string* file_version) {
  std::vector<Scalar> out;
  size_t at = 0;
  while (at < file.size()) {
    EXPECT_LE(at + 12, file.size());
    const std::string_view len_bytes(file.data() + at, 8);
    const uint64_t len = read_le<uint64_t>(file, at);
    EXPECT_EQ(read_le<uint32_t>(file, at + 8), mask(crc32c_bitwise(len_bytes)));
    const std::string_view data(file.data() + at + 12, len);
    EXPECT_EQ(read_le<uint32_t>(file, at + 12 + len), mask(crc32c_bitwise(data)));
    at += 12 + len + 4;
    Scalar ev;
    bool scalar = false;
    for (size_t p = 0; p < data.size();) {
      const uint64_t key = varint(data, p);
      const int field = int(key >> 3), wire = int(key & 7);
      if (field == 1 && wire == 1) {
        ev.wall_time = read_le<double>(data, p);
        p += 8;
      } else if (field == 2 && wire == 0) {
        ev.step = int64_t(varint(data, p));
      } else if (wire == 2) {
        const uint64_t n = varint(data, p);
        const std::string_view sub = data.substr(p, n);
        p += n;
        if (field == 3) *file_version = std::string(sub);
        if (field != 5) continue;
        size_t q = 0;
        EXPECT_EQ(varint(sub, q), (1u << 3) | 2u);  // Summary.value
        const uint64_t vn = varint(sub, q);
        const std::string_view value = sub.substr(q, vn);
        for (size_t r = 0; r < value.size();) {
          const uint64_t vk = varint(value, r);
          if (vk == ((1u << 3) | 2u)) {
            const uint64_t tn = varint(value, r);
            ev.tag = std::string(value.substr(r, tn));
            r += tn;
          } else {
            EXPECT_EQ(vk, (2u << 3) | 5u);  // simple_value, fixed32
            ev.value = read_le<float>(value, r);
            r += 4;
          }
        }
        scalar = true;
      } else {
        ADD_FAILURE() << "unexpected field " << field << " wire type " << wire;
        return out;
      }
    }
    if (scalar) out.push_back(ev);
  }
  return out;
}

}  // namespace

TEST(TensorBoard, Crc32cCheckValue) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);  // the CRC-32C check value (RFC 3720, B.4)
  EXPECT_EQ(crc32c(""), 0u);
  EXPECT_EQ(crc32c("brain.Event:2"), crc32c_bitwise("brain.Event:2"));
  EXPECT_EQ(masked_crc32c("123456789"), mask(0xE3069283u));
}

TEST(TensorBoard, ScalarEventBytesFollowTheProtobufLayout) {
  const std::string e = encode_scalar_event(1.5, 300, "train/loss", 2.0f);
  std::string want;
  const double wt = 1.5;
  const float v = 2.0f;
  want += '\x09';  // field 1 (wall_time), fixed64
  want.append(reinterpret_cast<const char*>(&wt), 8);
  want += "\x10\xac\x02";  // field 2 (step), varint 300
  want += "\x2a\x13";      // field 5 (summary), 19 bytes: the value's tag, length and 17 bytes
  want += "\x0a\x11";      // Summary.value, 17 bytes: tag (2 + 10) and simple_value (1 + 4)
  want +=
      "\x0a\x0a"
      "train/loss";  // Value.tag
  want += '\x15';    // Value.simple_value, fixed32
  want.append(reinterpret_cast<const char*>(&v), 4);
  EXPECT_EQ(e, want);
  const std::string f = frame_record("abc");
  ASSERT_EQ(f.size(), 8u + 4 + 3 + 4);
  EXPECT_EQ(read_le<uint64_t>(f, 0), 3u);
  EXPECT_EQ(read_le<uint32_t>(f, 15), mask(crc32c_bitwise("abc")));
}

TEST(TensorBoard, RunLoggerWritesTheLogPointsAndEvaluations) {
  TempDir out;
  RunLoggerOptions o;
  o.output_dir = out.path();
  o.total_steps = 4;
  o.steps_per_epoch = 2;
  o.logging_steps = 2;
  o.save_steps = 0;
  o.num_train_epochs = 2;
  o.console = false;
  o.tensorboard_dir = out / "runs" / "x";
  {
    RunLogger logger(o, 0.0);
    for (int i = 0; i < 4; ++i) logger.on_step({4.0 - i, 1e-3, 0.5, 100, 4, 0}, double(i + 1));
    EvalResults e;
    e.eval_loss = 1.25;
    e.eval_runtime = 0.5;
    e.step = 4;
    logger.on_eval(e, 5.0);
    logger.finish(6.0);
  }
  std::vector<stdfs::path> files;
  for (const auto& f : stdfs::directory_iterator(out / "runs" / "x")) files.push_back(f.path());
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0].filename().string().rfind("events.out.tfevents.", 0), 0u) << files[0];
  std::string version;
  const std::vector<Scalar> ev = read_events(read_file(files[0]), &version);
  EXPECT_EQ(version, "brain.Event:2");
  std::map<std::string, std::vector<std::pair<int64_t, float>>> by_tag;
  for (const auto& s : ev) {
    by_tag[s.tag].emplace_back(s.step, s.value);
    EXPECT_GT(s.wall_time, 1.6e9);  // wall-clock seconds, not the monotonic clock the logger runs on
  }
  using V = std::vector<std::pair<int64_t, float>>;
  EXPECT_EQ(by_tag["train/loss"], (V{{2, 3.5f}, {4, 1.5f}}));  // the window means, as trainer_log.jsonl
  EXPECT_EQ(by_tag["train/learning_rate"], (V{{2, 1e-3f}, {4, 1e-3f}}));
  EXPECT_EQ(by_tag["train/grad_norm"], (V{{2, 0.5f}, {4, 0.5f}}));
  EXPECT_EQ(by_tag["train/epoch"], (V{{2, 1.0f}, {4, 2.0f}}));
  EXPECT_EQ(by_tag["eval/loss"], (V{{4, 1.25f}}));
  EXPECT_EQ(by_tag["train/tokens_per_second"].size(), 2u);
}

TEST(TensorBoard, DefaultLoggingDirIsHfs) {
  const stdfs::path d = default_logging_dir("out");
  EXPECT_EQ(d.parent_path(), stdfs::path("out") / "runs");
  // <Mon><DD>_<HH>-<MM>-<SS>_<host>
  const std::string name = d.filename().string();
  ASSERT_GT(name.size(), 15u);
  EXPECT_EQ(name[5], '_');
  EXPECT_EQ(name[8], '-');
  EXPECT_EQ(name[11], '-');
  EXPECT_EQ(name[14], '_');
}
