// What a communicator sent: per kind of collective, the calls made and the bytes this rank put on the
// wire under the ring algorithms that NCCL uses and MPI libraries use for large messages (nccl-tests'
// "bus bytes"). For a payload of S bytes over n ranks, one rank sends
//   all_reduce      2 (n-1)/n S   (a reduce-scatter, then an all-gather, of S)
//   reduce_scatter    (n-1)/n S   (S = the input: n chunks)
//   all_gather        (n-1)/n S   (S = the output: n chunks)
//   broadcast         (n-1)/n S   (a pipelined ring: every rank but the last forwards S; the mean per rank)
//   barrier           0
// The same function prices both the counters (communicator.cpp, on every call) and the communication
// model (zero/comm_model.h, from the shapes), so the two agree by construction on the convention and
// differ only where the model misses a collective the run made.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace zlora::dist {

enum class CollectiveKind { kAllReduce = 0, kReduceScatter, kAllGather, kBroadcast, kBarrier };
inline constexpr int kCollectiveKinds = 5;
const char* to_string(CollectiveKind kind);

// Bytes one rank sends for a collective of `payload_bytes` (see above) over `world` ranks; 0 at world 1.
double ring_bytes_sent(CollectiveKind kind, double payload_bytes, int world);

struct Traffic {
  std::array<long long, kCollectiveKinds> calls{};
  std::array<double, kCollectiveKinds> bytes{};  // ring_bytes_sent summed

  void add(CollectiveKind kind, double payload_bytes, int world);
  double total_bytes() const;
  long long total_calls() const;
  // Per kind: "all_reduce 12 calls 1.5 MB, ..." (kinds with no calls left out).
  std::string describe() const;
};

// "1.50 MB", "312 B": decimal units, as network bandwidths are quoted.
std::string format_bytes(double bytes);

}  // namespace zlora::dist
