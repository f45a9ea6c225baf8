#include "zlora/cli/commands.h"
#include "zlora/config/load.h"

#include <cstdio>

namespace zlora::cli {

// Prints the generated part of docs/config-reference.md; a test keeps the file in sync.
int run_config_reference(const Args&, Session&) {
  std::printf("### `zlora train`\n%s\n", config::reference_markdown(config::train_schema()).c_str());
  std::printf("### `zlora prepare`\n%s\n", config::reference_markdown(config::prepare_schema()).c_str());
  std::printf("### `zlora export`\n%s\n", config::reference_markdown(config::export_schema()).c_str());
  std::printf("### `zlora generate`\n%s", config::reference_markdown(config::generate_schema()).c_str());
  return kExitOk;
}

}  // namespace zlora::cli
