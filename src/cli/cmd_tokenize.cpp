#include "zlora/cli/commands.h"
#include "zlora/cli/options.h"
#include "zlora/core/error.h"
#include "zlora/data/tokenizer.h"

#include <fmt/format.h>
#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

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
  po::variables_map vm = parse_options("tokenize", opts, args);
  ZLORA_REQUIRE(vm.count("tokenizer"), "zlora tokenize needs --tokenizer <model directory or tokenizer.json>");
  data::Tokenizer tok = data::Tokenizer::load(vm["tokenizer"].as<std::string>());
  const bool decode = vm["decode"].as<bool>();
  data::BpeCache cache;
  std::string line, out;
  for (size_t n = 1; std::getline(std::cin, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("stdin line {}: not JSON ({})", n, e.what());
    }
    if (decode) {
      ZLORA_REQUIRE(j.is_array(), "stdin line {}: --decode expects a JSON array of ids", n);
      std::vector<int32_t> ids;
      for (const auto& v : j) {
        ZLORA_REQUIRE(v.is_number_integer(), "stdin line {}: ids must be integers", n);
        ids.push_back(v.get<int32_t>());
      }
      out = nlohmann::json(tok.decode(ids)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    } else {
      ZLORA_REQUIRE(j.is_string(), "stdin line {}: expected a JSON string (use --decode for arrays of ids)", n);
      out = "[" + fmt::format("{}", fmt::join(tok.encode(j.get_ref<const std::string&>(), &cache), ", ")) + "]";
    }
    out += '\n';
    std::fwrite(out.data(), 1, out.size(), stdout);
  }
  return kExitOk;
}

}  // namespace zlora::cli
