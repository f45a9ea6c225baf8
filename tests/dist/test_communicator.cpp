// Each collective of MpiCommunicator against values every rank computes on its own (run at np 1, 2, 3).
#include "dist/mpi_test_main.h"
#include "zlora/core/error.h"
#include "zlora/dist/communicator.h"
#include "zlora/dist/mpi_communicator.h"

#include <torch/torch.h>

#include <memory>

using zlora::dist::ReduceOp;
using zlora::test::test_mpi;

namespace {

std::unique_ptr<zlora::dist::Communicator> make(double timeout = 60) {
  return zlora::dist::make_communicator(test_mpi(), {"mpi", timeout});
}

// Rank r's contribution: a pattern distinct per rank and element, exact in every tested dtype
// (small integers, so bf16 sums are exact too).
at::Tensor contribution(int rank, int64_t n, at::ScalarType dtype) {
  return (at::arange(n, at::kLong) % 7 + 3 * rank + 1).to(dtype);
}

}  // namespace

TEST(MpiCommunicator, AllReduceSumAvgMaxPerDtype) {
  auto comm = make();
  const int world = comm->size(), rank = comm->rank();
  ASSERT_EQ(world, test_mpi().size());
  ASSERT_EQ(rank, test_mpi().rank());
  for (auto dtype : {at::kFloat, at::kDouble, at::kLong, at::kBFloat16, at::kHalf}) {
    SCOPED_TRACE(c10::toString(dtype));
    const int64_t n = 37;
    at::Tensor expected_sum = at::zeros({n}, at::kDouble), expected_max = at::full({n}, -1e9, at::kDouble);
    for (int r = 0; r < world; ++r) {
      expected_sum += contribution(r, n, at::kDouble);
      expected_max = at::maximum(expected_max, contribution(r, n, at::kDouble));
    }
    at::Tensor t = contribution(rank, n, dtype).reshape({37, 1});  // any shape, contiguous
    comm->all_reduce(t, ReduceOp::kSum)->wait();
    EXPECT_EQ(t.scalar_type(), dtype);
    EXPECT_TRUE(at::equal(t.reshape({-1}).to(at::kDouble), expected_sum));
    t = contribution(rank, n, dtype);
    comm->all_reduce(t, ReduceOp::kMax)->wait();
    EXPECT_TRUE(at::equal(t.to(at::kDouble), expected_max));
    if (at::isFloatingType(dtype)) {
      t = contribution(rank, n, dtype);
      comm->all_reduce(t, ReduceOp::kAvg)->wait();
      EXPECT_TRUE(at::allclose(t.to(at::kDouble), expected_sum / world, 1e-2, 0));
    }
  }
}

TEST(MpiCommunicator, ReduceScatterGivesEachRankItsChunk) {
  auto comm = make();
  const int world = comm->size(), rank = comm->rank();
  const int64_t chunk = 11;
  at::Tensor input = contribution(rank, world * chunk, at::kFloat) * (rank + 2);
  at::Tensor expected = at::zeros({world * chunk}, at::kFloat);
  for (int r = 0; r < world; ++r) expected += contribution(r, world * chunk, at::kFloat) * (r + 2);
  at::Tensor output = at::empty({chunk}, at::kFloat);
  comm->reduce_scatter(output, input, ReduceOp::kSum)->wait();
  EXPECT_TRUE(at::equal(output, expected.narrow(0, rank * chunk, chunk)));
  comm->reduce_scatter(output, input, ReduceOp::kAvg)->wait();
  EXPECT_TRUE(at::allclose(output, expected.narrow(0, rank * chunk, chunk) / world));
  // bf16 goes through fp32 staging.
  at::Tensor out16 = at::empty({chunk}, at::kBFloat16);
  comm->reduce_scatter(out16, input.to(at::kBFloat16), ReduceOp::kMax)->wait();
  at::Tensor expected_max = contribution(0, world * chunk, at::kFloat) * 2;
  for (int r = 1; r < world; ++r)
    expected_max = at::maximum(expected_max, contribution(r, world * chunk, at::kFloat) * (r + 2));
  EXPECT_TRUE(
      at::equal(out16.to(at::kFloat), expected_max.narrow(0, rank * chunk, chunk).to(at::kBFloat16).to(at::kFloat)));
}

