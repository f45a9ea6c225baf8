#include "zlora/train/checkpoint_state.h"

#include "zlora/ckpt/payload.h"
#include "zlora/core/error.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstring>

namespace zlora::train {

namespace {

constexpr size_t kSliceFloats = 3;  // master, exp_avg, exp_avg_sq

std::string encode_scaler(const ScalerCheckpoint& s) {
  return nlohmann::json{{"scale", s.state.scale},
                        {"iter", s.state.iter},
                        {"last_overflow_iter", s.state.last_overflow_iter},
                        {"hysteresis", s.state.hysteresis},
                        {"skipped_steps", s.skipped_steps},
                        {"last_grad_norm", s.last_grad_norm}}
      .dump();
}

ScalerCheckpoint decode_scaler(const std::string& text, const std::string& origin) {
  ScalerCheckpoint s;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    s.state.scale = j.at("scale").get<double>();
    s.state.iter = j.at("iter").get<int64_t>();
    s.state.last_overflow_iter = j.at("last_overflow_iter").get<int64_t>();
    s.state.hysteresis = j.at("hysteresis").get<int64_t>();
    s.skipped_steps = j.at("skipped_steps").get<long long>();
    s.last_grad_norm = j.at("last_grad_norm").get<double>();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: corrupt loss scaler state: {}", origin, e.what());
  }
  if (s.skipped_steps < 0) fail("{}: corrupt loss scaler state: {} skipped steps", origin, s.skipped_steps);
  return s;
}

zero::OptimizerState decode_optimizer(const ckpt::Payload& p, const std::string& origin) {
  zero::OptimizerState out;
  try {
    const nlohmann::json meta = nlohmann::json::parse(p.get("zero"));
    out.step = meta.at("adam_step").get<int64_t>();
    const std::string& data = p.get("zero_data");
    size_t at_byte = 0;
    for (const auto& j : meta.at("slices")) {
      zero::StateSlice s;
      s.name = j.at("name").get<std::string>();
      s.shape = j.at("shape").get<std::vector<int64_t>>();
      s.offset = j.at("offset").get<int64_t>();
      const int64_t n = j.at("numel").get<int64_t>();
      // Compared before any multiplication: a forged count (2^62 + 1) must not wrap around.
      const size_t left = (data.size() - at_byte) / (kSliceFloats * sizeof(float));
      if (n < 0 || static_cast<uint64_t>(n) > left)
        fail("{}: corrupt optimizer state: slice of {} claims {} elements, but only {} remain in the file", origin,
             s.name, n, left);
      const size_t bytes = static_cast<size_t>(n) * sizeof(float);
      for (at::Tensor* t : {&s.master, &s.exp_avg, &s.exp_avg_sq}) {
        *t = at::empty({n}, at::kFloat);
        std::memcpy(t->data_ptr(), data.data() + at_byte, bytes);
        at_byte += bytes;
      }
      out.slices.push_back(std::move(s));
    }
    if (at_byte != data.size())
      fail("{}: corrupt optimizer state: {} bytes of state data follow the last slice", origin, data.size() - at_byte);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: corrupt optimizer state: {}", origin, e.what());
  }
  return out;
}

}  // namespace

std::string encode_rank_checkpoint(const RankCheckpoint& c) {
  ckpt::Payload p;
  nlohmann::json meta = {{"adam_step", c.optimizer.step}, {"slices", nlohmann::json::array()}};
  std::string data;
  for (const auto& sl : c.optimizer.slices) {
    meta["slices"].push_back(
        {{"name", sl.name}, {"shape", sl.shape}, {"offset", sl.offset}, {"numel", sl.master.numel()}});
    for (const at::Tensor& t : {sl.master, sl.exp_avg, sl.exp_avg_sq}) {
      at::Tensor h = t.to(at::kCPU, at::kFloat).contiguous();
      data.append(static_cast<const char*>(h.data_ptr()), static_cast<size_t>(h.numel()) * sizeof(float));
    }
  }
  p.set("zero", meta.dump());
  p.set("zero_data", std::move(data));
  p.set("sampler", c.sampler);
  if (!c.rng.empty()) p.set("rng", c.rng);
  if (!c.logger.empty()) p.set("logger", c.logger);
  if (c.scaler) p.set("loss_scaler", encode_scaler(*c.scaler));
  return p.serialize();
}

RankCheckpoint decode_rank_checkpoint(std::string_view bytes, const std::string& origin) {
  const ckpt::Payload p = ckpt::Payload::parse(bytes, origin);
  RankCheckpoint c;
  c.optimizer = decode_optimizer(p, origin);
  c.sampler = p.get("sampler");
  if (p.has("rng")) c.rng = p.get("rng");
  if (p.has("logger")) c.logger = p.get("logger");
  if (p.has("loss_scaler")) c.scaler = decode_scaler(p.get("loss_scaler"), origin);
  return c;
}

}  // namespace zlora::train
