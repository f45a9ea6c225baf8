// A decision one rank makes for all (the module's internal helper): rank 0 looks at output_dir, the
// other ranks learn the outcome, success or error alike, so that every rank throws the same message
// rather than some waiting in a collective for a rank that already failed.
#pragma once

#include <mpi.h>

#include <functional>
#include <string>

namespace zlora::ckpt {

// Runs `fn` on rank 0 of `comm` and returns what it returned on every rank; when it throws, every rank
// throws zlora::Error with its message. MPI_COMM_NULL: runs `fn` here.
std::string on_rank0(MPI_Comm comm, const std::function<std::string()>& fn);

}  // namespace zlora::ckpt