TEST(MpiCommunicator, AllGatherFlatAndInPlace) {
  auto comm = make();
  const int world = comm->size(), rank = comm->rank();
  const int64_t n = 5;
  for (auto dtype : {at::kFloat, at::kLong, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    at::Tensor expected = at::cat([&] {
      std::vector<at::Tensor> parts;
      for (int r = 0; r < world; ++r) parts.push_back(contribution(r, n, dtype));
      return parts;
    }());
    at::Tensor out = at::full({world * n}, -1, dtype);
    comm->all_gather(out, contribution(rank, n, dtype))->wait();
    EXPECT_TRUE(at::equal(out, expected));
    // In place: the input is this rank's chunk of the output.
    at::Tensor flat = at::full({world * n}, -1, dtype);
    flat.narrow(0, rank * n, n).copy_(contribution(rank, n, dtype));
    comm->all_gather(flat, flat.narrow(0, rank * n, n))->wait();
    EXPECT_TRUE(at::equal(flat, expected));
  }
}

TEST(MpiCommunicator, BroadcastFromLastRankAndBarrier) {
  auto comm = make();
  const int root = comm->size() - 1;
  at::Tensor t = comm->rank() == root ? contribution(root, 9, at::kDouble) : at::zeros({9}, at::kDouble);
  comm->broadcast(t, root)->wait();
  EXPECT_TRUE(at::equal(t, contribution(root, 9, at::kDouble)));
  comm->barrier()->wait();
}

TEST(MpiCommunicator, SeveralOutstandingWaitedOutOfOrder) {
  auto comm = make();
  const int world = comm->size(), rank = comm->rank();
  std::vector<at::Tensor> ts;
  std::vector<zlora::dist::WorkPtr> works;
  for (int k = 0; k < 4; ++k) {
    ts.push_back(at::full({1000 + k}, rank + k, at::kFloat));
    works.push_back(comm->all_reduce(ts.back(), ReduceOp::kSum));
  }
  for (int k = 3; k >= 0; --k) works[k]->wait();
  for (int k = 0; k < 4; ++k) {
    float expected = 0;
    for (int r = 0; r < world; ++r) expected += r + k;
    EXPECT_TRUE(at::equal(ts[k], at::full({1000 + k}, expected, at::kFloat)));
  }
  // A handle dropped without wait() completes in its destructor; is_completed() turns true.
  at::Tensor a = at::ones({3});
  comm->all_reduce(a, ReduceOp::kSum);
  EXPECT_TRUE(at::equal(a, at::full({3}, static_cast<float>(world))));
  auto w = comm->barrier();
  while (!w->is_completed()) {
  }
  w->wait();
}

TEST(MpiCommunicator, SplitFormsSubCommunicators) {
  auto world_comm = std::make_unique<zlora::dist::MpiCommunicator>(test_mpi(), test_mpi().world(), 60);
  const int rank = world_comm->rank(), world = world_comm->size();
  // Even ranks in one group, odd in another, and the last rank (when odd count > 1) opts out.
  const bool opt_out = world > 2 && rank == world - 1;
  auto sub = world_comm->split(opt_out ? -1 : rank % 2);
  if (opt_out) {
    EXPECT_EQ(sub, nullptr);
    return;
  }
  ASSERT_NE(sub, nullptr);
  int64_t members = 0, rank_sum = 0;
  for (int r = 0; r < world; ++r) {
    if (r % 2 == rank % 2 && !(world > 2 && r == world - 1)) {
      ++members;
      rank_sum += r;
    }
  }
  EXPECT_EQ(sub->size(), members);
  at::Tensor t = at::full({1}, rank, at::kLong);
  sub->all_reduce(t, ReduceOp::kSum)->wait();
  EXPECT_EQ(t.item<int64_t>(), rank_sum);
}

TEST(MpiCommunicator, BadInputsAreClearErrors) {
  auto comm = make();
  const int world = comm->size();
  at::Tensor nc = at::zeros({4, 4}).t();
  try {
    comm->all_reduce(nc, ReduceOp::kSum);
    ADD_FAILURE() << "non-contiguous tensor accepted";
  } catch (const zlora::Error& e) {
    EXPECT_NE(std::string(e.what()).find("contiguous"), std::string::npos) << e.what();
  }
  EXPECT_THROW(comm->all_reduce(at::zeros({3}, at::kLong), ReduceOp::kAvg), zlora::Error);
  EXPECT_THROW(comm->all_reduce(at::Tensor(), ReduceOp::kSum), zlora::Error);
  EXPECT_THROW(comm->all_reduce(at::zeros({3}, at::kComplexFloat), ReduceOp::kSum), zlora::Error);
  EXPECT_THROW(comm->reduce_scatter(at::zeros({3}), at::zeros({3 * world + 1}), ReduceOp::kSum), zlora::Error);
  EXPECT_THROW(comm->reduce_scatter(at::zeros({3}), at::zeros({3 * world}, at::kDouble), ReduceOp::kSum), zlora::Error);
  EXPECT_THROW(comm->all_gather(at::zeros({2 * world + 1}), at::zeros({2})), zlora::Error);
  EXPECT_THROW(comm->broadcast(at::zeros({2}), world), zlora::Error);
  EXPECT_THROW(comm->broadcast(at::zeros({2}), -1), zlora::Error);
  EXPECT_THROW(zlora::dist::MpiCommunicator(test_mpi(), test_mpi().world(), 0), zlora::Error);
  // Every rank threw before entering MPI: the communicator still works.
  at::Tensor t = at::ones({2});
  comm->all_reduce(t, ReduceOp::kSum)->wait();
  EXPECT_TRUE(at::equal(t, at::full({2}, static_cast<float>(world))));
}

TEST(MakeCommunicator, SelectsBackendAndRejectsUnknown) {
  auto comm = zlora::dist::make_communicator(test_mpi(), {"auto", 60});
#ifdef ZLORA_WITH_CUDA
  (void)comm;
#else
  EXPECT_STREQ(comm->backend(), "mpi");
  try {
    zlora::dist::make_communicator(test_mpi(), {"nccl", 60});
    ADD_FAILURE() << "nccl accepted in a CPU build";
  } catch (const zlora::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--comm mpi"), std::string::npos) << e.what();
  }
#endif
  EXPECT_STREQ(zlora::dist::make_communicator(test_mpi(), {"mpi", 60})->backend(), "mpi");
  try {
    zlora::dist::make_communicator(test_mpi(), {"gloo", 60});
    ADD_FAILURE() << "unknown backend accepted";
  } catch (const zlora::Error& e) {
    EXPECT_NE(std::string(e.what()).find("auto, nccl, mpi"), std::string::npos) << e.what();
  }
}
