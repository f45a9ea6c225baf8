#include "rank0.h"

#include "zlora/core/error.h"

#include <exception>

namespace zlora::ckpt {

std::string on_rank0(MPI_Comm comm, const std::function<std::string()>& fn) {
  if (comm == MPI_COMM_NULL) return fn();
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  std::string msg;
  long long header[2] = {1, 0};  // status (1: ok), message length
  if (rank == 0) {
    try {
      msg = fn();
    } catch (const std::exception& e) {
      msg = e.what();
      header[0] = 0;
    }
    header[1] = static_cast<long long>(msg.size());
  }
  MPI_Bcast(header, 2, MPI_LONG_LONG, 0, comm);
  msg.resize(static_cast<size_t>(header[1]));
  MPI_Bcast(msg.data(), static_cast<int>(header[1]), MPI_CHAR, 0, comm);
  if (!header[0]) fail("{}", msg);
  return msg;
}

}  // namespace zlora::ckpt
