// Launched by test_comm_timeout under `mpiexec -n 2`: rank 1 never joins the collective, so rank 0's
// wait must end the job after `argv[1]` seconds with a message naming the operation and rank.
//   comm_timeout_helper SECONDS [plain|stuck|gone] [tensor|host]
// plain: no topology (the message cannot say more); stuck: rank 1 sleeps with its liveness port open
// (the message says every other rank still runs); gone: rank 1 closes its liveness port first, as its
// death would (the message names rank 1, its node and pid as gone). tensor: the Communicator's
// all_reduce; host: the HostGroup's agreement (the preemption and checkpoint collectives).
#include "zlora/dist/communicator.h"
#include "zlora/dist/host_group.h"
#include "zlora/dist/mpi_runtime.h"
#include "zlora/dist/topology.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>

int main(int argc, char** argv) {
  zlora::dist::MpiRuntime mpi(&argc, &argv);
  const double timeout = argc > 1 ? std::atof(argv[1]) : 1.0;
  const std::string mode = argc > 2 ? argv[2] : "plain";
  const std::string via = argc > 3 ? argv[3] : "tensor";
  std::optional<zlora::dist::Topology> topology;
  if (mode != "plain")
    topology.emplace(zlora::dist::Topology::gather(mpi.world(), mpi.local_rank(), mpi.local_size(), "cpu"));
  const zlora::dist::Topology* topo = topology ? &*topology : nullptr;
  // Both ranks build the group and the communicator (each duplicates the world: a collective), as
  // every rank of a job does at start; only then does rank 1 stop taking part.
  zlora::dist::HostGroup group(mpi, timeout, topo);
  auto comm = zlora::dist::make_communicator(mpi, {"mpi", timeout, topo});
  if (mpi.rank() == 1) {
    if (mode == "gone") topology.reset();  // its listener closes, as when the process ends
    // Stuck (or crashed elsewhere): long enough that only the abort can end the job in time.
    std::this_thread::sleep_for(std::chrono::seconds(120));
    return 0;
  }
  if (via == "host") {
    group.all_reduce_max(1, "a test agreement");
  } else {
    at::Tensor t = at::ones({16});
    comm->all_reduce(t, zlora::dist::ReduceOp::kSum)->wait();
  }
  std::printf("the collective returned without rank 1: the timeout did not fire\n");
  return 0;
}
