// train/checkpoint_state.h: one rank's checkpoint file for the SFT recipe, encoded as ckpt::Payload
// sections. Round trips exactly, and refuses truncated, forged and foreign files with the file named,
// without sizing an allocation from an unchecked count.
#include "test_util.h"
#include "zlora/ckpt/payload.h"
#include "zlora/train/checkpoint_state.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <string>

using zlora::train::decode_rank_checkpoint;
using zlora::train::encode_rank_checkpoint;
using zlora::train::RankCheckpoint;

using zlora::test::expect_error;

namespace {

RankCheckpoint sample() {
  RankCheckpoint c;
  c.optimizer.step = 7;
  for (int i = 0; i < 2; ++i) {
    zlora::zero::StateSlice s;
    s.name = "model.layers." + std::to_string(i) + ".self_attn.q_proj.lora_A.weight";
    s.shape = {4, 8};
    s.offset = 3 * i;
    s.master = torch::randn({5 + i});
    s.exp_avg = torch::randn({5 + i});
    s.exp_avg_sq = torch::rand({5 + i});
    c.optimizer.slices.push_back(s);
  }
  c.sampler = "{\"position\": 3}";
  c.rng = std::string("\x00\x01\x02rng", 6);
  c.logger = "{\"window\": []}";
  zlora::train::ScalerCheckpoint sc;
  sc.state.scale = 1024;
  sc.skipped_steps = 2;
  sc.last_grad_norm = 0.5;
  c.scaler = sc;
  return c;
}

// The sample's file with its "zero" metadata replaced by `meta` (and optionally its data).
std::string with_zero(const nlohmann::json& meta, const std::string* data = nullptr) {
  zlora::ckpt::Payload p = zlora::ckpt::Payload::parse(encode_rank_checkpoint(sample()));
  p.set("zero", meta.dump());
  if (data) p.set("zero_data", *data);
  return p.serialize();
}

nlohmann::json sample_meta() {
  zlora::ckpt::Payload p = zlora::ckpt::Payload::parse(encode_rank_checkpoint(sample()));
  return nlohmann::json::parse(p.get("zero"));
}

}  // namespace

TEST(RankCheckpointCodec, RoundTripsExactly) {
  const RankCheckpoint c = sample();
  const RankCheckpoint d = decode_rank_checkpoint(encode_rank_checkpoint(c), "rank-00000.bin");
  EXPECT_EQ(d.optimizer.step, 7);
  ASSERT_EQ(d.optimizer.slices.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const auto &a = c.optimizer.slices[i], &b = d.optimizer.slices[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.shape, b.shape);
    EXPECT_EQ(a.offset, b.offset);
    EXPECT_TRUE(torch::equal(a.master, b.master));
    EXPECT_TRUE(torch::equal(a.exp_avg, b.exp_avg));
    EXPECT_TRUE(torch::equal(a.exp_avg_sq, b.exp_avg_sq));
  }
  EXPECT_EQ(d.sampler, c.sampler);
  EXPECT_EQ(d.rng, c.rng);
  EXPECT_EQ(d.logger, c.logger);
  ASSERT_TRUE(d.scaler);
  EXPECT_EQ(d.scaler->state.scale, 1024);
  EXPECT_EQ(d.scaler->skipped_steps, 2);
  EXPECT_EQ(d.scaler->last_grad_norm, 0.5);
  // Optional sections stay absent.
  RankCheckpoint bare = sample();
  bare.rng.clear();
  bare.logger.clear();
  bare.scaler.reset();
  const RankCheckpoint e = decode_rank_checkpoint(encode_rank_checkpoint(bare), "f");
  EXPECT_TRUE(e.rng.empty());
  EXPECT_TRUE(e.logger.empty());
  EXPECT_FALSE(e.scaler);
}

TEST(RankCheckpointCodec, AForgedElementCountIsRefusedBeforeAnyAllocation) {
  for (const int64_t forged : {int64_t(-1), int64_t(7), (int64_t(1) << 62) + 1, INT64_MAX}) {
    SCOPED_TRACE(forged);
    nlohmann::json meta = sample_meta();
    meta["slices"][1]["numel"] = forged;
    const std::string msg = expect_error([&] { decode_rank_checkpoint(with_zero(meta), "out/rank-00001.bin"); });
    EXPECT_NE(msg.find("out/rank-00001.bin: corrupt optimizer state: slice of "), std::string::npos) << msg;
    EXPECT_NE(msg.find("claims " + std::to_string(forged) + " elements"), std::string::npos) << msg;
  }
}

TEST(RankCheckpointCodec, TrailingOrMissingDataIsRefused) {
  zlora::ckpt::Payload p = zlora::ckpt::Payload::parse(encode_rank_checkpoint(sample()));
  std::string data = p.get("zero_data") + std::string(12, '\0');
  std::string msg = expect_error([&] { decode_rank_checkpoint(with_zero(sample_meta(), &data), "f.bin"); });
  EXPECT_NE(msg.find("12 bytes of state data follow the last slice"), std::string::npos) << msg;
  data = p.get("zero_data").substr(0, 10);
  msg = expect_error([&] { decode_rank_checkpoint(with_zero(sample_meta(), &data), "f.bin"); });
  EXPECT_NE(msg.find("claims 5 elements, but only 0 remain"), std::string::npos) << msg;
}

TEST(RankCheckpointCodec, ForeignOrTruncatedFilesNameTheFile) {
  const std::string good = encode_rank_checkpoint(sample());
  std::string msg = expect_error([&] { decode_rank_checkpoint(good.substr(0, good.size() / 2), "ck/rank-00003.bin"); });
  EXPECT_NE(msg.find("ck/rank-00003.bin"), std::string::npos) << msg;
  msg = expect_error([&] { decode_rank_checkpoint("PK\x03\x04 not a zlora payload", "ck/rank-00003.bin"); });
  EXPECT_NE(msg.find("ck/rank-00003.bin"), std::string::npos) << msg;
  nlohmann::json meta = sample_meta();
  meta["slices"][0].erase("offset");
  msg = expect_error([&] { decode_rank_checkpoint(with_zero(meta), "ck/rank-00003.bin"); });
  EXPECT_NE(msg.find("ck/rank-00003.bin: corrupt optimizer state"), std::string::npos) << msg;
  zlora::ckpt::Payload p;
  p.set("zero", sample_meta().dump());
  msg = expect_error([&] { decode_rank_checkpoint(p.serialize(), "ck/rank-00003.bin"); });
  EXPECT_NE(msg.find("zero_data"), std::string::npos) << msg;
}
