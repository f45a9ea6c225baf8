// Helpers shared by the test binaries: paths to ../shared and the source tree, temp dirs, running zlora.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <sstream>
#include <string>

#include "zlora/core/error.h"
#include "zlora/core/fs.h"

namespace zlora::test {

// Runs `fn`, which must throw a zlora::Error whose message contains every one of `parts`.
template <typename Fn>
void expect_error(Fn fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected a zlora::Error containing '" << *parts.begin() << "'";
  } catch (const zlora::Error& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

// Runs `fn`, which must throw a zlora::Error, and returns its message ("" and a test failure if it
// does not throw).
inline std::string expect_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const zlora::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a zlora::Error";
  return "";
}

// Compiled in by tests/CMakeLists.txt.
inline std::filesystem::path shared_dir() { return ZLORA_SHARED_DIR; }
inline std::filesystem::path source_dir() { return ZLORA_SOURCE_DIR; }
inline std::filesystem::path build_dir() { return ZLORA_BUILD_DIR; }
inline std::filesystem::path zlora_bin() { return ZLORA_BIN; }

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file(const std::filesystem::path& p, const std::string& body) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary);
  out << body;
}

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// How many times `needle` occurs in `haystack`, overlaps included (e.g. a line every rank prints).
inline size_t count_occurrences(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
  return n;
}

// A fresh directory under the system temp dir, removed at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "zlora-test-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    zlora::fs::remove_tree(path_, ec);  // see core/fs.h
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

struct RunResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// Runs a shell command line, capturing stdout+stderr.
inline RunResult run_command(const std::string& cmd) {
  RunResult r{0, {}};
  // mpiexec refuses root unless told; CI containers run as root.
  std::string full = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " + cmd + " 2>&1";
  FILE* p = popen(full.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// Runs the zlora binary with arguments (already shell-quoted where needed).
inline RunResult run_zlora(const std::string& args) { return run_command(zlora_bin().string() + " " + args); }

}  // namespace zlora::test
