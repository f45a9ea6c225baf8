#include "zlora/dist/mpi_runtime.h"

#include "zlora/core/error.h"
#include "zlora/dist/watchdog.h"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace zlora::dist {

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int provided = 0;
  // FUNNELED: only the main thread calls MPI; host-side helper threads (offloaded AdamW, I/O) do not.
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    fail("MPI_Init_thread failed; is the job launched with a working mpirun/srun?");
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  // A peer that dies mid-transfer closes its TCP connections; a send on one raises SIGPIPE, whose default
  // action would end this rank silently (exit 141) before the collective's timeout can name the lost
  // rank (tests/cluster/test_netns_kill_rank.sh). Ignored, the send fails and the wait times out.
  std::signal(SIGPIPE, SIG_IGN);
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local_);
  MPI_Comm_rank(local_, &local_rank_);
  MPI_Comm_size(local_, &local_size_);
  watchdog_ = std::make_unique<Watchdog>(rank_, size_);
}

MpiRuntime::~MpiRuntime() {
  watchdog_.reset();
  if (local_ != MPI_COMM_NULL) MPI_Comm_free(&local_);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void MpiRuntime::fail_job(const std::string& message, int code) const {
  if (rank_ != 0) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  std::fprintf(stderr, "zlora: error (rank %d of %d): %s\n", rank_, size_, message.c_str());
  std::fflush(stderr);
  // MPI_Abort asks the launcher's local daemon to end every rank; if that daemon is gone or cannot reach
  // its peers, the call may never return: this rank ends itself after 30 s regardless.
  std::thread([code] {
    std::this_thread::sleep_for(std::chrono::seconds(30));
    std::_Exit(code);
  }).detach();
  MPI_Abort(MPI_COMM_WORLD, code);
  std::abort();
}

std::string decide_on_root(MPI_Comm comm, const std::function<std::string()>& decide) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  // Rank 0's answer: a status (1 = decided, 0 = error) and the length, then the text.
  std::string text;
  long long header[2] = {1, 0};
  if (rank == 0) {
    try {
      text = decide();
    } catch (const Error& e) {
      text = e.what();
      header[0] = 0;
    }
    header[1] = static_cast<long long>(text.size());
  }
  MPI_Bcast(header, 2, MPI_LONG_LONG, 0, comm);
  ZLORA_REQUIRE(header[1] >= 0 && header[1] < (1LL << 30), "internal: rank 0's decision is {} bytes", header[1]);
  text.resize(static_cast<size_t>(header[1]));
  MPI_Bcast(text.data(), static_cast<int>(header[1]), MPI_CHAR, 0, comm);
  if (header[0] == 0) throw Error(text);
  return text;
}

int launcher_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    if (const char* v = std::getenv(var)) return std::atoi(v);
  }
  return 0;
}

}  // namespace zlora::dist
