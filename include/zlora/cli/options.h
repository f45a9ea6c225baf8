// Parsing for the commands with POSIX-style options (info, tokenize, init-model) through
// Boost.ProgramOptions; its errors become one zlora::Error naming the command and its --help.
#pragma once

#include "zlora/cli/commands.h"

#include <boost/program_options.hpp>

namespace zlora::cli {

boost::program_options::variables_map parse_options(
    const char* command, const boost::program_options::options_description& options, const Args& args,
    const boost::program_options::positional_options_description& positional = {});

}  // namespace zlora::cli
