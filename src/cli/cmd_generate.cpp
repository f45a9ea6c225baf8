#include "zlora/cli/commands.h"
#include "zlora/config/load.h"
#include "zlora/core/error.h"
#include "zlora/core/log.h"

#include <cstdio>

namespace zlora::cli {

int run_generate(const Args& args, Session& session) {
  const auto& schema = config::generate_schema();
  if (wants_help(args)) {
    std::fputs(
        config::help_text(schema, "usage: zlora generate [CONFIG.yaml] [--option value | option=value ...]").c_str(),
        stdout);
    return kExitOk;
  }
  auto r = config::load_generate_config(args);
  for (const auto& w : r.warnings) log::warn("{}", w);
  fail("`zlora generate` is not built yet; its options are parsed and validated (see `zlora generate --help`)");
}

}  // namespace zlora::cli
