// fp16 loss scaling. (1) LossScaler's state machine against DeepSpeed's DynamicLossScaler semantics,
// traced by hand: window doubling, hysteresis (not consecutive by default), the min-scale floor and its
// error, static scales, checkpoint round trips. (2) ZeroOptimizer::step_scaled at every stage (run at
// np 1 and 2): a power-of-two loss scale divides out exactly, so it gives bit for bit the weights of
// unscaled step(); inf/NaN injected into ONE rank's gradients skips the step on EVERY rank (weights,
// moments and AdamW step count unchanged) and the scaler halves; training then continues exactly as if
// the bad step had never happened. LibTorch 1.13 has no float16 matmul on the CPU, so an end-to-end
// fp16 run cannot be tested here; the overflow is injected at the optimizer instead.
#include "dist/mpi_test_main.h"
#include "zlora/core/error.h"
#include "zlora/dist/mpi_communicator.h"
#include "zlora/zero/loss_scaler.h"
#include "zlora/zero/zero_optimizer.h"

#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

using zlora::test::test_mpi;
namespace zero = zlora::zero;

namespace {

zero::LossScalerOptions dynamic(int64_t power, int64_t window, int64_t hysteresis, double min_scale = 1) {
  zero::LossScalerOptions o;
  o.initial_scale_power = power;
  o.scale_window = window;
  o.hysteresis = hysteresis;
  o.min_scale = min_scale;
  return o;
}

// Feeds `pattern` ('o' overflow, '.' good step) and returns the scale after each update.
std::vector<double> trace(zero::LossScaler& s, const std::string& pattern) {
  std::vector<double> out;
  for (char ch : pattern) out.push_back(s.update(ch == 'o').new_scale);
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const zlora::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(LossScaler, StartsAtTwoToTheInitialPowerAndDoublesEveryWindow) {
  zero::LossScaler s(dynamic(4, 3, 2));
  EXPECT_TRUE(s.dynamic());
  EXPECT_EQ(s.scale(), 16);
  // DeepSpeed: (iter - last_overflow_iter) % window == 0 with last_overflow_iter = -1, so the scale
  // doubles at iters 2, 5, 8: after every 3 good steps.
  EXPECT_EQ(trace(s, "........."), (std::vector<double>{16, 16, 32, 32, 32, 64, 64, 64, 128}));
  EXPECT_EQ(s.state().iter, 9);
  EXPECT_EQ(s.state().last_overflow_iter, -1);
}

TEST(LossScaler, HysteresisDelaysTheHalvingAndIsRestoredOnlyByADoubling) {
  zero::LossScaler s(dynamic(10, 4, 2));
  // The first overflow only uses up hysteresis; the second, even after good steps in between
  // (DeepSpeed's consecutive_hysteresis=false), halves; with none left, the next halves at once.
  zero::LossScaleUpdate u = s.update(true);
  EXPECT_TRUE(u.overflow);
  EXPECT_EQ(u.new_scale, 1024);
  EXPECT_EQ(u.hysteresis_left, 0);
  EXPECT_NE(u.describe().find("stays 1024"), std::string::npos) << u.describe();
  EXPECT_EQ(trace(s, ".."), (std::vector<double>{1024, 1024}));
  u = s.update(true);
  EXPECT_EQ(u.old_scale, 1024);
  EXPECT_EQ(u.new_scale, 512);
  EXPECT_EQ(u.describe(), "loss scale 1024 -> 512");
  EXPECT_EQ(trace(s, "o"), (std::vector<double>{256}));
  // Four good steps after the last overflow (iter 4): doubles at iter 8 and restores the hysteresis.
  EXPECT_EQ(trace(s, "...."), (std::vector<double>{256, 256, 256, 512}));
  EXPECT_EQ(s.state().hysteresis, 2);
  EXPECT_EQ(trace(s, "oo"), (std::vector<double>{512, 256}));
}

TEST(LossScaler, ConsecutiveHysteresisIsRestoredByEveryGoodStep) {
  zero::LossScalerOptions o = dynamic(10, 100, 2);
  o.consecutive_hysteresis = true;
  zero::LossScaler s(o);
  EXPECT_EQ(trace(s, "o.o.o.oo"), (std::vector<double>{1024, 1024, 1024, 1024, 1024, 1024, 1024, 512}));
}

TEST(LossScaler, HalvingStopsAtMinScaleAndAnOverflowThereIsAnError) {
  zero::LossScaler s(dynamic(3, 1000, 1, 3));
  EXPECT_EQ(trace(s, "o"), (std::vector<double>{4}));
  EXPECT_EQ(trace(s, "o"), (std::vector<double>{3}));  // max(4 / 2, 3)
  const std::string msg = error_of([&] { s.update(true); });
  EXPECT_NE(msg.find("min_loss_scale 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bf16"), std::string::npos) << msg;
  // With hysteresis left, an overflow at the floor only uses it up.
  zero::LossScaler h(dynamic(0, 1000, 2, 1));
  EXPECT_EQ(trace(h, "o"), (std::vector<double>{1}));
  EXPECT_NE(error_of([&] { h.update(true); }), "");
}

TEST(LossScaler, StaticScaleNeverChanges) {
  zero::LossScalerOptions o;
  o.static_scale = 128;
  zero::LossScaler s(o);
  EXPECT_FALSE(s.dynamic());
  EXPECT_EQ(trace(s, "ooo....o"), std::vector<double>(8, 128));
  EXPECT_NE(s.update(true).describe().find("static"), std::string::npos);
}

TEST(LossScaler, StateRoundTripContinuesIdentically) {
  const zero::LossScalerOptions o = dynamic(12, 3, 2, 2);
  const std::string pattern = "o..o.o...o....oo.o......o";
  zero::LossScaler whole(o);
  const std::vector<double> want = trace(whole, pattern);
  for (size_t cut = 0; cut <= pattern.size(); ++cut) {
    zero::LossScaler first(o);
    std::vector<double> got = trace(first, pattern.substr(0, cut));
    zero::LossScaler resumed(o);
    resumed.set_state(first.state());
    for (double v : trace(resumed, pattern.substr(cut))) got.push_back(v);
    EXPECT_EQ(got, want) << "cut at " << cut;
  }
  EXPECT_EQ(whole.state().scale, want.back());
}

TEST(LossScaler, BadOptionsAndStatesAreClearErrors) {
  EXPECT_NE(error_of([] { zero::LossScaler s(dynamic(16, 0, 2)); }).find("loss_scale_window"), std::string::npos);
  EXPECT_NE(error_of([] { zero::LossScaler s(dynamic(16, 10, 0)); }).find("hysteresis"), std::string::npos);
  EXPECT_NE(error_of([] { zero::LossScaler s(dynamic(16, 10, 2, 0)); }).find("min_loss_scale"), std::string::npos);
  EXPECT_NE(error_of([] { zero::LossScaler s(dynamic(2, 10, 2, 8)); }).find("below min_loss_scale"), std::string::npos);
  EXPECT_NE(error_of([] { zero::LossScaler s(dynamic(70, 10, 2)); }).find("initial_scale_power"), std::string::npos);
  zero::LossScaler s(dynamic(16, 10, 2));
  zero::LossScalerState bad;
  bad.scale = -1;
  EXPECT_NE(error_of([&] { s.set_state(bad); }).find("scale"), std::string::npos);
}

// ---- the optimizer under MPI ----

namespace {

const std::vector<std::vector<int64_t>> kShapes = {{3, 11}, {17, 3}, {3, 17}, {7, 3}};

zero::NamedTensors make_params() {
  at::manual_seed(7);
  zero::NamedTensors out;
  for (size_t i = 0; i < kShapes.size(); ++i)
    out.emplace_back("p" + std::to_string(i), (at::randn(kShapes[i]) * 0.3).set_requires_grad(true));
  return out;
}

// This rank's gradient for `step`, times `scale` (a power of two: exact in fp32).
void set_grads(const zero::NamedTensors& params, int step, int rank, double scale) {
  at::NoGradGuard no_grad;
  at::manual_seed(1000 + 10 * step + rank);
  for (const auto& [name, p] : params) p.grad().copy_(at::randn(p.sizes()) * 0.05 * scale);
}

bool bit_equal(const zero::NamedTensors& a, const zero::NamedTensors& b) {
  for (size_t i = 0; i < a.size(); ++i)
    if (!at::equal(a[i].second.detach(), b[i].second.detach())) return false;
  return true;
}

zero::NamedTensors snapshot(const zero::NamedTensors& params) {
  zero::NamedTensors out;
  for (const auto& [n, p] : params) out.emplace_back(n, p.detach().clone());
  return out;
}

bool state_equal(const zero::OptimizerState& a, const zero::OptimizerState& b) {
  if (a.step != b.step || a.slices.size() != b.slices.size()) return false;
  for (size_t i = 0; i < a.slices.size(); ++i)
    if (!at::equal(a.slices[i].master, b.slices[i].master) || !at::equal(a.slices[i].exp_avg, b.slices[i].exp_avg) ||
        !at::equal(a.slices[i].exp_avg_sq, b.slices[i].exp_avg_sq))
      return false;
  return true;
}

// Every rank's value, gathered (to check that all ranks agree).
std::vector<double> all_values(double v) {
  std::vector<double> out(static_cast<size_t>(test_mpi().size()));
  MPI_Allgather(&v, 1, MPI_DOUBLE, out.data(), 1, MPI_DOUBLE, test_mpi().world());
  return out;
}

}  // namespace

TEST(ZeroLossScaling, ScaledStepsMatchUnscaledAndOverflowOnOneRankSkipsEverywhere) {
  zlora::dist::MpiCommunicator comm(test_mpi(), test_mpi().world(), 120);
  const int world = comm.size(), rank = comm.rank();
  struct Cfg {
    int stage;
    bool offload;
  };
  for (Cfg cfg : {Cfg{0, false}, Cfg{1, false}, Cfg{2, false}, Cfg{3, false}, Cfg{1, true}, Cfg{2, true}}) {
    for (double bad : {std::numeric_limits<double>::infinity(), std::nan("")}) {
      SCOPED_TRACE("stage " + std::to_string(cfg.stage) + (cfg.offload ? " offload" : "") +
                   (std::isnan(bad) ? " NaN" : " inf"));
      zero::ZeroOptions zo;
      zo.stage = cfg.stage;
      zo.offload = cfg.offload;
      zo.alignment = 1;
      zo.max_grad_norm = 0.1;  // clips: the loss scale and the clipping coefficient share one multiply
      zero::NamedTensors ref_params = make_params(), params = make_params();
      zero::ZeroOptimizer ref(ref_params, comm, zo), opt(params, comm, zo);
      zero::LossScaler scaler(dynamic(16, 1000, 1));
      // Steps 0..5 of the reference (unscaled, no overflow); the fp16 run sees the same gradients times
      // its loss scale, plus one poisoned step (between gradient steps 2 and 3) on the last rank only.
      int g = 0;
      for (int call = 0; call < 7; ++call) {
        const bool poison = call == 3;
        const double s = scaler.scale();
        opt.zero_grad();
        set_grads(params, poison ? 99 : g, rank, s);
        if (poison && rank == world - 1) {
          at::NoGradGuard no_grad;
          // Element 0 lies in rank 0's partition: under ZeRO-2 only the norm's all-reduce tells rank 0.
          params[0].second.grad().view({-1})[0] = bad;
        }
        const zero::NamedTensors before = snapshot(params);
        const zero::OptimizerState state_before = opt.export_state();
        const zero::ZeroOptimizer::StepResult r = opt.step_scaled(1e-2, s);
        const zero::LossScaleUpdate u = scaler.update(r.overflow);
        for (double v : all_values(r.overflow ? 1 : 0)) EXPECT_EQ(v, poison ? 1 : 0) << "call " << call;
        for (double v : all_values(scaler.scale())) EXPECT_EQ(v, scaler.scale());
        if (poison) {
          EXPECT_FALSE(std::isfinite(r.grad_norm));
          EXPECT_TRUE(bit_equal(params, before)) << "an overflowed step changed the weights";
          EXPECT_TRUE(state_equal(opt.export_state(), state_before)) << "an overflowed step changed AdamW's state";
          EXPECT_EQ(u.new_scale, s / 2);
          continue;
        }
        ref.zero_grad();
        set_grads(ref_params, g, rank, 1.0);
        const double ref_norm = ref.step(1e-2);
        ++g;
        EXPECT_EQ(r.grad_norm, ref_norm) << "call " << call << ": the norm must be the unscaled one";
        EXPECT_TRUE(bit_equal(params, ref_params)) << "call " << call;
      }
      EXPECT_EQ(opt.step_count(), 6);
      EXPECT_EQ(ref.step_count(), 6);
      EXPECT_EQ(scaler.scale(), 32768);
      EXPECT_TRUE(state_equal(opt.export_state(), ref.export_state()));

      // Without loss scaling (bf16/fp32), a non-finite gradient stays an error, on every rank.
      ref.zero_grad();
      set_grads(ref_params, g, rank, 1.0);
      if (rank == world - 1) {
        at::NoGradGuard no_grad;
        ref_params[0].second.grad().view({-1})[0] = bad;
      }
      const std::string msg = error_of([&] { ref.step(1e-2); });
      EXPECT_NE(msg.find("global gradient norm"), std::string::npos) << msg;
    }
  }
}
