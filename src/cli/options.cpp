#include "zlora/cli/options.h"

#include "zlora/core/error.h"

namespace zlora::cli {

namespace po = boost::program_options;

po::variables_map parse_options(const char* command, const po::options_description& options, const Args& args,
                                const po::positional_options_description& positional) {
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(options).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    fail("zlora {}: {} (see `zlora {} --help`)", command, e.what(), command);
  }
  return vm;
}

}  // namespace zlora::cli
