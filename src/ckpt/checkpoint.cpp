#include "zlora/ckpt/checkpoint.h"

#include "rank0.h"

#include "zlora/ckpt/fault.h"
#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/log.h"
#include "zlora/core/sha256.h"
#include "zlora/core/text.h"
#include "zlora/dist/host_group.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <set>

namespace zlora::ckpt {

namespace stdfs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kFormat = "zlora-checkpoint";
constexpr int kFormatVersion = 1;
constexpr const char* kTmpSuffix = ".tmp";
constexpr const char* kDamagedSuffix = ".damaged";

// The save protocol's collectives: over the HostGroup (bounded by ddp_timeout, naming a lost rank), or
// none in a single process (group null).
struct Comm {
  dist::HostGroup* group;
  int rank = 0;
  int size = 1;
  explicit Comm(dist::HostGroup* g) : group(g) {
    if (group) {
      rank = group->rank();
      size = group->size();
    }
  }
  // Every rank learns whether every rank succeeded, and why not: the failing ranks' messages are
  // gathered to all, so whichever rank reports first (under mpiexec, rank 0's report and MPI_Abort end the
  // job before a slower rank prints) tells the real reason, e.g. rank 1's "File too large", prefixed with
  // what was being done. Doubles as a barrier, which is what orders the protocol's phases.
  void check(const std::string& local_error, const std::string& what) const {
    const bool ok = local_error.empty();
    if (!group) {
      if (!ok) fail("{}: {}", what, local_error);
      return;
    }
    if (group->all_reduce_max(ok ? 0 : 1, what) == 0) return;
    // Collective on the failure path only (every rank saw a failure): each rank's message, in rank order.
    const std::vector<std::string> all = group->all_gather(ok ? std::string() : local_error, what);
    std::string reasons;
    for (int r = 0; r < size; ++r) {
      if (all[size_t(r)].empty()) continue;
      reasons += fmt::format("{}rank {}: {}", reasons.empty() ? "" : "; ", r, all[size_t(r)]);
    }
    fail("{} failed on {}", what, reasons);
  }
};

// "cannot create directory" from "filesystem error: cannot create directory: Permission denied [...]".
std::string op_of(const stdfs::filesystem_error& e) {
  std::string what = e.what();
  const std::string prefix = "filesystem error: ";
  if (text::starts_with(what, prefix)) what = what.substr(prefix.size());
  auto colon = what.find(':');
  return colon == std::string::npos ? std::string("file system operation") : what.substr(0, colon);
}

template <typename F>
std::string capture(F&& f) {
  try {
    f();
    return {};
  } catch (const stdfs::filesystem_error& e) {
    // std::filesystem's own wording ("filesystem error: cannot create directory: Permission denied [p]")
    // rearranged into zlora's: the path, quoted, then the reason.
    std::string path = e.path1().empty() ? std::string() : " '" + e.path1().string() + "'";
    return fmt::format("{}{}: {}", op_of(e), path,
                       e.code().category() == std::generic_category() || e.code().category() == std::system_category()
                           ? fs::errno_message(e.code().value())
                           : e.code().message());
  } catch (const std::exception& e) {
    std::string msg = e.what();
    return msg.empty() ? "unknown error" : msg;
  }
}

FileEntry entry_for(const stdfs::path& file) {
  return {file.filename().string(), uint64_t(stdfs::file_size(file)), sha256_file(file.string())};
}

}  // namespace

std::string checkpoint_dir_name(long long step) { return fmt::format("checkpoint-{}", step); }
std::string rank_file_name(int rank) { return fmt::format("rank-{:05d}.bin", rank); }

std::optional<long long> parse_checkpoint_step(const std::string& name) {
  const std::string prefix = "checkpoint-";
  if (!text::starts_with(name, prefix)) return std::nullopt;
  long long step = 0;
  if (!text::parse_int64(name.substr(prefix.size()), step) || step < 0) return std::nullopt;
  if (name != checkpoint_dir_name(step)) return std::nullopt;  // "checkpoint-+5", "checkpoint-007"
  return step;
}

