// The recipe's reads of the token store: the loss-target count of every sample (for the step planner),
// a micro-batch packed for the decoder, and the hash that identifies the training data of a run.
#pragma once

#include "zlora/data/token_store.h"
#include "zlora/model/decoder.h"

#include <cstdint>
#include <string>
#include <vector>

namespace zlora::train {

// Loss targets per sample after the causal shift (labels[1:] != -100), read in blocks so that a rank
// never holds more than a block of the corpus.
std::vector<int64_t> count_loss_tokens(const data::TokenStore& store);

model::PackedBatch read_batch(const data::TokenStore& store, const std::vector<int64_t>& samples);

// What identifies the training data of a run (the output-dir check): the store's provenance.
std::string data_hash(const data::TokenStore& store);

}  // namespace zlora::train
