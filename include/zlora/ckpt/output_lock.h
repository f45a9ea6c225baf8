// One run owns an output_dir. `zlora train` takes output_dir/zlora.lock on rank 0 before it writes
// anything there (the token store it may prepare, checkpoints, logs) and releases it on any exit: success,
// an error, a preemption (exit 75). A second run in the same output_dir, whatever its flags
// (--overwrite_output_dir, --resume_from_checkpoint), is refused with the holder's host, pid, Slurm job
// and start time, instead of replacing or interleaving the first run's adapter and checkpoints.
//
// The lock file holds its owner as JSON and is created atomically (written under a private name, then
// link()ed to zlora.lock, which fails when the name exists; this holds on NFS too). A holder that died
// without releasing it (SIGKILL, a node failure) is recognised and its lock taken over when
//   - it ran on this host (same hostname and boot id) and its pid is gone or now another process
//     (the process start time differs), or this host rebooted since (the boot id differs), or
//   - it was an earlier attempt of this same Slurm job (same SLURM_JOB_ID, lower SLURM_RESTART_COUNT):
//     Slurm runs one attempt of a job at a time, so a requeued job on another node takes over.
// A holder on another host is otherwise taken to be alive (nothing here can tell): the message says
// to remove the file once that run is known to be dead.
#pragma once

#include <mpi.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>

namespace zlora::ckpt {

inline constexpr const char* kLockName = "zlora.lock";

// Who holds (or wants) a lock.
struct LockOwner {
  std::string host;
  long long pid = 0;
  long long start_ticks = 0;  // /proc/<pid>/stat field 22: tells a reused pid from the holder
  std::string boot_id;        // /proc/sys/kernel/random/boot_id
  std::string slurm_job_id;   // empty outside Slurm
  long long slurm_restart_count = 0;
  std::string since;  // UTC, ISO 8601
  nlohmann::json to_json() const;
  static LockOwner from_json(const nlohmann::json& j);  // throws zlora::Error
  static LockOwner self();                              // this process, now
  std::string describe() const;  // "pid 1234 on host n1 (Slurm job 77, attempt 0) since 2026-12-07T06:00:00Z"
};

// Why `holder` is known to be dead, as seen by `me`, or nullopt when it may be alive (rules above).
std::optional<std::string> lock_holder_dead(const LockOwner& holder, const LockOwner& me);

class OutputDirLock {
 public:
  // Takes output_dir/zlora.lock (creating output_dir), taking over a dead holder's lock (said in
  // `took_over`). Throws zlora::Error naming the holder when it may be alive.
  static OutputDirLock acquire(const std::filesystem::path& output_dir);
  OutputDirLock(OutputDirLock&& o) noexcept;
  OutputDirLock& operator=(OutputDirLock&&) = delete;
  OutputDirLock(const OutputDirLock&) = delete;
  ~OutputDirLock();  // removes the lock file if it is still this process's

  const std::filesystem::path& path() const { return path_; }
  const std::string& took_over() const { return took_over_; }  // "" or what was taken over, and why

 private:
  OutputDirLock(std::filesystem::path path, std::string content, std::string took_over);
  std::filesystem::path path_;
  std::string content_;  // what this process wrote; released only while the file still says so
  std::string took_over_;
};

// Collective over `comm`: rank 0 takes the lock (returned there; nullopt on the other ranks); when it
// cannot, every rank throws zlora::Error with rank 0's message. MPI_COMM_NULL: this process alone.
std::optional<OutputDirLock> lock_output_dir(const std::filesystem::path& output_dir, MPI_Comm comm);

}  // namespace zlora::ckpt