json Manifest::to_json() const {
  auto files_json = [](const std::vector<FileEntry>& v) {
    json a = json::array();
    for (const auto& f : v) a.push_back({{"name", f.name}, {"size", f.size}, {"sha256", f.sha256}});
    return a;
  };
  return json{{"format", kFormat},
              {"version", kFormatVersion},
              {"step", step},
              {"world_size", world_size},
              {"rank_files", files_json(rank_files)},
              {"files", files_json(files)},
              {"zlora_version", zlora_version}};
}

Manifest Manifest::from_json(const json& j) {
  Manifest m;
  try {
    ZLORA_REQUIRE(j.at("format").get<std::string>() == kFormat, "not a zlora checkpoint manifest (format '{}')",
                  j.at("format").dump());
    int version = j.at("version").get<int>();
    ZLORA_REQUIRE(version == kFormatVersion, "manifest version {} is not supported by this zlora (reads {})", version,
                  kFormatVersion);
    m.step = j.at("step").get<long long>();
    m.world_size = j.at("world_size").get<int>();
    m.zlora_version = j.value("zlora_version", "");
    auto read = [](const json& a, std::vector<FileEntry>& out) {
      for (const auto& f : a) {
        FileEntry e{f.at("name").get<std::string>(), f.at("size").get<uint64_t>(), f.at("sha256").get<std::string>()};
        // Names come from the file; never let one point outside the checkpoint directory.
        ZLORA_REQUIRE(!e.name.empty() && e.name.find('/') == std::string::npos && e.name != "." && e.name != "..",
                      "manifest lists an invalid file name '{}'", e.name);
        out.push_back(std::move(e));
      }
    };
    read(j.at("rank_files"), m.rank_files);
    read(j.at("files"), m.files);
  } catch (const json::exception& e) {
    fail("malformed checkpoint manifest: {}", e.what());
  }
  ZLORA_REQUIRE(m.world_size >= 1 && (int)m.rank_files.size() == m.world_size,
                "manifest lists {} rank files for world size {}", m.rank_files.size(), m.world_size);
  for (int r = 0; r < m.world_size; ++r)
    ZLORA_REQUIRE(m.rank_files[r].name == rank_file_name(r), "manifest rank file {} is named '{}', expected '{}'", r,
                  m.rank_files[r].name, rank_file_name(r));
  return m;
}

