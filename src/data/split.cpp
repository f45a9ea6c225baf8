#include "zlora/data/split.h"

#include "zlora/core/error.h"

#include <cmath>
#include <numeric>

namespace zlora::data {

namespace {

using u128 = unsigned __int128;

// numpy.random.SeedSequence(seed) with the default pool of 4 words (bit_generator.pyx).
class SeedSequence {
 public:
  explicit SeedSequence(uint64_t seed) {
    // The entropy as little-endian 32-bit words; 0 is one word.
    std::vector<uint32_t> entropy;
    do {
      entropy.push_back(static_cast<uint32_t>(seed));
      seed >>= 32;
    } while (seed != 0);
    uint32_t hash_const = kInitA;
    auto hashmix = [&hash_const](uint32_t v) {
      v ^= hash_const;
      hash_const *= kMultA;
      v *= hash_const;
      return v ^ (v >> kXShift);
    };
    auto mix = [](uint32_t x, uint32_t y) {
      uint32_t r = kMixMultL * x - kMixMultR * y;
      return r ^ (r >> kXShift);
    };
    for (size_t i = 0; i < kPool; ++i) pool_[i] = hashmix(i < entropy.size() ? entropy[i] : 0);
    for (size_t src = 0; src < kPool; ++src)
      for (size_t dst = 0; dst < kPool; ++dst)
        if (src != dst) pool_[dst] = mix(pool_[dst], hashmix(pool_[src]));
    for (size_t src = kPool; src < entropy.size(); ++src)
      for (size_t dst = 0; dst < kPool; ++dst) pool_[dst] = mix(pool_[dst], hashmix(entropy[src]));
  }

  // generate_state(n, np.uint64): 2n 32-bit words, paired little-endian.
  std::vector<uint64_t> generate_state64(size_t n) const {
    uint32_t hash_const = kInitB;
    std::vector<uint64_t> out(n, 0);
    for (size_t i = 0; i < 2 * n; ++i) {
      uint32_t v = pool_[i % kPool];
      v ^= hash_const;
      hash_const *= kMultB;
      v *= hash_const;
      v ^= v >> kXShift;
      out[i / 2] |= static_cast<uint64_t>(v) << (32 * (i % 2));
    }
    return out;
  }

 private:
  static constexpr size_t kPool = 4;
  static constexpr uint32_t kInitA = 0x43b0d7e5, kMultA = 0x931e8875, kInitB = 0x8b51f9dd, kMultB = 0x58f38ded;
  static constexpr uint32_t kMixMultL = 0xca01f9dd, kMixMultR = 0x4973f715, kXShift = 16;
  uint32_t pool_[kPool] = {};
};

// numpy's PCG64 (pcg64.h: 128-bit LCG, XSL-RR output) with its buffered 32-bit draws.
class Pcg64 {
 public:
  explicit Pcg64(uint64_t seed) {
    const std::vector<uint64_t> v = SeedSequence(seed).generate_state64(4);
    const u128 initstate = (static_cast<u128>(v[0]) << 64) | v[1];
    const u128 initseq = (static_cast<u128>(v[2]) << 64) | v[3];
    inc_ = (initseq << 1) | 1;  // pcg_setseq_128_srandom_r
    state_ = 0;
    step();
    state_ += initstate;
    step();
  }
  uint64_t next64() {
    step();
    const uint64_t x = static_cast<uint64_t>(state_ >> 64) ^ static_cast<uint64_t>(state_);
    const unsigned rot = static_cast<unsigned>(state_ >> 122);
    return (x >> rot) | (x << ((64 - rot) & 63));
  }
  uint32_t next32() {
    if (has_u32_) {
      has_u32_ = false;
      return u32_;
    }
    const uint64_t n = next64();
    has_u32_ = true;
    u32_ = static_cast<uint32_t>(n >> 32);
    return static_cast<uint32_t>(n);
  }
  double next_double() { return static_cast<double>(next64() >> 11) * (1.0 / 9007199254740992.0); }

  // distributions.c::random_interval: uniform in [0, max] by masked rejection.
  uint64_t interval(uint64_t max) {
    if (max == 0) return 0;
    uint64_t mask = max;
    for (int s = 1; s <= 32; s *= 2) mask |= mask >> s;
    uint64_t value;
    if (max <= 0xffffffffull) {
      while ((value = (next32() & mask)) > max) {
      }
    } else {
      while ((value = (next64() & mask)) > max) {
      }
    }
    return value;
  }

 private:
  void step() { state_ = state_ * kMult + inc_; }
  static constexpr u128 kMult = (static_cast<u128>(2549297995355413924ull) << 64) | 4865540595714422341ull;
  u128 state_ = 0, inc_ = 0;
  bool has_u32_ = false;
  uint32_t u32_ = 0;
};

}  // namespace

std::vector<int64_t> numpy_permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> p(static_cast<size_t>(std::max<int64_t>(n, 0)));
  std::iota(p.begin(), p.end(), 0);
  Pcg64 g(seed);
  // _generator.pyx::shuffle -> _shuffle_raw: for i in reversed(range(1, n)): j = random_interval(i).
  for (int64_t i = n - 1; i >= 1; --i) std::swap(p[i], p[g.interval(static_cast<uint64_t>(i))]);
  return p;
}

std::vector<double> numpy_random(int64_t n, uint64_t seed) {
  Pcg64 g(seed);
  std::vector<double> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(g.next_double());
  return out;
}

TrainTestSplit train_test_split(int64_t num_samples, double val_size, uint64_t seed) {
  ZLORA_REQUIRE(val_size > 0 && std::isfinite(val_size), "val_size {} must be above 0", val_size);
  // LLaMA-Factory: int(val_size) if val_size > 1 else val_size; datasets: ceil(test_size * n) for a float.
  const int64_t n_test = val_size > 1 ? static_cast<int64_t>(val_size)
                                      : static_cast<int64_t>(std::ceil(val_size * static_cast<double>(num_samples)));
  if (n_test >= num_samples)
    fail(
        "val_size {} holds out {} of the {} samples, leaving none to train on; use a fraction below 1 or a count "
        "below {}",
        val_size, n_test, num_samples, num_samples);
  const std::vector<int64_t> p = numpy_permutation(num_samples, seed);
  TrainTestSplit s;
  s.test.assign(p.begin(), p.begin() + n_test);
  s.train.assign(p.begin() + n_test, p.end());
  return s;
}

}  // namespace zlora::data
