#include "store_batches.h"

#include "zlora/core/sha256.h"
#include "zlora/data/template.h"

#include <algorithm>

namespace zlora::train {

std::vector<int64_t> count_loss_tokens(const data::TokenStore& store) {
  std::vector<int64_t> out(store.size(), 0);
  const size_t block = 4096;
  for (size_t b = 0; b < store.size(); b += block) {
    std::vector<size_t> idx;
    for (size_t i = b; i < std::min(store.size(), b + block); ++i) idx.push_back(i);
    auto samples = store.read(idx);
    for (size_t k = 0; k < samples.size(); ++k) {
      const auto& l = samples[k].labels;
      int64_t n = 0;
      for (size_t t = 1; t < l.size(); ++t) n += l[t] != data::kIgnoreIndex;
      out[idx[k]] = n;
    }
  }
  return out;
}

model::PackedBatch read_batch(const data::TokenStore& store, const std::vector<int64_t>& samples) {
  std::vector<size_t> idx(samples.begin(), samples.end());
  auto stored = store.read(idx);
  std::vector<std::vector<int64_t>> ids, labels;
  for (auto& s : stored) {
    ids.emplace_back(s.input_ids.begin(), s.input_ids.end());
    labels.emplace_back(s.labels.begin(), s.labels.end());
  }
  return model::PackedBatch::from_samples(ids, labels);
}

std::string data_hash(const data::TokenStore& store) {
  const auto& m = store.meta();
  Sha256 h;
  h.update(m.tokenizer_sha256);
  h.update(m.template_name);
  h.update(std::to_string(m.cutoff_len) + (m.train_on_prompt ? "p" : "-") + (m.mask_history ? "h" : "-"));
  for (const auto& s : m.sources)
    for (const auto& sha : s.sha256s) h.update(sha);
  h.update(std::to_string(m.num_samples) + "/" + std::to_string(m.num_tokens));
  return h.hex();
}

}  // namespace zlora::train
