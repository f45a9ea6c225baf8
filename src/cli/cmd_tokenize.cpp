#include "zlora/cli/commands.h"
#include "zlora/core/error.h"

#include <boost/program_options.hpp>

#include <iostream>

namespace zlora::cli {

namespace po = boost::program_options;

int run_tokenize(const Args& args, Session&) {
  po::options_description opts(
      "usage: zlora tokenize --tokenizer <model dir|tokenizer.json> [--decode] < in.jsonl > out.jsonl\n"
      "Each input line is a JSON string; each output line the JSON array of its ids (--decode: the reverse).\n"
      "options");
  opts.add_options()("help,h", "show this help")("tokenizer", po::value<std::string>(),
                                                 "model directory holding tokenizer.json, or the file itself")(
      "decode", po::bool_switch(), "read JSON arrays of ids, write JSON strings");
  if (wants_help(args)) {
    std::cout << opts;
    return kExitOk;
  }
  fail("`zlora tokenize` is not built yet (issue 'Data pipeline')");
}

}  // namespace zlora::cli
