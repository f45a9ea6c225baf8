#include "zlora/cli/commands.h"
#include "zlora/core/error.h"
#include "zlora/core/text.h"
#include "zlora/data/template.h"

#include <algorithm>
#include <cstdio>

namespace zlora::cli {

// `zlora templates`: the built-in chat templates (the values of --template), one per line.
int run_templates(const Args& args, Session&) {
  if (wants_help(args)) {
    std::printf(
        "usage: zlora templates\n\nLists the chat templates --template accepts (LLaMA-Factory's names), each with the "
        "models it is for.\nSee docs/data-format.md, \"Chat templates\".\n");
    return kExitOk;
  }
  ZLORA_REQUIRE(args.empty(), "zlora templates takes no arguments (got '{}')", text::printable(args[0]));
  size_t width = 0;
  for (const auto& t : data::list_templates()) width = std::max(width, t.name.size());
  for (const auto& t : data::list_templates())
    std::printf("%-*s  %s\n", int(width), t.name.c_str(), t.description.c_str());
  return kExitOk;
}

}  // namespace zlora::cli
