// Tokenizer throughput on huanhuan.json text: MB/s of UTF-8 input, one thread encoding sample by sample
// (as `zlora prepare` does per rank), then all cores with one cache per thread. Prints one JSON line.
//   usage: bench_tokenizer TOKENIZER_DIR_OR_JSON DATA.json [THREADS] [REPEATS]
#include "zlora/core/fs.h"
#include "zlora/data/tokenizer.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

using namespace zlora;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s TOKENIZER DATA.json [THREADS] [REPEATS]\n", argv[0]);
    return 2;
  }
  unsigned threads = argc > 3 ? unsigned(std::stoul(argv[3])) : std::max(1u, std::thread::hardware_concurrency());
  int repeats = argc > 4 ? std::stoi(argv[4]) : 3;
  data::Tokenizer tok = data::Tokenizer::load(argv[1]);
  std::vector<std::string> texts;
  size_t bytes = 0;
  for (const auto& row : nlohmann::json::parse(fs::read_file(argv[2])))
    for (const char* k : {"instruction", "input", "output"})
      if (row.contains(k) && row[k].is_string() && !row[k].get<std::string>().empty()) {
        texts.push_back(row[k]);
        bytes += texts.back().size();
      }
  auto now = [] { return std::chrono::steady_clock::now(); };
  // Single thread, fresh cache per repeat (the first pass is the realistic one: cold cache).
  double best1 = 1e30;
  size_t tokens = 0;
  for (int r = 0; r < repeats; ++r) {
    data::BpeCache cache;
    auto t0 = now();
    tokens = 0;
    for (const auto& t : texts) tokens += tok.encode(t, &cache).size();
    best1 = std::min(best1, std::chrono::duration<double>(now() - t0).count());
  }
  double bestn = 1e30;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = now();
    std::vector<std::thread> pool;
    for (unsigned w = 0; w < threads; ++w)
      pool.emplace_back([&, w] {
        data::BpeCache cache;
        for (size_t i = w; i < texts.size(); i += threads) tok.encode(texts[i], &cache);
      });
    for (auto& th : pool) th.join();
    bestn = std::min(bestn, std::chrono::duration<double>(now() - t0).count());
  }
  std::printf(
      "{\"impl\": \"zlora\", \"texts\": %zu, \"mb\": %.3f, \"tokens\": %zu, \"mb_per_s_1thread\": %.2f, "
      "\"threads\": %u, \"mb_per_s_all\": %.2f}\n",
      texts.size(), double(bytes) / 1e6, tokens, double(bytes) / 1e6 / best1, threads, double(bytes) / 1e6 / bestn);
  return 0;
}
