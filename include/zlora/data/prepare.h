// The steps of `zlora prepare` that are independent of MPI: tokenize a slice of the conversations into
// flat ids/labels, and summarise the result.
#pragma once

#include "zlora/data/template.h"

#include <cstdint>
#include <string>
#include <vector>

namespace zlora::data {

// Samples [begin, end) of the corpus, concatenated.
struct Shard {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> labels;
  std::vector<int64_t> lengths;           // per sample
  std::vector<int64_t> prompt_lengths;    // source tokens kept, per sample
  std::vector<int64_t> response_lengths;  // target tokens kept, per sample
  int64_t text_bytes = 0;                 // UTF-8 bytes of the conversations tokenized
};

Shard tokenize_rows(const ChatTemplate& tmpl, const std::vector<Conversation>& rows, size_t begin, size_t end,
                    const SampleOptions& opt);

// A text histogram of lengths in power-of-two buckets ("    65-128  ###### 412").
std::string length_histogram(const std::vector<int64_t>& lengths, const std::string& title);

}  // namespace zlora::data
