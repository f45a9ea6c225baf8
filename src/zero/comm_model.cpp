#include "zlora/zero/comm_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

namespace zlora::zero {

using dist::CollectiveKind;

double CommModel::bytes_per_step() const {
  double b = 0;
  for (const CommModelLine& l : lines) b += l.bytes_per_step;
  return b;
}

std::string CommModel::describe() const {
  std::string out;
  for (const CommModelLine& l : lines)
    out += fmt::format("\n  {:<34} {:<14} {:>8g} x {:>10}  = {:>10} per step", l.what, dist::to_string(l.kind),
                       l.calls_per_step, dist::format_bytes(l.payload_bytes), dist::format_bytes(l.bytes_per_step));
  out += fmt::format("\n  total sent per rank per step: {}", dist::format_bytes(bytes_per_step()));
  if (bytes_once_per_run > 0)
    out += fmt::format("; once per run (the last backward's prefetch of the embeddings): {}",
                       dist::format_bytes(bytes_once_per_run));
  if (offload_bytes_per_step > 0)
    out += fmt::format("; optimizer offload copies (device <-> host, not network): {}",
                       dist::format_bytes(offload_bytes_per_step));
  return out;
}

double CommModel::mean_bytes_per_step(int64_t steps) const {
  return steps > 0 ? bytes_per_step() + bytes_once_per_run / double(steps) : 0.0;
}

int64_t zero3_gathers_per_micro_batch(int64_t units) { return units + std::max<int64_t>(units - 2, 0); }

CommModel model_step_traffic(const CommModelInput& in) {
  CommModel m;
  auto add = [&](std::string what, CollectiveKind kind, double payload, double calls) {
    m.lines.push_back({std::move(what), kind, payload, calls, calls * dist::ring_bytes_sent(kind, payload, in.world)});
  };
  const double lora_bytes = 4.0 * double(in.lora_padded_numel);
  if (in.stage <= 1)
    add("LoRA gradients (fp32)", CollectiveKind::kAllReduce, lora_bytes, 1);
  else
    add("LoRA gradients (fp32)", CollectiveKind::kReduceScatter, lora_bytes, 1);
  if (in.stage >= 1 && in.world > 1) add("gradient norm (fp64)", CollectiveKind::kAllReduce, 8, 1);
  if (in.stage >= 1) add("LoRA weights (fp32)", CollectiveKind::kAllGather, lora_bytes, 1);
  add("loss (fp64)", CollectiveKind::kAllReduce, 8, 1);
  if (in.stage == 3 && !in.zero3_unit_numel.empty()) {
    const int64_t units = static_cast<int64_t>(in.zero3_unit_numel.size());
    const double all_units =
        double(std::accumulate(in.zero3_unit_numel.begin(), in.zero3_unit_numel.end(), int64_t{0}));
    const double first = double(in.zero3_unit_numel.front()), last = double(in.zero3_unit_numel.back());
    // Forward: every unit. Backward: all but the first and the last (see zero3_gathers_per_micro_batch).
    const double per_micro_batch = all_units + (units > 2 ? all_units - first - last : 0.0);
    const double calls = double(zero3_gathers_per_micro_batch(units)) * double(in.micro_batches_per_step);
    // One line for the unit gathers: the payload column is the mean per gather.
    m.lines.push_back(
        {"ZeRO-3 base weights", CollectiveKind::kAllGather,
         double(in.zero3_elem_bytes) * per_micro_batch / double(zero3_gathers_per_micro_batch(units)), calls,
         dist::ring_bytes_sent(CollectiveKind::kAllGather, double(in.zero3_elem_bytes) * per_micro_batch, in.world) *
             double(in.micro_batches_per_step)});
    // Backward acquires units last to first, so its prefetch reaches the embeddings (unit 0) ahead of
    // the next forward, which then finds them gathered: no extra traffic, except after the run's last
    // backward.
    if (in.zero3_prefetch > 0 && units > 2)
      m.bytes_once_per_run =
          dist::ring_bytes_sent(CollectiveKind::kAllGather, double(in.zero3_elem_bytes) * first, in.world);
  }
  if (in.offload) {
    const double partition = in.stage == 0 ? double(in.lora_padded_numel) : double(in.lora_padded_numel) / in.world;
    m.offload_bytes_per_step = 2 * 4.0 * partition;
  }
  return m;
}

}  // namespace zlora::zero
