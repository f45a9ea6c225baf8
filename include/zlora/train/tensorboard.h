// TensorBoard event files (report_to tensorboard), written without TensorFlow or protobuf: the file
// is a sequence of TFRecords, each an `Event` protobuf (tensorflow/core/util/event.proto), framed as
//   uint64 length | uint32 masked CRC-32C of the length | data | uint32 masked CRC-32C of the data
// (tensorflow/core/lib/io/record_writer.cc; mask: ((crc >> 15) | (crc << 17)) + 0xa282ead8). The first
// event names the format ("brain.Event:2"); each scalar is an Event{wall_time, step, summary{value{tag,
// simple_value}}}, which TensorBoard's scalar dashboard reads. Tags follow HF's TensorBoardCallback:
// train/loss, train/learning_rate, train/grad_norm, ..., eval/loss. Rank 0 only. No LibTorch.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

namespace zlora::train {

// CRC-32C (Castagnoli), as TFRecord frames use it; and TensorFlow's masked form.
uint32_t crc32c(std::string_view data);
uint32_t masked_crc32c(std::string_view data);

// The Event protobufs written (exposed for the tests).
std::string encode_file_version_event(double wall_time);
std::string encode_scalar_event(double wall_time, int64_t step, std::string_view tag, float value);
// One TFRecord frame around `data`.
std::string frame_record(std::string_view data);

class TensorBoardWriter {
 public:
  // Creates `dir` and a new event file in it, events.out.tfevents.<unix time>.<host>.<pid>.<n>, with the
  // file-version event. Throws zlora::Error when it cannot be written.
  TensorBoardWriter(const std::filesystem::path& dir, double wall_time);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void scalar(std::string_view tag, double value, int64_t step, double wall_time);
  void flush();  // after each log point: TensorBoard reads a growing file
  const std::filesystem::path& path() const { return path_; }

 private:
  void write(const std::string& record);
  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
};

}  // namespace zlora::train
