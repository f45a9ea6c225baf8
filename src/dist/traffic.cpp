#include "zlora/dist/traffic.h"

#include <fmt/format.h>

#include <numeric>

namespace zlora::dist {

const char* to_string(CollectiveKind kind) {
  switch (kind) {
    case CollectiveKind::kAllReduce:
      return "all_reduce";
    case CollectiveKind::kReduceScatter:
      return "reduce_scatter";
    case CollectiveKind::kAllGather:
      return "all_gather";
    case CollectiveKind::kBroadcast:
      return "broadcast";
    case CollectiveKind::kBarrier:
      return "barrier";
  }
  return "?";
}

double ring_bytes_sent(CollectiveKind kind, double payload_bytes, int world) {
  if (world <= 1) return 0;
  const double share = double(world - 1) / double(world);
  switch (kind) {
    case CollectiveKind::kAllReduce:
      return 2 * share * payload_bytes;
    case CollectiveKind::kReduceScatter:
    case CollectiveKind::kAllGather:
    case CollectiveKind::kBroadcast:
      return share * payload_bytes;
    case CollectiveKind::kBarrier:
      return 0;
  }
  return 0;
}

void Traffic::add(CollectiveKind kind, double payload_bytes, int world) {
  const auto k = static_cast<size_t>(kind);
  ++calls[k];
  bytes[k] += ring_bytes_sent(kind, payload_bytes, world);
}

double Traffic::total_bytes() const { return std::accumulate(bytes.begin(), bytes.end(), 0.0); }
long long Traffic::total_calls() const { return std::accumulate(calls.begin(), calls.end(), 0LL); }

std::string Traffic::describe() const {
  std::string out;
  for (int k = 0; k < kCollectiveKinds; ++k) {
    if (calls[k] == 0) continue;
    if (!out.empty()) out += ", ";
    out += fmt::format("{} {} call{} {}", to_string(static_cast<CollectiveKind>(k)), calls[k], calls[k] == 1 ? "" : "s",
                       format_bytes(bytes[k]));
  }
  return out.empty() ? "none" : out;
}

std::string format_bytes(double b) {
  if (b >= 1e9) return fmt::format("{:.2f} GB", b / 1e9);
  if (b >= 1e6) return fmt::format("{:.2f} MB", b / 1e6);
  if (b >= 1e3) return fmt::format("{:.2f} kB", b / 1e3);
  return fmt::format("{:.0f} B", b);
}

}  // namespace zlora::dist
