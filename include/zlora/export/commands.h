// The export module's command entry points, torch-free so that the CLI's translation units stay cheap.
#pragma once

#include <cstdio>

#include "zlora/config/args.h"

namespace zlora::exporter {

// `zlora export`: merges and writes export_dir (see merge.h).
void export_command(const config::ExportConfig& cfg);

// `zlora generate`: answers --prompt, or chats on a terminal (history kept; "clear" resets, "exit"
// quits), or answers each line of a non-terminal `in`. Text goes to `out`, speed to stderr.
int generate_command(const config::GenerateConfig& cfg, std::FILE* in, std::FILE* out);

}  // namespace zlora::exporter
