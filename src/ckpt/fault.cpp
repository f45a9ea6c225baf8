#include "zlora/ckpt/fault.h"

#include "zlora/core/error.h"
#include "zlora/core/text.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <string>

namespace zlora::ckpt {

namespace {

constexpr std::array<const char*, 9> kPoints = {"save_begin",      "rank_file_half", "rank_file_done",
                                                "before_manifest", "manifest_half",  "before_rename",
                                                "before_latest",   "after_latest",   "step_boundary"};

struct Armed {
  bool on = false;
  std::string point;
  int rank = 0;
  long long occurrence = 0;
  std::string error;  // a malformed ZLORA_FAULT_POINT, reported at every fail point
};

Armed parse_env() {
  Armed a;
  const char* v = std::getenv(kFaultPointEnv);
  if (!v || !*v) return a;
  const std::string spec = v;
  auto parts = text::split(spec, ':', false);
  long long rank = -1, occ = 0;
  std::string known;
  for (const char* p : kPoints) known += (known.empty() ? "" : ", ") + std::string(p);
  if (parts.size() != 3 || !text::parse_int64(parts[1], rank) || rank < 0 || !text::parse_int64(parts[2], occ) ||
      occ < 1) {
    a.error = fmt::format("{}='{}' is malformed: expected <point>:<rank>:<occurrence>, occurrence counted from 1",
                          kFaultPointEnv, spec);
  } else if (std::find(kPoints.begin(), kPoints.end(), parts[0]) == kPoints.end()) {
    a.error = fmt::format("{}='{}': unknown fail point '{}'; known points: {}", kFaultPointEnv, spec, parts[0], known);
  } else {
    a.on = true;
    a.point = parts[0];
    a.rank = int(rank);
    a.occurrence = occ;
  }
  return a;
}

// The armed point, read once (the environment does not change under a running trainer), and how often
// this process has reached it. The counter is process-wide mutable state, like the preemption flag: a
// test-only facility, inert unless ZLORA_FAULT_POINT is set.
const Armed& armed() {
  static const Armed a = parse_env();
  return a;
}
std::atomic<long long> g_hits{0};

// True when this call is the one that must die.
bool fires(const char* point, int rank) {
  const Armed& a = armed();
  if (!a.error.empty()) fail("{}", a.error);
  if (!a.on || rank != a.rank || a.point != point) return false;
  return g_hits.fetch_add(1) + 1 == a.occurrence;
}

[[noreturn]] void die(const char* point, int rank) {
  std::string line =
      fmt::format("zlora: fault point {} (rank {}, occurrence {}): SIGKILL\n", point, rank, armed().occurrence);
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
  ::raise(SIGKILL);
  std::abort();  // not reached: SIGKILL cannot be caught
}

}  // namespace

void fault_point(const char* point, int rank) {
  if (fires(point, rank)) die(point, rank);
}

void fault_point_partial_write(const char* point, int rank, const std::filesystem::path& path, std::string_view bytes) {
  if (!fires(point, rank)) return;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0) {
    size_t half = bytes.size() / 2, done = 0;
    while (done < half) {
      ssize_t n = ::write(fd, bytes.data() + done, half - done);
      if (n <= 0) break;
      done += size_t(n);
    }
    ::close(fd);
  }
  die(point, rank);
}

}  // namespace zlora::ckpt
