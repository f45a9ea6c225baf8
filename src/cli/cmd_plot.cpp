#include "zlora/cli/commands.h"
#include "zlora/core/error.h"
#include "zlora/core/log.h"
#include "zlora/train/plot.h"

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
  std::vector<std::string> dirs;
  for (const auto& a : args) {
    if (!a.empty() && a[0] == '-') fail("zlora plot: unknown option '{}'; usage: zlora plot OUTPUT_DIR", a);
    dirs.push_back(a);
  }
  if (dirs.size() != 1) fail("zlora plot takes one OUTPUT_DIR (the training run's output_dir), got {}", dirs.size());
  train::PlotFiles files = train::plot_loss(dirs[0]);
  // LLaMA-Factory prints "Figure saved at: <path>" for each figure.
  std::cout << "Figure saved at: " << files.svg.string() << "\n";
  if (!files.png.empty())
    std::cout << "Figure saved at: " << files.png.string() << "\n";
  else
    log::warn("this zlora was built without libpng: only the SVG plot was written");
  return kExitOk;
}

}  // namespace zlora::cli
