#include "zlora/core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <string>

namespace zlora::log {

void init(int rank, int world_size, bool verbose) {
  // Re-initialising (first before MPI from the launcher's rank, then with MPI's) replaces the logger.
  const std::string name = "zlora-r" + std::to_string(rank);
  spdlog::drop(name);
  auto logger = spdlog::stderr_color_mt(name);
  if (world_size > 1)
    logger->set_pattern("[%H:%M:%S] [zlora r" + std::to_string(rank) + "] %^%l%$: %v");
  else
    logger->set_pattern("[%H:%M:%S] [zlora] %^%l%$: %v");
  if (verbose)
    logger->set_level(spdlog::level::debug);
  else
    logger->set_level(rank == 0 ? spdlog::level::info : spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

}  // namespace zlora::log