stdfs::path save_checkpoint(const stdfs::path& output_dir, const SaveRequest& req, dist::HostGroup* group) {
  Comm comm(group);
  ZLORA_REQUIRE(req.step >= 0, "checkpoint step must be >= 0, got {}", req.step);
  ZLORA_REQUIRE(!req.save_total_limit || *req.save_total_limit >= 1, "save_total_limit must be >= 1, got {}",
                req.save_total_limit.value_or(0));
  const std::string name = checkpoint_dir_name(req.step);
  const stdfs::path final_dir = output_dir / name;
  const stdfs::path tmp_dir = output_dir / (name + kTmpSuffix);
  const std::string what = fmt::format("saving checkpoint {}", final_dir.string());

  // Phase 1 (rank 0): a fresh temporary directory; a leftover from a crashed save of this step goes.
  comm.check(capture([&] {
               fault_point("save_begin", comm.rank);
               if (comm.rank != 0) return;
               stdfs::create_directories(output_dir);
               fs::remove_tree(tmp_dir);
               stdfs::create_directory(tmp_dir);
             }),
             what);

  // Phase 2 (every rank): its payload under a temporary name, fsync, rename (fs::write_file_atomic).
  FileEntry mine{rank_file_name(comm.rank), uint64_t(req.payload.size()), {}};
  comm.check(capture([&] {
               mine.sha256 = sha256_hex(req.payload);
               fault_point_partial_write("rank_file_half", comm.rank, fs::temp_sibling(tmp_dir / mine.name),
                                         req.payload);
               fs::write_file_atomic(tmp_dir / mine.name, req.payload);
               fault_point("rank_file_done", comm.rank);
             }),
             what);

  // Phase 3: rank 0 collects every rank's size and hash (the allreduce above ordered all writes first).
  struct Wire {
    uint64_t size;
    char sha[64];
  };
  Wire w{mine.size, {}};
  std::memcpy(w.sha, mine.sha256.data(), std::min<size_t>(64, mine.sha256.size()));
  std::vector<Wire> all(size_t(comm.size));
  if (group) {
    const std::vector<std::string> got =
        group->gather(std::string(reinterpret_cast<const char*>(&w), sizeof w), 0, what + " (file sizes and hashes)");
    for (size_t r = 0; r < got.size(); ++r) {
      ZLORA_REQUIRE(got[r].size() == sizeof w, "{}: rank {} sent {} bytes of file facts, expected {}", what, r,
                    got[r].size(), sizeof w);
      std::memcpy(&all[r], got[r].data(), sizeof w);
    }
  } else {
    all[0] = w;
  }

  // Phase 4 (rank 0): its own files, trainer_state.json, the manifest LAST, rename, then `latest`.
  std::string err;
  if (comm.rank == 0) {
    err = capture([&] {
      Manifest m;
      m.step = req.step;
      m.world_size = comm.size;
      m.zlora_version = ZLORA_VERSION;
      for (int r = 0; r < comm.size; ++r)
        m.rank_files.push_back({rank_file_name(r), all[r].size, std::string(all[r].sha, 64)});
      if (req.rank0_files) req.rank0_files(tmp_dir);
      if (!req.trainer_state_json.empty()) fs::write_file_atomic(tmp_dir / kTrainerStateName, req.trainer_state_json);
      std::set<std::string> rank_names;
      for (const auto& f : m.rank_files) rank_names.insert(f.name);
      std::vector<stdfs::path> extra;
      for (const auto& e : stdfs::directory_iterator(tmp_dir)) {
        std::string fname = e.path().filename().string();
        if (rank_names.count(fname) || fname == kManifestName) continue;
        ZLORA_REQUIRE(e.is_regular_file(), "checkpoint files must be plain files; '{}' is not", e.path().string());
        extra.push_back(e.path());
      }
      std::sort(extra.begin(), extra.end());
      for (const auto& p : extra) {
        fs::fsync_path(p);  // the callback's files may not have been synced by their writer
        m.files.push_back(entry_for(p));
      }
      fault_point("before_manifest", comm.rank);
      const std::string manifest = m.to_json().dump(2) + "\n";
      fault_point_partial_write("manifest_half", comm.rank, fs::temp_sibling(tmp_dir / kManifestName), manifest);
      fs::write_file_atomic(tmp_dir / kManifestName, manifest);
      fs::fsync_path(tmp_dir);
      fault_point("before_rename", comm.rank);
      // Saving a step that already exists (a resumed run re-saving it) replaces the old directory.
      if (stdfs::exists(final_dir)) fs::remove_tree(final_dir);
      fs::rename_durable(tmp_dir, final_dir);
      fault_point("before_latest", comm.rank);
      fs::write_file_atomic(output_dir / kLatestName, name + "\n");
      fault_point("after_latest", comm.rank);
      if (req.save_total_limit) prune_checkpoints(output_dir, *req.save_total_limit);
    });
  }
  // No rank returns before the checkpoint is committed (or failed) on rank 0.
  comm.check(err, what);
  return final_dir;
}

std::optional<CheckpointInfo> verify_checkpoint(const stdfs::path& dir, bool deep, std::string* why) {
  auto bad = [&](std::string reason) -> std::optional<CheckpointInfo> {
    if (why) *why = std::move(reason);
    return std::nullopt;
  };
  if (!stdfs::is_directory(dir)) return bad(fmt::format("'{}' is not a directory", dir.string()));
  auto manifest_path = dir / kManifestName;
  if (!stdfs::is_regular_file(manifest_path))
    return bad(fmt::format("'{}' has no {} (the save did not finish)", dir.string(), kManifestName));
  CheckpointInfo info;
  info.dir = dir;
  try {
    json j = json::parse(fs::read_file(manifest_path));
    info.manifest = Manifest::from_json(j);
  } catch (const std::exception& e) {
    return bad(fmt::format("'{}': {}", manifest_path.string(), e.what()));
  }
  std::vector<FileEntry> expected = info.manifest.rank_files;
  expected.insert(expected.end(), info.manifest.files.begin(), info.manifest.files.end());
  for (const auto& f : expected) {
    auto p = dir / f.name;
    std::error_code ec;
    if (!stdfs::is_regular_file(p, ec)) return bad(fmt::format("'{}' is missing", p.string()));
    uint64_t size = stdfs::file_size(p, ec);
    if (ec || size != f.size)
      return bad(fmt::format("'{}' has {} bytes, the manifest says {}", p.string(), size, f.size));
    if (deep) {
      std::string sha;
      try {
        sha = sha256_file(p.string());
      } catch (const std::exception& e) {
        return bad(e.what());
      }
      if (sha != f.sha256)
        return bad(fmt::format("'{}' is damaged: sha256 {} differs from the manifest's {}", p.string(), sha, f.sha256));
    }
  }
  return info;
}

