#include "zlora/ckpt/output_lock.h"

#include "rank0.h"

#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/text.h"

#include <fmt/format.h>

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include <unistd.h>

namespace zlora::ckpt {

namespace stdfs = std::filesystem;
using nlohmann::json;

namespace {

std::string hostname() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

std::string read_small(const stdfs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Field 22 of /proc/<pid>/stat (starttime, clock ticks after boot), or 0 when the process is gone. The
// command name (field 2) is in parentheses and may hold spaces, so fields are counted after its ')'.
// A zombie (state Z, or X while it is being reaped) counts as gone: it has died and keeps its /proc entry,
// start time included, only until its parent reaps it, which after a SIGKILLed job can take a while
// (an orphaned rank waits for init, and a container's init may reap late).
long long process_start_ticks(long long pid) {
  const std::string stat = read_small("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(stat.substr(close + 1));
  std::string field;
  for (int i = 3; i <= 22 && rest >> field; ++i) {
    if (i == 3 && (field == "Z" || field == "X" || field == "x")) return 0;
    if (i == 22) return std::atoll(field.c_str());
  }
  return 0;
}

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// link(2) of a complete file to the lock's name: atomic, and refused when the name exists.
bool link_exclusive(const stdfs::path& from, const stdfs::path& to) {
  if (::link(from.c_str(), to.c_str()) == 0) return true;
  if (errno == EEXIST) return false;
  fail("cannot create the output_dir lock '{}': {}", to.string(), fs::errno_message(errno));
}

}  // namespace

json LockOwner::to_json() const {
  return json{{"host", host},
              {"pid", pid},
              {"start_ticks", start_ticks},
              {"boot_id", boot_id},
              {"slurm_job_id", slurm_job_id},
              {"slurm_restart_count", slurm_restart_count},
              {"since", since}};
}

LockOwner LockOwner::from_json(const json& j) {
  LockOwner o;
  try {
    o.host = j.at("host").get<std::string>();
    o.pid = j.at("pid").get<long long>();
    o.start_ticks = j.at("start_ticks").get<long long>();
    o.boot_id = j.at("boot_id").get<std::string>();
    o.slurm_job_id = j.at("slurm_job_id").get<std::string>();
    o.slurm_restart_count = j.at("slurm_restart_count").get<long long>();
    o.since = j.at("since").get<std::string>();
  } catch (const json::exception& e) {
    fail("malformed lock: {}", e.what());
  }
  return o;
}

LockOwner LockOwner::self() {
  LockOwner o;
  o.host = hostname();
  o.pid = static_cast<long long>(getpid());
  o.start_ticks = process_start_ticks(o.pid);
  o.boot_id = text::trim(read_small("/proc/sys/kernel/random/boot_id"));
  o.slurm_job_id = env_or_empty("SLURM_JOB_ID");
  o.slurm_restart_count = std::atoll(env_or_empty("SLURM_RESTART_COUNT").c_str());
  o.since = utc_now();
  return o;
}

std::string LockOwner::describe() const {
  std::string slurm = slurm_job_id.empty()
                          ? std::string()
                          : fmt::format(" (Slurm job {}, attempt {})", slurm_job_id, slurm_restart_count);
  return fmt::format("pid {} on host {}{} since {}", pid, host, slurm, since);
}

std::optional<std::string> lock_holder_dead(const LockOwner& holder, const LockOwner& me) {
  if (holder.host == me.host) {
    if (holder.boot_id != me.boot_id) return std::string("this host rebooted since it took the lock");
    if (holder.pid == me.pid) return std::string("its pid is this process's, so that process is gone");
    const long long ticks = process_start_ticks(holder.pid);
    if (ticks == 0) return fmt::format("no process {} runs on this host", holder.pid);
    if (ticks != holder.start_ticks) return fmt::format("process {} is now another program (pid reused)", holder.pid);
    return std::nullopt;
  }
  if (!holder.slurm_job_id.empty() && holder.slurm_job_id == me.slurm_job_id &&
      holder.slurm_restart_count < me.slurm_restart_count)
    return fmt::format("it was attempt {} of this Slurm job, which is now at attempt {}", holder.slurm_restart_count,
                       me.slurm_restart_count);
  return std::nullopt;
}

OutputDirLock::OutputDirLock(stdfs::path path, std::string content, std::string took_over)
    : path_(std::move(path)), content_(std::move(content)), took_over_(std::move(took_over)) {}

OutputDirLock::OutputDirLock(OutputDirLock&& o) noexcept
    : path_(std::move(o.path_)), content_(std::move(o.content_)), took_over_(std::move(o.took_over_)) {
  o.path_.clear();
}

OutputDirLock::~OutputDirLock() {
  if (path_.empty()) return;
  // Only our own lock: one removed by hand and taken by another run stays that run's.
  if (read_small(path_) == content_) ::unlink(path_.c_str());
}

OutputDirLock OutputDirLock::acquire(const stdfs::path& output_dir) {
  ZLORA_REQUIRE(!stdfs::exists(output_dir) || stdfs::is_directory(output_dir),
                "output_dir '{}' exists and is not a directory", output_dir.string());
  std::error_code mk;
  stdfs::create_directories(output_dir, mk);
  if (mk) fail("cannot create output_dir '{}': {}", output_dir.string(), fs::errno_message(mk.value()));
  const stdfs::path lock = output_dir / kLockName;
  const LockOwner me = LockOwner::self();
  const std::string content = me.to_json().dump() + "\n";
  // The lock appears under its name only complete: written privately, then linked.
  const stdfs::path mine = output_dir / fmt::format(".{}.{}.{}", kLockName, me.host, me.pid);
  fs::write_file_atomic(mine, content);
  struct Unlink {
    const stdfs::path& p;
    ~Unlink() { ::unlink(p.c_str()); }
  } unlink_mine{mine};

  std::string took_over;
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (link_exclusive(mine, lock)) return OutputDirLock(lock, content, took_over);
    const std::string held = read_small(lock);
    if (held.empty()) continue;  // released between our link and our read
    std::optional<LockOwner> holder;
    try {
      holder = LockOwner::from_json(json::parse(held));
    } catch (const std::exception&) {
    }
    if (!holder)
      fail(
          "output_dir '{}' is locked by '{}', which is not a zlora lock file ({}); if no run uses this output_dir, "
          "remove that file",
          output_dir.string(), lock.string(), text::printable(held));
    const std::optional<std::string> dead = lock_holder_dead(*holder, me);
    if (!dead)
      fail(
          "output_dir '{}' is in use by another zlora run: {} (lock file {}). Two runs in one output_dir would "
          "replace or interleave each other's adapter and checkpoints, so this run is refused, whatever its flags. "
          "Wait for that run to end, use another --output_dir, or, if that run is dead (its node failed), remove "
          "{} and start again",
          output_dir.string(), holder->describe(), lock.string(), lock.string());
    // Taking over: move the dead holder's file away, but only if it is still that file (another run may
    // have taken it over meanwhile, in which case its fresh lock goes back).
    const stdfs::path stale = output_dir / fmt::format(".{}.stale.{}", kLockName, me.pid);
    if (::rename(lock.c_str(), stale.c_str()) != 0) continue;  // gone already: try again
    if (read_small(stale) != held) {
      (void)::link(stale.c_str(), lock.c_str());
      ::unlink(stale.c_str());
      continue;
    }
    ::unlink(stale.c_str());
    took_over = fmt::format("took over the lock of a dead run ({}): {}", holder->describe(), *dead);
  }
  fail("could not take the output_dir lock '{}': other runs keep taking it; use another --output_dir", lock.string());
}

std::optional<OutputDirLock> lock_output_dir(const stdfs::path& output_dir, MPI_Comm comm) {
  std::optional<OutputDirLock> lock;
  on_rank0(comm, [&] {
    lock.emplace(OutputDirLock::acquire(output_dir));
    return std::string();
  });
  return lock;
}

}  // namespace zlora::ckpt
