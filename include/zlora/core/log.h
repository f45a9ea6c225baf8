// Logging: spdlog's default logger, configured once by `main` for this rank. Rank 0 logs at info;
// other ranks log warnings and errors only (their lines carry the rank), so an 8-rank job prints one
// log, yet a failure on any rank is visible.
#pragma once

#include <spdlog/spdlog.h>

namespace zlora::log {

void init(int rank, int world_size, bool verbose);

using spdlog::debug;
using spdlog::error;
using spdlog::info;
using spdlog::warn;

}  // namespace zlora::log
