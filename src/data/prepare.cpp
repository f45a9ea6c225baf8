#include "zlora/data/prepare.h"

#include <fmt/format.h>

#include <algorithm>

namespace zlora::data {

Shard tokenize_rows(const ChatTemplate& tmpl, const std::vector<Conversation>& rows, size_t begin, size_t end,
                    const SampleOptions& opt) {
  Shard s;
  BpeCache cache;
  for (size_t i = begin; i < end && i < rows.size(); ++i) {
    const Conversation& c = rows[i];
    s.text_bytes += int64_t(c.system.size());
    for (const Message& m : c.messages) s.text_bytes += int64_t(m.content.size());
    Sample sample = tmpl.build_sample(c, opt, cache);
    s.lengths.push_back(int64_t(sample.input_ids.size()));
    s.prompt_lengths.push_back(sample.prompt_tokens);
    s.response_lengths.push_back(sample.response_tokens);
    s.input_ids.insert(s.input_ids.end(), sample.input_ids.begin(), sample.input_ids.end());
    s.labels.insert(s.labels.end(), sample.labels.begin(), sample.labels.end());
  }
  return s;
}

std::string length_histogram(const std::vector<int64_t>& lengths, const std::string& title) {
  if (lengths.empty()) return title + ": (no samples)\n";
  std::vector<int64_t> counts(64, 0);
  int top = 0;
  for (int64_t l : lengths) {
    int b = 0;
    while ((int64_t(1) << b) < l) ++b;  // bucket b holds (2^(b-1), 2^b]
    ++counts[b];
    top = std::max(top, b);
  }
  int low = 0;
  while (counts[low] == 0) ++low;
  int64_t peak = *std::max_element(counts.begin(), counts.end());
  std::vector<int64_t> sorted = lengths;
  std::sort(sorted.begin(), sorted.end());
  double mean = 0;
  for (int64_t l : lengths) mean += double(l);
  mean /= double(lengths.size());
  std::string out = fmt::format("{}: min {}, median {}, mean {:.1f}, max {}\n", title, sorted.front(),
                                sorted[sorted.size() / 2], mean, sorted.back());
  for (int b = low; b <= top; ++b) {
    int64_t lo = b == 0 ? 0 : (int64_t(1) << (b - 1)) + 1, hi = int64_t(1) << b;
    std::string bar(size_t(40 * counts[b] / peak), '#');
    out += fmt::format("  {:>6}-{:<6} {:<40} {}\n", lo, hi, bar, counts[b]);
  }
  return out;
}

}  // namespace zlora::data
