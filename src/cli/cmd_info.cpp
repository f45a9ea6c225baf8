#include "zlora/cli/commands.h"
#include "zlora/cli/options.h"
#include "zlora/core/error.h"
#include "zlora/core/text.h"
#include "zlora/data/prepare.h"
#include "zlora/data/token_store.h"

#include <fmt/format.h>
#include <boost/program_options.hpp>

#include <iostream>

namespace zlora::cli {

namespace po = boost::program_options;

namespace {

// "A:B" -> [A, B) clamped to the store; "A:" runs to the end.
std::pair<size_t, size_t> parse_range(const std::string& s, size_t n) {
  auto colon = s.find(':');
  long long a = 0, b = static_cast<long long>(n);
  bool ok = colon != std::string::npos && text::parse_int64(s.substr(0, colon), a) &&
            (colon + 1 == s.size() || text::parse_int64(s.substr(colon + 1), b));
  ZLORA_REQUIRE(ok && a >= 0 && b >= a, "--samples '{}' is not a range A:B with 0 <= A <= B (e.g. 0:10)", s);
  return {std::min<size_t>(size_t(a), n), std::min<size_t>(size_t(b), n)};
}

std::string ints(const std::vector<int32_t>& v) { return "[" + fmt::format("{}", fmt::join(v, ", ")) + "]"; }

}  // namespace

int run_info(const Args& args, Session&) {
  po::options_description opts("usage: zlora info STORE.h5 [--samples A:B] [--json]\noptions");
  opts.add_options()("help,h", "show this help")("samples", po::value<std::string>(),
                                                 "print samples A..B-1 (file order), e.g. 0:10")(
      "json", po::bool_switch(), "one JSON object per sample: {\"input_ids\": [...], \"labels\": [...]}");
  if (wants_help(args)) {
    std::cout << opts;
    return kExitOk;
  }
  po::options_description all;
  all.add(opts).add_options()("store", po::value<std::string>());
  po::positional_options_description pos;
  pos.add("store", 1);
  po::variables_map vm = parse_options("info", all, args, pos);
  ZLORA_REQUIRE(vm.count("store"), "zlora info needs the token store: zlora info STORE.h5");
  data::TokenStore store(vm["store"].as<std::string>());
  const bool json = vm["json"].as<bool>();
  if (vm.count("samples")) {
    auto [a, b] = parse_range(vm["samples"].as<std::string>(), store.size());
    std::string out;
    for (size_t start = a; start < b; start += 256) {  // bounded batches: never the whole store at once
      std::vector<size_t> idx;
      for (size_t i = start; i < std::min(b, start + 256); ++i) idx.push_back(i);
      auto samples = store.read(idx);
      for (size_t k = 0; k < samples.size(); ++k) {
        if (json)
          out += "{\"input_ids\": " + ints(samples[k].input_ids) + ", \"labels\": " + ints(samples[k].labels) + "}\n";
        else
          out += fmt::format("sample {} ({} tokens)\n  input_ids: {}\n  labels:    {}\n", idx[k],
                             samples[k].input_ids.size(), ints(samples[k].input_ids), ints(samples[k].labels));
      }
      std::fputs(out.c_str(), stdout);
      out.clear();
    }
    return kExitOk;
  }
  const data::StoreMeta& m = store.meta();
  // Strings recorded from files (names, the default system prompt, dataset_info entries) are escaped.
  auto p = [](const std::string& s) { return text::printable(s, 4096); };
  std::string out = fmt::format("{}\n  format_version: {}\n  zlora_version: {}\n", store.path().string(),
                                m.format_version, p(m.zlora_version));
  if (m.provenance_known())
    out += fmt::format("  made_by: {}\n", p(m.made_by));
  else
    out +=
        "  provenance: unknown (a format-1 store records no default_system, max_samples, tokenizer config, "
        "dataset entries or file sizes)\n";
  out += fmt::format("  tokenizer_sha256: {}\n", p(m.tokenizer_sha256));
  if (m.provenance_known())
    out += fmt::format("  tokenizer_config_sha256: {}\n",
                       m.tokenizer_config_sha256.empty() ? std::string("none") : p(m.tokenizer_config_sha256));
  out += fmt::format("  vocab_size: {}\n  template: {}\n", m.vocab_size, p(m.template_name));
  if (m.provenance_known())
    out += fmt::format("  default_system: {}\n", m.default_system ? "\"" + p(*m.default_system) + "\"" : "unset");
  out += fmt::format("  cutoff_len: {}\n", m.cutoff_len);
  if (m.provenance_known())
    out += fmt::format("  max_samples: {}\n", m.max_samples ? std::to_string(*m.max_samples) : "unset");
  out += fmt::format(
      "  train_on_prompt: {}\n  mask_history: {}\n  samples: {} ({} dropped at prepare)\n  tokens: {} ({} "
      "trained)\n",
      m.train_on_prompt, m.mask_history, m.num_samples, m.num_dropped, m.num_tokens, m.num_label_tokens);
  if (m.provenance_known()) out += fmt::format("  dataset_dir: {}\n", p(m.dataset_dir));
  out += "  sources:\n";
  for (const auto& s : m.sources) {
    out += fmt::format("    {}: {} rows ({} abnormal)\n", p(s.name), s.rows, s.invalid);
    if (m.provenance_known()) out += fmt::format("      dataset_info.json entry: {}\n", p(s.dataset_info));
    for (size_t i = 0; i < s.files.size(); ++i) {
      if (m.provenance_known())
        out += fmt::format("      {}  {} bytes  sha256 {}\n", p(s.files[i]), s.sizes[i], p(s.sha256s[i]));
      else
        out += fmt::format("      {}  sha256 {}\n", p(s.files[i]), p(s.sha256s[i]));
    }
  }
  out += data::length_histogram(store.lengths(), "sample tokens");
  std::fputs(out.c_str(), stdout);
  return kExitOk;
}

}  // namespace zlora::cli
