// Text generation with a KV cache (Decoder::decode), with transformers' logits processing so that a
// seed user's LLaMA-Factory settings mean the same thing:
//   repetition penalty → (greedy: argmax) | temperature → top-k → top-p → multinomial.
// Sampling runs on the CPU with a generator seeded from --seed, so the stream does not depend on the
// device the model runs on.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "zlora/config/args.h"
#include "zlora/model/decoder.h"

namespace zlora::exporter {

struct SamplingOptions {
  int64_t max_new_tokens = 1024;
  bool do_sample = true;  // false: greedy
  double temperature = 0.95;
  double top_p = 0.7;
  int64_t top_k = 50;  // 0: off
  double repetition_penalty = 1.0;
  uint64_t seed = 42;
};

SamplingOptions sampling_options(const config::GenerateConfig& cfg);

// The next token for `logits` [vocab] (any device, any float dtype) after the tokens `context`.
int64_t next_token(const at::Tensor& logits, const std::vector<int64_t>& context, const SamplingOptions& options,
                   at::Generator& generator);

struct Generation {
  std::vector<int64_t> ids;  // new tokens; ends with the stop token when one was produced
  bool stopped = false;      // a stop token ended it (not max_new_tokens)
  double prefill_seconds = 0, decode_seconds = 0;
};

// Feeds `prompt` through the decoder (one call, filling the KV cache), then one token at a time until a
// token of `stop_ids` or max_new_tokens. `on_token` sees each new token as it is produced.
Generation generate(const model::Decoder& decoder, const std::vector<int64_t>& prompt, const SamplingOptions& options,
                    const std::vector<int64_t>& stop_ids, const std::function<void(int64_t)>& on_token = {});

// A base model with its adapters, ready to decode. With several adapters all but the last are merged into
// the weights in memory (in turn, in fp32, as LLaMA-Factory merges them); the last is applied unmerged
// (PEFT's numerics, the trainer's forward).
class LoadedModel {
 public:
  LoadedModel(const std::filesystem::path& base_dir, const std::vector<std::filesystem::path>& adapters,
              at::Device device, at::ScalarType dtype);
  const model::Decoder& decoder() const { return *decoder_; }
  const model::ModelConfig& config() const { return config_; }

 private:
  model::ModelConfig config_;
  std::unique_ptr<model::ResidentWeightStore> store_;
  std::vector<model::LoraAdapter> adapters_;
  std::unique_ptr<model::Decoder> decoder_;
};

}  // namespace zlora::exporter
