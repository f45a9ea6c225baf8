// Test-only fault injection for the checkpoint protocol. Killing a process at a random moment rarely
// lands in the narrow windows that matter (a rank file half written, the manifest durable but the
// directory not yet renamed, the directory renamed but `latest` not yet moved), so the checkpoint writer
// and the step-boundary agreement carry named fail points that a test arms through the environment:
//
//   ZLORA_FAULT_POINT=<point>:<rank>:<occurrence>
//
// The process whose rank (in the communicator of the call) is <rank> raises SIGKILL on itself the
// <occurrence>-th time (counted from 1, in this process) it reaches <point>, after printing one line
// "zlora: fault point <point> (rank R, occurrence N): SIGKILL" to stderr. Unset or empty: every fail
// point is a no-op costing one branch. A malformed value or an unknown point name is an error at the
// first fail point reached, so a typo in a test never passes silently as "the fault did not happen".
//
// Points, in the order a save reaches them (save_checkpoint; "rank 0" points fire only there):
//   save_begin        entering save_checkpoint, before the first collective (the peers wait in it)
//   rank_file_half    the first half of this rank's payload is in its temporary file (not fsynced)
//   rank_file_done    this rank's file is renamed and durable, before the success allreduce
//   before_manifest   rank 0: adapter files and trainer_state.json written, manifest not yet
//   manifest_half     rank 0: half of manifest.json is in its temporary file
//   before_rename     rank 0: the manifest is durable in checkpoint-STEP.tmp/, not yet renamed
//   before_latest     rank 0: checkpoint-STEP/ is in place, `latest` still names the previous one
//   after_latest      rank 0: `latest` moved, before pruning and the final allreduce
// and, once per optimizer step (agree_preempt at the step boundary, not the agreements within a step):
//   step_boundary     before the step-end allreduce (the peers wait in it: a death mid-collective)
#pragma once

#include <filesystem>
#include <string_view>

namespace zlora::ckpt {

inline constexpr const char* kFaultPointEnv = "ZLORA_FAULT_POINT";

// Reaches fail point `point` as rank `rank`: raises SIGKILL when armed for this rank and occurrence.
void fault_point(const char* point, int rank);

// As fault_point, but when it fires it first leaves the first half of `bytes` in `path` (created or
// truncated, flushed to the page cache): the on-disk state of a writer killed in the middle of a write.
void fault_point_partial_write(const char* point, int rank, const std::filesystem::path& path, std::string_view bytes);

}  // namespace zlora::ckpt
