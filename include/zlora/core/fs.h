// File-system helpers with the durability rules zlora's outputs follow: write to a temporary name in the
// same directory, fsync, rename over the target, fsync the directory. A crash leaves either the old
// file or the new one, never a half-written file under the final name.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

namespace zlora::fs {

// Atomically replaces `path` with `contents`.
void write_file_atomic(const std::filesystem::path& path, std::string_view contents);

// fsyncs a file or a directory (so a rename inside it is durable).
void fsync_path(const std::filesystem::path& path);

// Atomically renames `from` to `to` (same file system) and fsyncs the parent directory.
void rename_durable(const std::filesystem::path& from, const std::filesystem::path& to);

// Reads a whole file; throws zlora::Error naming the path and the reason.
std::string read_file(const std::filesystem::path& path, size_t max_bytes = size_t(1) << 31);

// strerror(err), plus what to do for the errors of a full, size-limited, read-only or foreign file system
// ("No space left on device (the file system is full or over quota: ...)"), for messages about writes.
std::string errno_message(int err);

// std::filesystem::remove_all with POSIX calls (lstat, opendir, unlink, rmdir): symlinks are removed,
// never followed; a missing path removes nothing. Why not the standard one: PyTorch's pip LibTorch
// exports its own copy of std::filesystem (libtorch_cpu.so, 142 symbols from the older libstdc++ it was
// built with), so a call may bind to that copy; tree removal, which the checkpoint and export code rely
// on, is kept independent of it. (A crash seen in the CUDA build's test_model was first suspected here;
// it persisted after this change, so its cause is elsewhere and still open.)
// Returns the number of entries removed; the first form sets `ec` instead of throwing.
std::uintmax_t remove_tree(const std::filesystem::path& path, std::error_code& ec);
std::uintmax_t remove_tree(const std::filesystem::path& path);  // fails naming the path and the reason

// A file's size and modification time (nanoseconds since the epoch), from stat(2). The token store
// records both beside each data file's SHA-256 so that a later run can skip re-hashing an unchanged file.
struct FileStamp {
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
};
FileStamp file_stamp(const std::filesystem::path& path);  // fails naming the path and the reason

// A temporary sibling name for `path` unique to this process: "<name>.tmp.<pid>".
std::filesystem::path temp_sibling(const std::filesystem::path& path);

}  // namespace zlora::fs
