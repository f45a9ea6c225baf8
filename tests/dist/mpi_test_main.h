// The gtest main for tests run under mpiexec (one copy per rank): MPI is owned by an MpiRuntime for
// the whole run, only rank 0 prints gtest's report, and the process fails if any rank failed.
// Include it in exactly one TU of a test binary; tests reach the runtime through test_mpi().
#pragma once

#include "zlora/dist/mpi_runtime.h"

#include <gtest/gtest.h>

namespace zlora::test {
inline dist::MpiRuntime*& test_mpi_slot() {
  static dist::MpiRuntime* slot = nullptr;
  return slot;
}
inline dist::MpiRuntime& test_mpi() { return *test_mpi_slot(); }
}  // namespace zlora::test

int main(int argc, char** argv) {
  zlora::dist::MpiRuntime mpi(&argc, &argv);
  zlora::test::test_mpi_slot() = &mpi;
  ::testing::InitGoogleTest(&argc, argv);
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (mpi.rank() != 0) delete listeners.Release(listeners.default_result_printer());
  int rc = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, mpi.world());
  return worst;
}
