#include "zlora/train/step_graphs.h"

#include <torch/torch.h>

#include <map>
#include <tuple>
#include <vector>

#include "zlora/core/error.h"
#include "zlora/core/torch_compat.h"

#if ZLORA_HAS_CUDA_GRAPHS
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace zlora::train {
namespace {

int64_t round_up(int64_t n, int64_t g) { return (n + g - 1) / g * g; }

// A bucket's shape: padded tokens, real samples (the padding sample comes on top), padded loss rows.
using Key = std::tuple<int64_t, int64_t, int64_t>;

}  // namespace

struct StepGraphs::Bucket {
  Key key;
  model::DeviceBatch batch;  // the graph's inputs, refilled before each replay
  at::Tensor weight;         // 0-dim fp32: the loss weight of this call
  at::Tensor loss;           // 0-dim fp32: the loss sum the body wrote
  at::Tensor host_i64;       // staging (pinned on CUDA): ids | positions | rows | targets
  at::Tensor host_i32;       // cu_seqlens
  at::Tensor host_f32;       // row weights | loss weight
  uint64_t last_used = 0;
#if ZLORA_HAS_CUDA_GRAPHS
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  std::optional<at::cuda::CUDAEvent> copied;  // the staging buffers may be refilled once this completed
#endif
};

struct StepGraphs::Impl {
  const model::Decoder& decoder;
  model::ForwardOptions forward;
  at::Device device;
  StepGraphOptions options;
  bool capture = false;
  bool warmed = false;
  uint64_t clock = 0;
  std::map<Key, std::unique_ptr<Bucket>> buckets;
#if ZLORA_HAS_CUDA_GRAPHS
  std::optional<c10::cuda::CUDAStream> stream;  // the side stream every call runs (and captures) on
  at::cuda::MempoolId_t pool{0, 0};             // one memory pool shared by every bucket's graph
#endif

  Impl(const model::Decoder& d, model::ForwardOptions f, at::Device dev, StepGraphOptions o)
      : decoder(d), forward(std::move(f)), device(dev), options(o) {}

  std::unique_ptr<Bucket> make_bucket(const Key& key) const {
    auto b = std::make_unique<Bucket>();
    b->key = key;
    const auto [tokens, samples, rows] = key;
    const auto on = [&](at::ScalarType t) { return at::TensorOptions().dtype(t).device(device); };
    const auto host = [&](at::ScalarType t) { return at::TensorOptions().dtype(t).pinned_memory(device.is_cuda()); };
    b->batch.input_ids = at::zeros({tokens}, on(at::kLong));
    b->batch.position_ids = at::zeros({tokens}, on(at::kLong));
    b->batch.cu_seqlens = at::zeros({samples + 2}, on(at::kInt));
    b->batch.max_seqlen = std::max(options.max_seqlen, options.token_granularity);
    b->batch.rows = at::zeros({rows}, on(at::kLong));
    b->batch.targets = at::zeros({rows}, on(at::kLong));
    b->batch.row_weight = at::zeros({rows}, on(at::kFloat));
    b->weight = at::zeros({}, on(at::kFloat));
    b->loss = at::zeros({}, on(at::kFloat));
    b->host_i64 = at::empty({2 * tokens + 2 * rows}, host(at::kLong));
    b->host_i32 = at::empty({samples + 2}, host(at::kInt));
    b->host_f32 = at::empty({rows + 1}, host(at::kFloat));
    return b;
  }

  // Writes `batch` padded into the bucket's staging buffers and copies them to its device buffers
  // (asynchronously from pinned memory on CUDA).
  void fill(Bucket& b, const model::PackedBatch& batch, const std::vector<int64_t>& rows, double weight) {
#if ZLORA_HAS_CUDA_GRAPHS
    if (b.copied) b.copied->synchronize();  // the previous call's copies have left the staging buffers
#endif
    const auto [tokens, samples, nrows] = b.key;
    const int64_t T = batch.num_tokens(), R = static_cast<int64_t>(rows.size());
    int64_t* i64 = b.host_i64.data_ptr<int64_t>();
    int64_t *ids = i64, *pos = i64 + tokens, *row = i64 + 2 * tokens, *tgt = row + nrows;
    const int64_t* src_ids = batch.input_ids.data_ptr<int64_t>();
    const int64_t* src_pos = batch.position_ids.data_ptr<int64_t>();
    const int64_t* src_tgt = batch.targets.data_ptr<int64_t>();
    for (int64_t t = 0; t < T; ++t) ids[t] = src_ids[t], pos[t] = src_pos[t];
    for (int64_t t = T; t < tokens; ++t) ids[t] = 0, pos[t] = t - T;  // the padding sample
    float* f32 = b.host_f32.data_ptr<float>();
    for (int64_t r = 0; r < nrows; ++r) {
      const bool real = r < R;
      row[r] = real ? rows[static_cast<size_t>(r)] : 0;
      tgt[r] = real ? src_tgt[row[r]] : 0;
      f32[r] = real ? 1.0f : 0.0f;
    }
    f32[nrows] = static_cast<float>(weight);
    int32_t* cu = b.host_i32.data_ptr<int32_t>();
    for (int64_t s = 0; s <= samples; ++s) cu[s] = static_cast<int32_t>(batch.cu_seqlens[static_cast<size_t>(s)]);
    cu[samples + 1] = static_cast<int32_t>(tokens);
    b.batch.cu_seqlens_host.assign(batch.cu_seqlens.begin(), batch.cu_seqlens.end());
    b.batch.cu_seqlens_host.push_back(tokens);

    const bool async = device.is_cuda();
    b.batch.input_ids.copy_(b.host_i64.narrow(0, 0, tokens), async);
    b.batch.position_ids.copy_(b.host_i64.narrow(0, tokens, tokens), async);
    b.batch.rows.copy_(b.host_i64.narrow(0, 2 * tokens, nrows), async);
    b.batch.targets.copy_(b.host_i64.narrow(0, 2 * tokens + nrows, nrows), async);
    b.batch.cu_seqlens.copy_(b.host_i32, async);
    b.batch.row_weight.copy_(b.host_f32.narrow(0, 0, nrows), async);
    b.weight.copy_(b.host_f32[nrows], async);
#if ZLORA_HAS_CUDA_GRAPHS
    if (async) {
      if (!b.copied) b.copied.emplace();
      b.copied->record(*stream);
    }
#endif
  }

  // The work a graph holds: forward, weighted backward (autograd accumulates into the LoRA .grad views in
  // place), the loss sum written to the bucket's output.
  void body(Bucket& b) const {
    at::Tensor sum = decoder.loss_sum(b.batch, forward);
    torch::autograd::backward({sum * b.weight});
    b.loss.copy_(sum.detach());
  }

  Bucket& bucket_for(const Key& key, StepGraphStats& stats) {
    auto it = buckets.find(key);
    if (it == buckets.end()) {
      if (buckets.size() >= options.max_graphs) {
        auto lru = buckets.begin();
        for (auto i = buckets.begin(); i != buckets.end(); ++i)
          if (i->second->last_used < lru->second->last_used) lru = i;
        buckets.erase(lru);
        ++stats.evictions;
      }
      it = buckets.emplace(key, make_bucket(key)).first;
    }
    it->second->last_used = ++clock;
    return *it->second;
  }

  void execute(Bucket& b, StepGraphStats& stats) {
#if ZLORA_HAS_CUDA_GRAPHS
    if (capture && warmed) {
      if (!b.graph) {
        auto graph = std::make_unique<at::cuda::CUDAGraph>();
        if (forward.generator) graph->register_generator_state(*forward.generator);
        graph->capture_begin(pool);
        try {
          body(b);
        } catch (...) {
          try {
            graph->capture_end();
          } catch (...) {
          }
          throw;
        }
        graph->capture_end();
        b.graph = std::move(graph);
        ++stats.captures;
      }
      b.graph->replay();
      ++stats.replays;
      return;
    }
#endif
    body(b);
    warmed = true;
    ++stats.eager;
  }
};

StepGraphs::StepGraphs(const model::Decoder& decoder, model::ForwardOptions forward, at::Device device,
                       StepGraphOptions o)
    : impl_(std::make_unique<Impl>(decoder, std::move(forward), device, o)) {
  if (o.token_granularity < 1 || o.row_granularity < 1 || o.max_graphs < 1)
    fail("internal: step graph granularities and max_graphs must be >= 1");
  impl_->capture = o.capture && device.is_cuda();
  if (impl_->capture) {
    if (auto why = unsupported(impl_->forward, device, decoder.uses_flash(impl_->forward), 0))
      fail("cuda_graphs: {}", *why);
  }
#if ZLORA_HAS_CUDA_GRAPHS
  if (device.is_cuda()) {
    impl_->stream = c10::cuda::getStreamFromPool(false, device.index());
    impl_->pool = at::cuda::graph_pool_handle();
  }
#endif
}

StepGraphs::~StepGraphs() = default;

std::optional<std::string> StepGraphs::unsupported(const model::ForwardOptions& forward, const at::Device& device,
                                                   bool flash, int zero_stage) {
  if (!device.is_cuda()) return "CUDA graphs need a CUDA device";
  if (!compat::kHasCudaGraphs)
    return "this LibTorch cannot replay a dropout generator in a CUDA graph (needs a CUDA build, >= 2.5)";
  if (!flash)
    return "the math attention (flash_attn=disabled, or no flash kernel for this dtype) loops over samples on "
           "the host, which a graph would freeze";
  if (zero_stage == 3) return "ZeRO-3 gathers weights through collectives inside the forward and backward";
  if (forward.training && forward.neftune_alpha > 0) return "NEFTune sizes its noise per sample on the host";
  if (forward.gradient_checkpointing)
    return "gradient checkpointing saves and restores the dropout generator on the host during backward";
  return std::nullopt;
}

void StepGraphs::run(const model::PackedBatch& batch, double weight, at::Tensor& loss_acc) {
  Impl& m = *impl_;
  const int64_t T = batch.num_tokens(), S = batch.num_samples();
  if (T == 0) fail("internal: StepGraphs::run on an empty batch");
  if (batch.max_seqlen > m.options.max_seqlen)
    fail("internal: a sample of {} tokens exceeds the step graphs' max_seqlen {}", batch.max_seqlen,
         m.options.max_seqlen);
  // Host checks the eager forward makes too (an out-of-range id would be a device-side assert here).
  const int64_t vocab = m.decoder.config().vocab_size;
  const int64_t* ids = batch.input_ids.data_ptr<int64_t>();
  const int64_t* tgt = batch.targets.data_ptr<int64_t>();
  std::vector<int64_t> rows;
  for (int64_t t = 0; t < T; ++t) {
    if (ids[t] < 0 || ids[t] >= vocab) fail("decoder: token id {} is outside the vocabulary [0, {})", ids[t], vocab);
    if (tgt[t] == -100) continue;
    if (tgt[t] < 0 || tgt[t] >= vocab) fail("decoder: target id {} is outside the vocabulary [0, {})", tgt[t], vocab);
    rows.push_back(t);
  }
  const Key key{round_up(T + 1, m.options.token_granularity), S,
                round_up(std::max<int64_t>(int64_t(rows.size()), 1), m.options.row_granularity)};
  Bucket& b = m.bucket_for(key, stats_);
#if ZLORA_HAS_CUDA_GRAPHS
  if (m.stream) {
    // The caller's stream hands over to the side stream and back: work before this call (zeroed
    // gradients) happens first, work after it (the optimizer) sees its gradients and loss.
    const c10::cuda::CUDAStream caller = c10::cuda::getCurrentCUDAStream(m.device.index());
    at::cuda::CUDAEvent ready;
    ready.record(caller);
    ready.block(*m.stream);
    {
      c10::cuda::CUDAStreamGuard guard(*m.stream);
      m.fill(b, batch, rows, weight);
      m.execute(b, stats_);
    }
    at::cuda::CUDAEvent done;
    done.record(*m.stream);
    done.block(caller);
    loss_acc.add_(b.loss.to(at::kDouble));
    return;
  }
#endif
  m.fill(b, batch, rows, weight);
  m.execute(b, stats_);
  loss_acc.add_(b.loss.to(at::kDouble));
}

}  // namespace zlora::train
