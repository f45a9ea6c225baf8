#include "zlora/cli/commands.h"
#include "zlora/config/load.h"
#include "zlora/core/error.h"
#include "zlora/core/log.h"
#include "zlora/export/commands.h"

#include <cstdio>

namespace zlora::cli {

int run_export(const Args& args, Session& session) {
  const auto& schema = config::export_schema();
  if (wants_help(args)) {
    std::fputs(
        config::help_text(schema,
                          "usage: zlora export [CONFIG.yaml] [--option value | option=value ...]\n"
                          "Merges the LoRA adapter(s) into the base model and writes a Hugging Face model directory\n"
                          "(sharded safetensors, config.json, generation_config.json, tokenizer files, Ollama\n"
                          "Modelfile), as `llamafactory-cli export` does. docs/serving.md shows how to serve it.")
            .c_str(),
        stdout);
    return kExitOk;
  }
  auto r = config::load_export_config(args);
  print_config_messages(r.warnings, r.notes);
  exporter::export_command(r.cfg);
  return kExitOk;
}

}  // namespace zlora::cli
