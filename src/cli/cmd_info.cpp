#include "zlora/cli/commands.h"
#include "zlora/core/error.h"

#include <boost/program_options.hpp>

#include <iostream>

namespace zlora::cli {

namespace po = boost::program_options;

int run_info(const Args& args, Session&) {
  po::options_description opts("usage: zlora info STORE.h5 [--samples A:B] [--json]\noptions");
  opts.add_options()("help,h", "show this help")("samples", po::value<std::string>(),
                                                 "print samples A..B-1 (file order), e.g. 0:10")(
      "json", po::bool_switch(), "one JSON object per sample: {\"input_ids\": [...], \"labels\": [...]}");
  if (wants_help(args)) {
    std::cout << opts;
    return kExitOk;
  }
  fail("`zlora info` is not built yet (issue 'Data pipeline')");
}

}  // namespace zlora::cli