std::vector<stdfs::path> list_checkpoint_dirs(const stdfs::path& output_dir) {
  std::vector<std::pair<long long, stdfs::path>> found;
  std::error_code ec;
  if (!stdfs::is_directory(output_dir, ec)) return {};
  for (const auto& e : stdfs::directory_iterator(output_dir)) {
    if (!e.is_directory()) continue;
    if (auto step = parse_checkpoint_step(e.path().filename().string())) found.emplace_back(*step, e.path());
  }
  std::sort(found.begin(), found.end());
  std::vector<stdfs::path> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

std::optional<CheckpointInfo> find_latest_checkpoint(const stdfs::path& output_dir) {
  auto dirs = list_checkpoint_dirs(output_dir);
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it)
    if (auto info = verify_checkpoint(*it, true)) return info;
  return std::nullopt;
}

std::optional<std::string> read_latest_pointer(const stdfs::path& output_dir) {
  auto p = output_dir / kLatestName;
  if (!stdfs::is_regular_file(p)) return std::nullopt;
  return text::trim(fs::read_file(p, 4096));
}

std::string damaged_dir_name(long long step, int n) {
  return checkpoint_dir_name(step) + kDamagedSuffix + (n > 1 ? fmt::format("-{}", n) : std::string());
}

bool is_damaged_dir_name(const std::string& name) {
  const size_t at = name.find(kDamagedSuffix);
  return at != std::string::npos && parse_checkpoint_step(name.substr(0, at)).has_value();
}

stdfs::path move_aside_damaged(const stdfs::path& dir) {
  const auto step = parse_checkpoint_step(dir.filename().string());
  ZLORA_REQUIRE(step, "move_aside_damaged: '{}' is not a checkpoint-STEP directory", dir.string());
  for (int n = 1;; ++n) {
    const stdfs::path aside = dir.parent_path() / damaged_dir_name(*step, n);
    if (stdfs::exists(aside)) continue;
    fs::rename_durable(dir, aside);
    return aside;
  }
}

CheckpointInfo resolve_resume(const stdfs::path& output_dir, const std::string& arg) {
  if (arg == "latest") {
    // Newest first. A checkpoint-STEP directory exists only once its manifest was durable, so one that
    // fails verification was damaged afterwards (disk, a copy, a hand): say so loudly and move it aside,
    // so that neither this resume nor a later save of the same step (which replaces the directory)
    // destroys the evidence.
    auto dirs = list_checkpoint_dirs(output_dir);
    std::vector<std::string> damaged;
    for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
      std::string why;
      if (auto info = verify_checkpoint(*it, true, &why)) {
        // `latest` may name a directory just moved aside: name the one resumed from instead.
        if (!damaged.empty()) fs::write_file_atomic(output_dir / kLatestName, it->filename().string() + "\n");
        return *info;
      }
      const stdfs::path aside = move_aside_damaged(*it);
      log::error("checkpoint {} is damaged and was moved aside to {}: {}", it->filename().string(),
                 aside.filename().string(), why);
      damaged.push_back(fmt::format("{} (moved to {}: {})", it->filename().string(), aside.filename().string(), why));
    }
    fail(
        "--resume_from_checkpoint latest: no complete checkpoint in '{}'{}; to train from scratch instead, run "
        "without --resume_from_checkpoint and with --overwrite_output_dir true (it removes this run's logs and "
        "checkpoints{})",
        output_dir.string(),
        damaged.empty() ? std::string(" (no checkpoint directory)")
                        : fmt::format(": {} damaged, none left: {}", damaged.size(), text::join(damaged, "; ")),
        damaged.empty() ? std::string() : "; the damaged ones moved aside are kept");
  }
  stdfs::path dir = arg;
  std::string why;
  auto info = verify_checkpoint(dir, true, &why);
  if (!info)
    fail(
        "--resume_from_checkpoint {}: cannot resume from this checkpoint: {}; use --resume_from_checkpoint latest "
        "to take the newest complete one",
        arg, why);
  return *info;
}

