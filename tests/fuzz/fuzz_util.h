// Shared by the fuzz targets. ZLORA_FUZZ_VERBOSE=1 prints the message of every input a parser refused,
// for triage: `ZLORA_FUZZ_VERBOSE=1 build/tests/fuzz/fuzz_dataset_replay FILE` shows why FILE failed to
// load (or that it loaded), e.g. to check that a seed is valid and reaches past the parser.
#pragma once

#include "zlora/core/error.h"

#include <cstdio>
#include <cstdlib>

namespace zlora::fuzz {

inline bool verbose() {
  static const bool v = std::getenv("ZLORA_FUZZ_VERBOSE") != nullptr;
  return v;
}

inline void refused(const zlora::Error& e) {
  if (verbose()) std::fprintf(stderr, "refused: %s\n", e.what());
}

inline void accepted(const char* what) {
  if (verbose()) std::fprintf(stderr, "accepted: %s\n", what);
}

}  // namespace zlora::fuzz
