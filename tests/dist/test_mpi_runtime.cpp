// Runs under mpiexec: every rank sees the same world, and a collective over MPI_COMM_WORLD works.
#include "zlora/dist/mpi_runtime.h"

#include <gtest/gtest.h>

namespace {
zlora::dist::MpiRuntime* g_mpi = nullptr;
}

TEST(MpiRuntime, RanksAgreeOnWorld) {
  auto& mpi = *g_mpi;
  ASSERT_GE(mpi.size(), 1);
  EXPECT_GE(mpi.rank(), 0);
  EXPECT_LT(mpi.rank(), mpi.size());
  EXPECT_LE(mpi.local_size(), mpi.size());
  int sum = 0, mine = mpi.rank() + 1;
  MPI_Allreduce(&mine, &sum, 1, MPI_INT, MPI_SUM, mpi.world());
  EXPECT_EQ(sum, mpi.size() * (mpi.size() + 1) / 2);
}

int main(int argc, char** argv) {
  zlora::dist::MpiRuntime mpi(&argc, &argv);
  g_mpi = &mpi;
  ::testing::InitGoogleTest(&argc, argv);
  // Only rank 0 prints gtest's report; every rank's failure still fails the process.
  if (mpi.rank() != 0)
    delete ::testing::UnitTest::GetInstance()->listeners().Release(
        ::testing::UnitTest::GetInstance()->listeners().default_result_printer());
  int rc = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, mpi.world());
  return worst;
}
