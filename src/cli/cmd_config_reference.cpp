#include "zlora/cli/commands.h"
#include "zlora/config/foreign.h"
#include "zlora/config/load.h"

#include <cstdio>

namespace zlora::cli {

// Prints the generated part of docs/config-reference.md; a test keeps the file in sync.
int run_config_reference(const Args&, Session&) {
  std::printf("### `zlora train`\n%s\n", config::reference_markdown(config::train_schema()).c_str());
  std::printf("### `zlora prepare`\n%s\n", config::reference_markdown(config::prepare_schema()).c_str());
  std::printf("### `zlora export`\n%s\n", config::reference_markdown(config::export_schema()).c_str());
  std::printf("### `zlora generate`\n%s\n", config::reference_markdown(config::generate_schema()).c_str());
  std::printf(
      "### LLaMA-Factory and transformers options zlora does not bind\n\nAny command accepts these names. An "
      "option \"accepted, no effect\" prints one info line per job; one \"refused unless off\" is a LLaMA-Factory "
      "feature zlora does not implement: null, false, 0 and the listed values are accepted silently, any other "
      "value ends the run naming the feature.\n\n%s",
      config::foreign_options_markdown().c_str());
  return kExitOk;
}

}  // namespace zlora::cli
