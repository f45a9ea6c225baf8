// Host-side collectives of small control values over MPI (the preemption agreements within and between
// steps, the checkpoint's error agreement and file gather), bounded by the same ddp_timeout as the
// training collectives and ending the job the same way (deadline.h): a rank that died mid-step leaves
// its peers waiting here at most ddp_timeout, with a message naming it, instead of forever. No LibTorch,
// so ckpt can use it; the Communicator (communicator.h) is the tensor interface.
#pragma once

#include "zlora/dist/traffic.h"

#include <mpi.h>

#include <string>
#include <vector>

namespace zlora::dist {

class MpiRuntime;
class Topology;

class HostGroup {
 public:
  // Over a duplicate of MPI_COMM_WORLD (freed on destruction). `mpi` and `topology` (may be null) must
  // outlive this object.
  HostGroup(const MpiRuntime& mpi, double timeout_s, const Topology* topology = nullptr);
  ~HostGroup();
  HostGroup(const HostGroup&) = delete;
  HostGroup& operator=(const HostGroup&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  double timeout_s() const { return timeout_s_; }
  const Traffic& traffic() const { return traffic_; }

  // Collective: the maximum of every rank's `value`. `what` names the agreement in a timeout message.
  long long all_reduce_max(long long value, const std::string& what);
  // Collective: every rank's bytes, in rank order, on every rank.
  std::vector<std::string> all_gather(const std::string& mine, const std::string& what);
  // Collective: every rank's bytes on `root` (the others get an empty vector).
  std::vector<std::string> gather(const std::string& mine, int root, const std::string& what);
  // Collective: root's `value` on every rank.
  std::string broadcast(const std::string& value, int root, const std::string& what);

 private:
  void wait(MPI_Request* request, const std::string& what);

  const MpiRuntime* mpi_;
  const Topology* topology_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  double timeout_s_;
  Traffic traffic_;
};

}  // namespace zlora::dist
