#include "zlora/cli/commands.h"
#include "zlora/config/load.h"
#include "zlora/core/error.h"
#include "zlora/core/log.h"
#include "zlora/export/commands.h"

#include <cstdio>

namespace zlora::cli {

int run_generate(const Args& args, Session& session) {
  const auto& schema = config::generate_schema();
  if (wants_help(args)) {
    std::fputs(
        config::help_text(schema,
                          "usage: zlora generate [CONFIG.yaml] [--option value | option=value ...]\n"
                          "Answers --prompt through the chat template with a KV cache; without --prompt, chats on\n"
                          "a terminal (`clear`, `exit`) or answers each line of stdin. Speed goes to stderr.")
            .c_str(),
        stdout);
    return kExitOk;
  }
  auto r = config::load_generate_config(args);
  print_config_messages(r.warnings, r.notes);
  return exporter::generate_command(r.cfg, stdin, stdout);
}

}  // namespace zlora::cli
