// Launched by test_comm_timeout under `mpiexec -n 2`: rank 1 never joins the all-reduce, so rank 0's
// wait() must end the job after `argv[1]` seconds with a message naming the operation and rank.
#include "zlora/dist/communicator.h"
#include "zlora/dist/mpi_runtime.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

int main(int argc, char** argv) {
  zlora::dist::MpiRuntime mpi(&argc, &argv);
  const double timeout = argc > 1 ? std::atof(argv[1]) : 1.0;
  auto comm = zlora::dist::make_communicator(mpi, {"mpi", timeout});
  if (comm->rank() == 1) {
    // Stuck (or crashed elsewhere): long enough that only the abort can end the job in time.
    std::this_thread::sleep_for(std::chrono::seconds(120));
    return 0;
  }
  at::Tensor t = at::ones({16});
  comm->all_reduce(t, zlora::dist::ReduceOp::kSum)->wait();
  std::printf("all_reduce returned without rank 1: the timeout did not fire\n");
  return 0;
}
