#include "zlora/dist/host_group.h"

#include "zlora/core/error.h"
#include "zlora/dist/deadline.h"
#include "zlora/dist/mpi_runtime.h"

#include <climits>

namespace zlora::dist {

HostGroup::HostGroup(const MpiRuntime& mpi, double timeout_s, const Topology* topology)
    : mpi_(&mpi), topology_(topology), timeout_s_(timeout_s) {
  ZLORA_REQUIRE(timeout_s > 0, "ddp_timeout must be positive (seconds), got {}", timeout_s);
  if (MPI_Comm_dup(mpi.world(), &comm_) != MPI_SUCCESS) fail("MPI_Comm_dup failed while creating the host group");
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

HostGroup::~HostGroup() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

void HostGroup::wait(MPI_Request* request, const std::string& what) {
  const WaitSite site{mpi_, "mpi host", rank_, size_, timeout_s_, topology_};
  wait_with_deadline(
      site, what,
      [request] {
        int flag = 0;
        MPI_Test(request, &flag, MPI_STATUS_IGNORE);
        return flag != 0;
      },
      [&] { end_job_on_timeout(site, what); });
}

long long HostGroup::all_reduce_max(long long value, const std::string& what) {
  long long out = value;
  MPI_Request req = MPI_REQUEST_NULL;
  MPI_Iallreduce(&value, &out, 1, MPI_LONG_LONG, MPI_MAX, comm_, &req);
  traffic_.add(CollectiveKind::kAllReduce, sizeof value, size_);
  wait(&req, what);
  return out;
}

namespace {
int count_of(size_t n, const std::string& what) {
  ZLORA_REQUIRE(n <= static_cast<size_t>(INT_MAX), "{}: {} bytes exceed MPI's int count", what, n);
  return static_cast<int>(n);
}
}  // namespace

std::vector<std::string> HostGroup::all_gather(const std::string& mine, const std::string& what) {
  int len = count_of(mine.size(), what);
  std::vector<int> lens(static_cast<size_t>(size_)), offsets(static_cast<size_t>(size_));
  MPI_Request req = MPI_REQUEST_NULL;
  MPI_Iallgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, comm_, &req);
  traffic_.add(CollectiveKind::kAllGather, sizeof(int) * size_, size_);
  wait(&req, what + " (lengths)");
  size_t total = 0;
  for (int r = 0; r < size_; ++r) {
    offsets[r] = count_of(total, what);
    total += static_cast<size_t>(lens[r]);
  }
  std::string all(total, '\0');
  MPI_Iallgatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), offsets.data(), MPI_CHAR, comm_, &req);
  traffic_.add(CollectiveKind::kAllGather, double(total), size_);
  wait(&req, what);
  std::vector<std::string> out;
  for (int r = 0; r < size_; ++r)
    out.push_back(all.substr(static_cast<size_t>(offsets[r]), static_cast<size_t>(lens[r])));
  return out;
}

std::vector<std::string> HostGroup::gather(const std::string& mine, int root, const std::string& what) {
  int len = count_of(mine.size(), what);
  std::vector<int> lens(static_cast<size_t>(size_)), offsets(static_cast<size_t>(size_));
  MPI_Request req = MPI_REQUEST_NULL;
  MPI_Igather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, root, comm_, &req);
  wait(&req, what + " (lengths)");
  size_t total = 0;
  if (rank_ == root)
    for (int r = 0; r < size_; ++r) {
      offsets[r] = count_of(total, what);
      total += static_cast<size_t>(lens[r]);
    }
  std::string all(total, '\0');
  MPI_Igatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), offsets.data(), MPI_CHAR, root, comm_, &req);
  wait(&req, what);
  std::vector<std::string> out;
  if (rank_ == root)
    for (int r = 0; r < size_; ++r)
      out.push_back(all.substr(static_cast<size_t>(offsets[r]), static_cast<size_t>(lens[r])));
  return out;
}

std::string HostGroup::broadcast(const std::string& value, int root, const std::string& what) {
  long long len = static_cast<long long>(value.size());
  MPI_Request req = MPI_REQUEST_NULL;
  MPI_Ibcast(&len, 1, MPI_LONG_LONG, root, comm_, &req);
  wait(&req, what + " (length)");
  ZLORA_REQUIRE(len >= 0 && len < (1LL << 30), "{}: rank {} sent a length of {} bytes", what, root, len);
  std::string out = rank_ == root ? value : std::string(static_cast<size_t>(len), '\0');
  MPI_Ibcast(out.data(), static_cast<int>(len), MPI_CHAR, root, comm_, &req);
  traffic_.add(CollectiveKind::kBroadcast, double(len), size_);
  wait(&req, what);
  return out;
}

}  // namespace zlora::dist
