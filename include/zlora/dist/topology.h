// Where every rank of the job runs: node, host, pid, local rank, device and network interfaces,
// gathered once at the start of a run (collective over MPI), logged by rank 0, written as
// output_dir/topology.json, and used when a collective outlives ddp_timeout to name the rank that stopped
// answering.
//
// Liveness without a heartbeat thread: each rank listens on a TCP port of its own (every interface) for
// the life of the run and never accepts. The kernel completes the handshake for a listening socket, so a
// peer's connect succeeds while the process lives (stuck or not) and is refused once it exited (its
// socket closed with it); no answer at all means its host or the network between is gone. The node is
// Slurm's node name where srun started the rank (SLURMD_NODENAME: several slurmd can share one host),
// else the host name.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

namespace zlora::dist {

struct RankPlace {
  int rank = 0;
  std::string node;  // SLURMD_NODENAME, else the host name
  std::string host;  // gethostname()
  long pid = 0;
  int local_rank = 0, local_size = 1;
  std::string device;                   // "cpu", "cuda:0"
  int port = 0;                         // its liveness port
  std::vector<std::string> interfaces;  // "eth0=10.0.0.2": non-loopback IPv4 interfaces
};

enum class Liveness { kAlive, kGone, kUnreachable };
const char* to_string(Liveness l);

// The listening socket (RAII: closed on destruction). Port 0 = any free port.
class LivenessListener {
 public:
  LivenessListener();
  ~LivenessListener();
  LivenessListener(const LivenessListener&) = delete;
  LivenessListener& operator=(const LivenessListener&) = delete;
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// The non-loopback IPv4 interfaces of this host as "name=address".
std::vector<std::string> ipv4_interfaces();
// SLURMD_NODENAME when set, else gethostname().
std::string node_name();

// Connects to each peer's port on each of its addresses (127.0.0.1 too when it shares our host), all at
// once, waiting at most `timeout_s`: alive when any connect succeeds, gone when every answer was a
// refusal, unreachable when some address never answered.
std::vector<Liveness> probe(const std::vector<RankPlace>& peers, const std::string& my_host, double timeout_s);

class Topology {
 public:
  // Collective over `comm` (every rank calls it): starts this rank's listener and gathers every rank's place.
  static Topology gather(MPI_Comm comm, int local_rank, int local_size, const std::string& device);
  Topology(std::vector<RankPlace> ranks, int self, std::shared_ptr<LivenessListener> listener);

  const std::vector<RankPlace>& ranks() const { return ranks_; }
  int self() const { return self_; }
  // Node names in order of their lowest rank.
  std::vector<std::string> nodes() const;
  int num_nodes() const { return static_cast<int>(nodes().size()); }

  // Log lines: "2 nodes, 4 ranks: zt1 ranks 0-1 (local 0 -> cpu, local 1 -> cpu), zt2 ranks 2-3 (...)",
  // then each node's interfaces.
  std::string describe() const;
  // output_dir/topology.json's text: world_size, num_nodes, backend, collectives (op -> transport),
  // nodes [{node, host, ranks}], ranks [{rank, node, host, pid, local_rank, device, interfaces}],
  // launcher_env (the MCA/NCCL/UCX interface selections this rank saw).
  std::string to_json(const std::string& backend,
                      const std::vector<std::pair<std::string, std::string>>& collectives) const;

  // Probes every other rank (within `timeout_s`) and says which stopped answering: "rank 1 (node zt2,
  // pid 4242) is gone: its process ended" / "... unreachable: no answer from its host", or, when all
  // answer, that every rank still runs (one is stuck or skipped the collective).
  std::string diagnose(double timeout_s = 3) const;

 private:
  std::vector<RankPlace> ranks_;
  int self_ = 0;
  std::shared_ptr<LivenessListener> listener_;  // kept open for the run
};

}  // namespace zlora::dist
