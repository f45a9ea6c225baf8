// Tokenizer throughput on huanhuan.json text: MB/s of UTF-8 input, one thread encoding sample by sample
// (as `zlora prepare` does per rank), then all cores with one cache per thread. Prints one JSON line.
//   usage: bench_tokenizer TOKENIZER_DIR_OR_JSON DATA.json [THREADS] [REPEATS]
#include "zlora/core/fs.h"
#include "zlora/data/tokenizer.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
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
  // CPU time of this thread: on a shared machine wall time also counts the time other jobs held the
  // core, so mb_per_s_1thread_cpu is the steadier figure for comparing two builds there.
  auto cpu_now = [] {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  };
  // Single thread, fresh cache per repeat (the first pass is the realistic one: cold cache).
  // ids_fnv1a: FNV-1a over every id in order, so two builds can be checked for identical output.
  double best1 = 1e30, best1_cpu = 1e30;
  size_t tokens = 0;
  uint64_t fnv = 0;
  for (int r = 0; r < repeats; ++r) {
    data::BpeCache cache;
    auto t0 = now();
    double c0 = cpu_now();
    tokens = 0;
    fnv = 14695981039346656037ull;
    for (const auto& t : texts) {
      std::vector<int32_t> ids = tok.encode(t, &cache);
      tokens += ids.size();
      for (int32_t id : ids) fnv = (fnv ^ uint32_t(id)) * 1099511628211ull;
    }
    best1 = std::min(best1, std::chrono::duration<double>(now() - t0).count());
    best1_cpu = std::min(best1_cpu, cpu_now() - c0);
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
      "\"mb_per_s_1thread_cpu\": %.2f, "
      "\"threads\": %u, \"mb_per_s_all\": %.2f, \"ids_fnv1a\": \"%016llx\"}\n",
      texts.size(), double(bytes) / 1e6, tokens, double(bytes) / 1e6 / best1, double(bytes) / 1e6 / best1_cpu, threads,
      double(bytes) / 1e6 / bestn, static_cast<unsigned long long>(fnv));
  return 0;
}
