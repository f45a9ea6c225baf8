#include "zlora/cli/commands.h"
#include "zlora/core/error.h"

#include <boost/program_options.hpp>

#include <iostream>

namespace zlora::cli {

namespace po = boost::program_options;

int run_plot(const Args& args, Session&) {
  po::options_description opts(
      "usage: zlora plot OUTPUT_DIR\nRedraws training_loss.svg (and .png) from "
      "OUTPUT_DIR/trainer_log.jsonl.\noptions");
  opts.add_options()("help,h", "show this help");
  if (wants_help(args)) {
    std::cout << opts;
    return kExitOk;
  }
  fail("`zlora plot` is not built yet (issue 'Trainer')");
}

}  // namespace zlora::cli
