// The checkpoint protocol: per-rank files, a manifest written last, and a `latest` pointer that names only
// complete checkpoints. llm.c's order (all ranks write, barrier, then one marker) with DeepSpeed's
// weakness fixed: DeepSpeed's rank 0 writes `latest` before the other ranks are known to be done
// (../shared/reference/distributed.md §0.4); here nothing names a checkpoint until every byte is durable.
//
// output_dir/
//   checkpoint-STEP/            renamed from checkpoint-STEP.tmp/ once complete
//     rank-00000.bin ...        one per rank: bytes the trainer serialises (ZeRO slices, RNG, sampler)
//     adapter_model.safetensors, adapter_config.json, ...   rank 0's files (a caller callback)
//     trainer_state.json        HF TrainerState
//     manifest.json             LAST: every file's size + sha256, world size, step
//   latest                      "checkpoint-STEP\n", replaced atomically after the rename
//
// A checkpoint is complete when its manifest exists and every file it lists has the recorded size and
// sha256. Discovery takes the newest complete one, whatever `latest` says, so a crash at any point
// leaves the previous complete checkpoint usable.
//
// Collective functions take an MPI communicator; MPI_COMM_NULL means this process alone (rank 0 of 1),
// which single-process tools and tests use without initialising MPI.
#pragma once

#include <mpi.h>

namespace zlora::dist {
class HostGroup;
}

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace zlora::ckpt {

inline constexpr const char* kManifestName = "manifest.json";
inline constexpr const char* kLatestName = "latest";
inline constexpr const char* kTrainerStateName = "trainer_state.json";

std::string checkpoint_dir_name(long long step);  // "checkpoint-STEP"
std::string rank_file_name(int rank);             // "rank-00000.bin"

struct FileEntry {
  std::string name;
  uint64_t size = 0;
  std::string sha256;
};

struct Manifest {
  long long step = 0;
  int world_size = 0;
  std::vector<FileEntry> rank_files;  // index = rank
  std::vector<FileEntry> files;       // rank 0's other files (adapter, trainer_state.json, ...)
  std::string zlora_version;
  nlohmann::json to_json() const;
  static Manifest from_json(const nlohmann::json& j);  // throws zlora::Error
};

struct CheckpointInfo {
  std::filesystem::path dir;
  Manifest manifest;
  long long step() const { return manifest.step; }
  int world_size() const { return manifest.world_size; }
};

// Writes files into the checkpoint's temporary directory on rank 0 (the PEFT adapter files).
using Rank0Writer = std::function<void(const std::filesystem::path& dir)>;

struct SaveRequest {
  long long step = 0;
  std::string_view payload;                   // this rank's bytes
  Rank0Writer rank0_files;                    // may be empty
  std::string trainer_state_json;             // rank 0; written as trainer_state.json when not empty
  std::optional<long long> save_total_limit;  // prune older complete checkpoints beyond this count
};

// Collective: every rank of `group` calls it with its payload (group null: a single process). Returns the
// final checkpoint directory once `latest` names it, on every rank; throws zlora::Error on every rank when
// any rank failed, leaving only a .tmp directory behind (removed by clean_stale()). Its collectives are
// bounded by the group's ddp_timeout: a rank lost mid-save ends the job with a message naming it.
std::filesystem::path save_checkpoint(const std::filesystem::path& output_dir, const SaveRequest& request,
                                      dist::HostGroup* group);

// Checks one checkpoint directory. deep = true also re-hashes every file (discovery, resume); false
// checks the manifest and file sizes only (pruning). On failure returns nullopt and says why in `why`.
std::optional<CheckpointInfo> verify_checkpoint(const std::filesystem::path& dir, bool deep = true,
                                                std::string* why = nullptr);

// The step of a "checkpoint-STEP" directory name, or nullopt for any other name (".tmp" included).
std::optional<long long> parse_checkpoint_step(const std::string& name);

// Every checkpoint-STEP directory (complete or not), ascending by step.
std::vector<std::filesystem::path> list_checkpoint_dirs(const std::filesystem::path& output_dir);

// The newest complete checkpoint (deep verification, newest first), or nullopt.
std::optional<CheckpointInfo> find_latest_checkpoint(const std::filesystem::path& output_dir);

// The directory `latest` names, or nullopt when there is no pointer.
std::optional<std::string> read_latest_pointer(const std::filesystem::path& output_dir);

// --resume_from_checkpoint: "latest" (newest complete in output_dir) or a checkpoint directory path.
// Throws zlora::Error saying what is missing or damaged. With "latest", every checkpoint newer than the
// one taken failed verification: each is reported (file, expected and found size or sha256) and moved
// aside to checkpoint-STEP.damaged (move_aside_damaged), never deleted or overwritten.
CheckpointInfo resolve_resume(const std::filesystem::path& output_dir, const std::string& arg);
// Collective form: rank 0 resolves and re-hashes every file once, then broadcasts the directory (or its
// error, thrown on every rank); the other ranks only re-read the manifest. read_payloads() still checks
// the hash of each file a rank reads.
CheckpointInfo resolve_resume(const std::filesystem::path& output_dir, const std::string& arg, MPI_Comm comm);

// "checkpoint-STEP.damaged" (n = 1), "checkpoint-STEP.damaged-2", ...: where a damaged checkpoint is kept.
std::string damaged_dir_name(long long step, int n = 1);
bool is_damaged_dir_name(const std::string& name);
// Renames a damaged checkpoint-STEP directory to the first free damaged_dir_name; returns the new path.
std::filesystem::path move_aside_damaged(const std::filesystem::path& dir);

// Rank 0 at start: removes checkpoint-*.tmp directories and stray temporary files a crashed save left.
// Returns the removed paths.
std::vector<std::filesystem::path> clean_stale(const std::filesystem::path& output_dir);

// Removes the oldest complete checkpoints so that at most `limit` (>= 1) remain; never the newest
// complete one; incomplete directories are left for inspection. Returns the removed directories.
std::vector<std::filesystem::path> prune_checkpoints(const std::filesystem::path& output_dir, long long limit);

struct ResumePayloads {
  int saved_world_size = 0;
  bool same_world = false;
  // same_world: {this rank's payload}; otherwise every rank's payload in rank order, for the caller to
  // re-partition (ZeRO state is stored as named slices with global offsets).
  std::vector<std::string> payloads;
};
// Reads (and re-verifies the sha256 of) what this rank needs to resume.
ResumePayloads read_payloads(const CheckpointInfo& info, int rank, int world_size);
// The payload of rank `rank` of the saving run, its size and sha256 checked against the manifest.
std::string read_rank_file(const CheckpointInfo& info, int rank);

}  // namespace zlora::ckpt
