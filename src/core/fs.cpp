#include "zlora/core/fs.h"

#include "zlora/core/error.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

namespace zlora::fs {

namespace {

// An owned POSIX file descriptor.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

std::string errno_text() { return std::strerror(errno); }

}  // namespace

// The hints say what to do, so that "File too large" is not mistaken for a bug in zlora.
std::string errno_message(int err) {
  std::string text = std::strerror(err);
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      return text + " (the file system is full or over quota: free space there or choose another directory)";
    case EFBIG:
      return text + " (beyond the process's file-size limit, `ulimit -f`, or the file system's largest file)";
    case EROFS:
      return text + " (the file system is mounted read-only: remount it writable or choose another directory)";
    case EACCES:
    case EPERM:
      return text + " (this user may not write there: check the directory's owner and permissions)";
    default:
      return text;
  }
}

std::filesystem::path temp_sibling(const std::filesystem::path& path) {
  return path.parent_path() / (path.filename().string() + ".tmp." + std::to_string(::getpid()));
}

void fsync_path(const std::filesystem::path& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) fail("cannot open '{}' to sync it: {}", path.string(), errno_text());
  if (::fsync(fd.get()) != 0 && errno != EINVAL) fail("fsync of '{}' failed: {}", path.string(), errno_text());
}

void rename_durable(const std::filesystem::path& from, const std::filesystem::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    fail("cannot rename '{}' to '{}': {}", from.string(), to.string(), errno_message(errno));
  auto parent = to.parent_path().empty() ? std::filesystem::path(".") : to.parent_path();
  fsync_path(parent);
}

void write_file_atomic(const std::filesystem::path& path, std::string_view contents) {
  auto tmp = temp_sibling(path);
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd.get() < 0)
      fail("cannot create '{}' (the temporary file for '{}'): {}", tmp.string(), path.string(), errno_message(errno));
    const char* p = contents.data();
    size_t left = contents.size();
    while (left > 0) {
      ssize_t n = ::write(fd.get(), p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        // The half-written temporary goes: `path` itself was never touched.
        ::unlink(tmp.c_str());
        fail("cannot write '{}' ({} of {} bytes written to '{}', now removed): {}", path.string(),
             contents.size() - left, contents.size(), tmp.filename().string(), errno_message(err));
      }
      p += n, left -= static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) != 0) {
      const int err = errno;
      ::unlink(tmp.c_str());
      fail("cannot write '{}' (fsync of '{}' failed): {}", path.string(), tmp.filename().string(), errno_message(err));
    }
  }
  rename_durable(tmp, path);
}

FileStamp file_stamp(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail("cannot read the size and time of '{}': {}", path.string(), errno_text());
  return {static_cast<std::uint64_t>(st.st_size), std::int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

std::string read_file(const std::filesystem::path& path, size_t max_bytes) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  if (ec) fail("cannot read '{}': {}", path.string(), ec.message());
  if (size > max_bytes) fail("'{}' is {} bytes, more than the {} allowed", path.string(), size, max_bytes);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open '{}': {}", path.string(), errno_text());
  std::string out(size, '\0');
  in.read(out.data(), static_cast<std::streamsize>(size));
  if (static_cast<size_t>(in.gcount()) != size) fail("short read of '{}'", path.string());
  return out;
}

namespace {
// Depth first: a directory's entries, then the directory. Returns 0 or the first errno.
int remove_tree_at(const std::string& path, std::uintmax_t& removed) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return errno == ENOENT ? 0 : errno;
  if (S_ISDIR(st.st_mode)) {
    std::vector<std::string> names;
    {
      std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(path.c_str()), &::closedir);
      if (!dir) return errno;
      while (const dirent* e = ::readdir(dir.get())) {
        const std::string name = e->d_name;
        if (name != "." && name != "..") names.push_back(name);
      }
    }
    for (const std::string& name : names)
      if (int err = remove_tree_at(path + "/" + name, removed)) return err;
    if (::rmdir(path.c_str()) != 0) return errno;
  } else if (::unlink(path.c_str()) != 0) {
    return errno;
  }
  ++removed;
  return 0;
}
}  // namespace

std::uintmax_t remove_tree(const std::filesystem::path& path, std::error_code& ec) {
  std::uintmax_t removed = 0;
  const int err = remove_tree_at(path.string(), removed);
  ec = err ? std::error_code(err, std::generic_category()) : std::error_code();
  return removed;
}

std::uintmax_t remove_tree(const std::filesystem::path& path) {
  std::error_code ec;
  const std::uintmax_t removed = remove_tree(path, ec);
  if (ec) fail("cannot remove '{}': {}", path.string(), errno_message(ec.value()));
  return removed;
}

}  // namespace zlora::fs