CheckpointInfo resolve_resume(const stdfs::path& output_dir, const std::string& arg, MPI_Comm mpi_comm) {
  if (mpi_comm == MPI_COMM_NULL) return resolve_resume(output_dir, arg);
  struct {
    int rank = 0;
  } comm;
  MPI_Comm_rank(mpi_comm, &comm.rank);
  const std::string dir = on_rank0(mpi_comm, [&] { return resolve_resume(output_dir, arg).dir.string(); });
  if (comm.rank == 0) return *verify_checkpoint(dir, false);
  std::string why;
  auto info = verify_checkpoint(dir, false, &why);
  ZLORA_REQUIRE(info,
                "rank {} cannot see the checkpoint rank 0 resumes from: {} (is output_dir on a file system "
                "shared by all nodes?)",
                comm.rank, why);
  return *info;
}

std::vector<stdfs::path> clean_stale(const stdfs::path& output_dir) {
  std::vector<stdfs::path> removed;
  std::error_code ec;
  if (!stdfs::is_directory(output_dir, ec)) return removed;
  for (const auto& e : stdfs::directory_iterator(output_dir)) {
    std::string name = e.path().filename().string();
    bool tmp_ckpt = e.is_directory() && text::starts_with(name, "checkpoint-") && text::ends_with(name, kTmpSuffix);
    // fs::write_file_atomic's temporaries ("<name>.tmp.<pid>") of `latest` and the JSON logs.
    bool tmp_file = e.is_regular_file() && name.find(".tmp.") != std::string::npos;
    if (tmp_ckpt || tmp_file) {
      // A requeued job on an output_dir that became read-only stops here, before any training.
      std::error_code rm;
      fs::remove_tree(e.path(), rm);
      if (rm)
        fail("cannot remove '{}', left by an interrupted save: {}; output_dir must be writable to train or resume",
             e.path().string(), fs::errno_message(rm.value()));
      removed.push_back(e.path());
    }
  }
  return removed;
}

std::vector<stdfs::path> prune_checkpoints(const stdfs::path& output_dir, long long limit) {
  ZLORA_REQUIRE(limit >= 1, "save_total_limit must be >= 1, got {}", limit);
  std::vector<stdfs::path> complete;
  for (const auto& d : list_checkpoint_dirs(output_dir))
    if (verify_checkpoint(d, false)) complete.push_back(d);
  std::vector<stdfs::path> removed;
  // Oldest first; the newest complete is never among the first size - limit (limit >= 1).
  for (size_t i = 0; i + size_t(limit) < complete.size(); ++i) {
    fs::remove_tree(complete[i]);
    removed.push_back(complete[i]);
  }
  if (!removed.empty()) fs::fsync_path(output_dir);
  return removed;
}

std::string read_rank_file(const CheckpointInfo& info, int rank) {
  ZLORA_REQUIRE(rank >= 0 && rank < info.world_size(), "read_rank_file: rank {} is not a rank of {} (world size {})",
                rank, info.dir.string(), info.world_size());
  const FileEntry& f = info.manifest.rank_files.at(size_t(rank));
  auto p = info.dir / f.name;
  std::string bytes = fs::read_file(p, size_t(1) << 40);
  std::string sha = sha256_hex(bytes);
  ZLORA_REQUIRE(bytes.size() == f.size && sha == f.sha256,
                "'{}' changed since the checkpoint was written ({} bytes, sha256 {}; manifest: {} bytes, {})",
                p.string(), bytes.size(), sha, f.size, f.sha256);
  return bytes;
}

ResumePayloads read_payloads(const CheckpointInfo& info, int rank, int world_size) {
  ZLORA_REQUIRE(world_size >= 1 && rank >= 0 && rank < world_size, "read_payloads: rank {} outside world size {}", rank,
                world_size);
  ResumePayloads out;
  out.saved_world_size = info.world_size();
  out.same_world = info.world_size() == world_size;
  if (out.same_world) {
    out.payloads.push_back(read_rank_file(info, rank));
  } else {
    for (int r = 0; r < info.world_size(); ++r) out.payloads.push_back(read_rank_file(info, r));
  }
  return out;
}

}  // namespace zlora::ckpt
