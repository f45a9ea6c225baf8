// `zlora scaling-report DIR`: the table and plot of a benchmarks/scaling_sweep.sh sweep directory.
#include "zlora/cli/commands.h"
#include "zlora/cli/scaling_report.h"
#include "zlora/core/error.h"
#include "zlora/core/log.h"

#include <boost/program_options.hpp>

#include <iostream>

namespace zlora::cli {

namespace po = boost::program_options;

int run_scaling_report(const Args& args, Session&);

int run_scaling_report(const Args& args, Session&) {
  po::options_description opts(
      "usage: zlora scaling-report SWEEP_DIR\nReads every run directory SWEEP_DIR/runs/* of "
      "benchmarks/scaling_sweep.sh (sweep_run.json, all_results.json, trainer_log.jsonl, topology.json) and "
      "writes SWEEP_DIR/scaling.md, scaling.json, scaling.csv, scaling.svg (and scaling.png): time, "
      "samples/s, tokens/s, scaling efficiency against one node, peak memory, bytes communicated per step. "
      "A failed run is a row with its reason; a value a run did not record is n/a.\noptions");
  opts.add_options()("help,h", "show this help");
  if (wants_help(args)) {
    std::cout << opts;
    return kExitOk;
  }
  std::vector<std::string> dirs;
  for (const auto& a : args) {
    if (!a.empty() && a[0] == '-')
      fail("zlora scaling-report: unknown option '{}'; usage: zlora scaling-report SWEEP_DIR", a);
    dirs.push_back(a);
  }
  if (dirs.size() != 1)
    fail("zlora scaling-report takes one SWEEP_DIR (the --out of benchmarks/scaling_sweep.sh), got {}", dirs.size());
  std::vector<scaling::RunRow> rows = scaling::read_sweep(dirs[0]);
  scaling::ReportFiles files = scaling::write_report(dirs[0], rows);
  size_t failed = 0;
  for (const auto& r : rows) failed += r.status != "ok";
  std::cout << rows.size() << " run(s), " << failed << " failed\n";
  for (const auto& f : files.written) std::cout << "wrote " << f.string() << "\n";
  if (!files.png) log::warn("this zlora was built without libpng: only the SVG plot was written");
  return kExitOk;
}

}  // namespace zlora::cli
