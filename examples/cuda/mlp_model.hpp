#pragma once
// A small real CUDA model for pipeweaver plans: every layer of every module is
// y = tanh(x W^T + b) per token (hidden width H, float32, kernels in mlp_kernels.cu). Encoder
// items start from deterministic features of (microbatch, sample, item); a backbone item (one
// sample) starts from deterministic text features of (microbatch, sample) plus the mean of the
// last encoder outputs of every item of that sample (the "projector"); the loss is
// scale * sum(y^2) / 2 over the backbone's last outputs.
//
// Callbacks enqueue their kernels on StageIO::queue (the rank's compute stream) and keep the
// executor's promises (stage_io.hpp): the output filled, the stash holding each layer's input
// and outputs, the gathered input's gradient scattered back per segment. reference_step runs
// the same math sequentially on one stream, from the plan's sub-microbatches, so pipelined
// gradients can be compared with it (equal up to the order of float sums).
//
// Parameters and gradients live on one device; with one rank per process (MPI) every process
// holds all of them and updates those of the layers its rank runs. Plain C++ over the CUDA
// runtime API (g++ compiles it); the kernels come from the pipeweaver_cuda_mlp library.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <tuple>
#include <string>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>

#include <pipeweaver/core/error.hpp>
#include <pipeweaver/cuda/check.hpp>
#include <pipeweaver/execute/stage_io.hpp>
#include <pipeweaver/ir/plan.hpp>
#include <pipeweaver/ir/stage.hpp>
#include <pipeweaver/model/model_spec.hpp>

#include "mlp_kernels.hpp"

namespace mlp_cuda {

namespace pw = pipeweaver;

inline void check(cudaError_t e, const char* what) { pw::cuda::check_cuda(e, what); }

/// Device memory freed with the owner.
class DeviceFloats {
 public:
  DeviceFloats() = default;
  explicit DeviceFloats(std::size_t n) : n_(n) {
    if (n > 0) check(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(float)), "cudaMalloc");
    if (n > 0) check(cudaMemset(p_, 0, n * sizeof(float)), "cudaMemset");
  }
  DeviceFloats(const DeviceFloats&) = delete;
  DeviceFloats& operator=(const DeviceFloats&) = delete;
  DeviceFloats(DeviceFloats&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceFloats& operator=(DeviceFloats&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~DeviceFloats() {
    if (p_ != nullptr) (void)cudaFree(p_);
  }
  [[nodiscard]] float* get() const noexcept { return p_; }
  [[nodiscard]] std::size_t size() const noexcept { return n_; }
  [[nodiscard]] std::vector<float> to_host() const {
    std::vector<float> h(n_);
    if (n_ > 0) check(cudaMemcpy(h.data(), p_, n_ * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy to host");
    return h;
  }

 private:
  float* p_ = nullptr;
  std::size_t n_ = 0;
};

/// Parameters and gradients of every layer of every module, on the current device.
class Model {
 public:
  Model(const pw::ModelSpec& spec, int hidden, std::uint32_t seed) : hidden_(hidden) {
    for (std::size_t m = 0; m < spec.modules.size(); ++m) {
      const auto role = spec.modules[m].role;
      if (role == pw::ModuleRole::generator)
        throw pw::input_error("module '" + spec.modules[m].name + "' is a generator",
                              {.path = "modules[" + std::to_string(m) + "]", .expected = "encoders and one backbone (the CUDA MLP model)"});
      if (role == pw::ModuleRole::backbone) backbone_ = static_cast<int>(m);
      first_.push_back(static_cast<int>(layer_count_));
      layer_count_ += static_cast<std::size_t>(spec.modules[m].layers);
      layers_.push_back(spec.modules[m].layers);
    }
    if (backbone_ < 0) throw pw::input_error("model '" + spec.name + "' has no backbone", {.path = "modules", .expected = "one backbone module"});
    const std::size_t per = per_layer();
    params_ = DeviceFloats(layer_count_ * per);
    grads_ = DeviceFloats(layer_count_ * per);
    std::vector<float> h(layer_count_ * per);
    std::uint32_t state = seed * 2654435761u + 12345u;
    const float s = 1.5f / static_cast<float>(hidden);
    for (std::size_t i = 0; i < h.size(); ++i) {
      state = state * 1664525u + 1013904223u;
      h[i] = s * (static_cast<float>(state >> 8) / 8388608.0f - 1.0f);
    }
    check(cudaMemcpy(params_.get(), h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy parameters");
  }

  [[nodiscard]] int hidden() const noexcept { return hidden_; }
  [[nodiscard]] int backbone() const noexcept { return backbone_; }
  [[nodiscard]] int layers(int module) const { return layers_.at(static_cast<std::size_t>(module)); }
  [[nodiscard]] bool is_encoder(int module) const noexcept { return module != backbone_; }
  [[nodiscard]] float* w(int module, int layer) const { return params_.get() + offset(module, layer); }
  [[nodiscard]] float* b(int module, int layer) const { return w(module, layer) + hidden_ * hidden_; }
  [[nodiscard]] float* dw(int module, int layer) const { return grads_.get() + offset(module, layer); }
  [[nodiscard]] float* db(int module, int layer) const { return dw(module, layer) + hidden_ * hidden_; }
  void zero_grad() { check(cudaMemset(grads_.get(), 0, grads_.size() * sizeof(float)), "cudaMemset gradients"); }
  [[nodiscard]] std::vector<float> gradients() const { return grads_.to_host(); }
  [[nodiscard]] std::vector<float> parameters() const { return params_.to_host(); }
  /// SGD on the layers of `module` from `first` (count layers), on stream s.
  void sgd(int module, int first, int count, float lr, void* s) {
    check(mlp_cuda::sgd(w(module, first), dw(module, first), static_cast<long long>(count) * static_cast<long long>(per_layer()), lr, s), "sgd");
  }

 private:
  [[nodiscard]] std::size_t per_layer() const noexcept { return static_cast<std::size_t>(hidden_ * hidden_ + hidden_); }
  [[nodiscard]] std::size_t offset(int module, int layer) const {
    return (static_cast<std::size_t>(first_.at(static_cast<std::size_t>(module))) + static_cast<std::size_t>(layer)) * per_layer();
  }
  int hidden_;
  int backbone_ = -1;
  std::size_t layer_count_ = 0;
  std::vector<int> first_, layers_;
  DeviceFloats params_, grads_;
};

/// Largest relative difference between two gradient vectors (|a - b| / max |a|).
inline double max_relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 0, diff = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    scale = std::max(scale, static_cast<double>(a[i] < 0 ? -a[i] : a[i]));
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    diff = std::max(diff, d < 0 ? -d : d);
  }
  if (a.size() != b.size()) return 1e300;
  return scale > 0 ? diff / scale : diff;
}

namespace detail {

/// Scratch of one rank's compute stream: two row buffers and one row.
struct Scratch {
  DeviceFloats a, b, row;
};

/// Forward of `layers` layers from x0 (rows x H) into stash slots 1..layers (slot 0 is x0).
inline void forward_layers(const Model& m, int module, int first, int layers, float* stash, int rows, void* s) {
  const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(m.hidden());
  for (int l = 0; l < layers; ++l)
    check(linear_tanh(stash + n * static_cast<std::size_t>(l), m.w(module, first + l), m.b(module, first + l), stash + n * static_cast<std::size_t>(l + 1), rows,
                      m.hidden(), s),
          "linear_tanh");
}

/// Backward through `layers` layers: gy in scratch.a on entry, the input's gradient there on
/// exit (when want_input); weight gradients accumulated when want_weight.
inline void backward_layers(Model& m, int module, int first, int layers, const float* stash, int rows, Scratch& k, bool want_input, bool want_weight,
                            void* s) {
  const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(m.hidden());
  for (int l = layers - 1; l >= 0; --l) {
    const float* x = stash + n * static_cast<std::size_t>(l);
    const float* y = stash + n * static_cast<std::size_t>(l + 1);
    check(tanh_grad(k.a.get(), y, k.b.get(), static_cast<long long>(n), s), "tanh_grad");
    if (want_weight) check(weight_grad(k.b.get(), x, m.dw(module, first + l), m.db(module, first + l), rows, m.hidden(), s), "weight_grad");
    if (l > 0 || want_input) check(input_grad(k.b.get(), m.w(module, first + l), k.a.get(), rows, m.hidden(), s), "input_grad");
  }
}

inline std::uint32_t u32(long long v) { return static_cast<std::uint32_t>(v); }

}  // namespace detail

/// The pipelined model's stage callbacks (one instance for all ranks of a process).
class Callbacks {
 public:
  /// `max_rows`: the most tokens of one stage call (scratch size); `ranks`: ranks of the plan.
  Callbacks(Model& model, int ranks, int max_rows, float loss_scale)
      : model_(&model), max_rows_(max_rows), loss_scale_(loss_scale), loss_(static_cast<std::size_t>(ranks)) {
    for (int r = 0; r < ranks; ++r) {
      const auto n = static_cast<std::size_t>(max_rows) * static_cast<std::size_t>(model.hidden());
      scratch_.push_back(detail::Scratch{DeviceFloats(n), DeviceFloats(n), DeviceFloats(static_cast<std::size_t>(model.hidden()))});
      loss_[static_cast<std::size_t>(r)] = DeviceFloats(1);
    }
  }

  /// Buffer sizes for ExecutorOptions::sizes: an item's output is tokens x H floats; the
  /// stash holds the input and every layer's output.
  [[nodiscard]] pw::BufferSizes sizes() const {
    pw::BufferSizes z;
    const int H = model_->hidden();
    z.item_output_bytes = [H](const pw::StageSpec&, const pw::SubMicrobatchSpec& smb, std::size_t item) {
      return static_cast<std::size_t>(smb.item_tokens()[item]) * static_cast<std::size_t>(H) * sizeof(float);
    };
    z.stash_bytes = [H](const pw::StageSpec& st, const pw::SubMicrobatchSpec& smb) {
      return static_cast<std::size_t>(smb.total_tokens()) * static_cast<std::size_t>(H) * sizeof(float) * static_cast<std::size_t>(st.layer_count() + 1);
    };
    return z;
  }

  void forward(const pw::StageSpec& st, const pw::SubMicrobatchSpec& smb, pw::StageIO& io);
  void backward(const pw::StageSpec& st, const pw::SubMicrobatchSpec& smb, pw::StageIO& io);

  /// The step's loss (sum over ranks; synchronizes the device).
  [[nodiscard]] double loss() const {
    double l = 0;
    for (const auto& d : loss_) l += static_cast<double>(d.to_host()[0]);
    return l;
  }
  void reset_loss() {
    for (auto& d : loss_) check(cudaMemset(d.get(), 0, sizeof(float)), "cudaMemset loss");
  }

 private:
  [[nodiscard]] int rows_of(const pw::SubMicrobatchSpec& smb) const {
    const auto rows = smb.total_tokens();
    if (rows > max_rows_)
      throw pw::input_error("a stage call of " + std::to_string(rows) + " tokens", {.expected = "at most max_rows = " + std::to_string(max_rows_) + " tokens"});
    return static_cast<int>(rows);
  }
  void first_input(const pw::StageSpec& st, const pw::SubMicrobatchSpec& smb, const pw::StageIO& io, float* x0, void* s);
  void scatter_input_grad(const pw::SubMicrobatchSpec& smb, pw::StageIO& io, detail::Scratch& k, void* s);

  Model* model_;
  int max_rows_;
  float loss_scale_;
  std::vector<detail::Scratch> scratch_;
  std::vector<DeviceFloats> loss_;
};

// x0 of a module's first chunk: encoder features per item, or backbone text features plus the
// mean of the sample's encoder outputs (the gathered segments of each item).
inline void Callbacks::first_input(const pw::StageSpec& st, const pw::SubMicrobatchSpec& smb, const pw::StageIO& io, float* x0, void* s) {
  const int H = model_->hidden();
  const auto mb = smb.microbatch().value();
  std::size_t row = 0;
  auto& k = scratch_[io.rank.index()];
  for (std::size_t i = 0; i < smb.item_tokens().size(); ++i) {
    const int rows = static_cast<int>(smb.item_tokens()[i]);
    const pw::ItemRef ref = smb.items()[i];
    float* xi = x0 + row * static_cast<std::size_t>(H);
    if (model_->is_encoder(st.module().value())) {
      check(gen(xi, rows, H, detail::u32(mb), detail::u32(ref.sample), detail::u32(1000 + 16 * ref.item + st.module().value()), s), "gen");
    } else {
      check(gen(xi, rows, H, detail::u32(mb), detail::u32(ref.sample), 7u, s), "gen");
      std::size_t feeder_rows = 0;
      for (const auto& seg : io.segments)
        if (seg.consumer_item == i) feeder_rows += seg.bytes / (sizeof(float) * static_cast<std::size_t>(H));
      if (feeder_rows > 0) {
        check(cudaMemsetAsync(k.row.get(), 0, static_cast<std::size_t>(H) * sizeof(float), static_cast<cudaStream_t>(s)), "cudaMemsetAsync");
        for (const auto& seg : io.segments) {
          if (seg.consumer_item != i) continue;
          const auto* src = reinterpret_cast<const float*>(io.input.data() + seg.offset);
          check(col_sum(src, static_cast<int>(seg.bytes / (sizeof(float) * static_cast<std::size_t>(H))), H, 1.0f / static_cast<float>(feeder_rows), k.row.get(), s),
                "col_sum");
        }
        check(add_row(xi, k.row.get(), rows, H, s), "add_row");
      }
    }
    row += static_cast<std::size_t>(rows);
  }
}

inline void Callbacks::forward(const pw::StageSpec& st, const pw::SubMicrobatchSpec& smb, pw::StageIO& io) {
  void* s = io.queue;
  const int H = model_->hidden();
  const int rows = rows_of(smb);
  const int module = st.module().value();
  const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(H);
  auto* stash = reinterpret_cast<float*>(io.stash.data());
  if (st.first_layer() == 0) first_input(st, smb, io, stash, s);
  else check(cudaMemcpyAsync(stash, io.input.data(), n * sizeof(float), cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(s)), "cudaMemcpyAsync input");
  detail::forward_layers(*model_, module, st.first_layer(), st.layer_count(), stash, rows, s);
  const float* y = stash + n * static_cast<std::size_t>(st.layer_count());
  if (!io.output.empty())
    check(cudaMemcpyAsync(io.output.data(), y, io.output.size(), cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(s)), "cudaMemcpyAsync output");
  const bool last = module == model_->backbone() && st.first_layer() + st.layer_count() == model_->layers(module);
  auto& k = scratch_[io.rank.index()];
  if (last) check(mlp_cuda::loss(y, static_cast<long long>(n), loss_scale_, k.a.get(), loss_[io.rank.index()].get(), s), "loss");
}

inline void Callbacks::scatter_input_grad(const pw::SubMicrobatchSpec& smb, pw::StageIO& io, detail::Scratch& k, void* s) {
  const int H = model_->hidden();
  std::size_t row = 0;
  for (std::size_t i = 0; i < smb.item_tokens().size(); ++i) {
    const int rows = static_cast<int>(smb.item_tokens()[i]);
    std::size_t feeder_rows = 0;
    for (const auto& seg : io.segments)
      if (seg.consumer_item == i) feeder_rows += seg.bytes / (sizeof(float) * static_cast<std::size_t>(H));
    if (feeder_rows > 0) {
      check(cudaMemsetAsync(k.row.get(), 0, static_cast<std::size_t>(H) * sizeof(float), static_cast<cudaStream_t>(s)), "cudaMemsetAsync");
      check(col_sum(k.a.get() + row * static_cast<std::size_t>(H), rows, H, 1.0f, k.row.get(), s), "col_sum");
      for (const auto& seg : io.segments) {
        if (seg.consumer_item != i) continue;
        auto* dst = reinterpret_cast<float*>(io.input_grad.data() + seg.offset);
        check(fill_rows(dst, k.row.get(), static_cast<int>(seg.bytes / (sizeof(float) * static_cast<std::size_t>(H))), H, 1.0f / static_cast<float>(feeder_rows), s),
              "fill_rows");
      }
    }
    row += static_cast<std::size_t>(rows);
  }
}

inline void Callbacks::backward(const pw::StageSpec& st, const pw::SubMicrobatchSpec& smb, pw::StageIO& io) {
  void* s = io.queue;
  const int H = model_->hidden();
  const int rows = rows_of(smb);
  const int module = st.module().value();
  const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(H);
  const auto* stash = reinterpret_cast<const float*>(io.stash.data());
  auto& k = scratch_[io.rank.index()];
  const bool last = module == model_->backbone() && st.first_layer() + st.layer_count() == model_->layers(module);
  const float* y = stash + n * static_cast<std::size_t>(st.layer_count());
  if (last) {  // gy = scale * y, without adding to the loss again: the forward did
    check(cudaMemsetAsync(k.row.get(), 0, sizeof(float), static_cast<cudaStream_t>(s)), "cudaMemsetAsync");
    check(mlp_cuda::loss(y, static_cast<long long>(n), loss_scale_, k.a.get(), k.row.get(), s), "loss gradient");
  } else {
    check(cudaMemcpyAsync(k.a.get(), io.output_grad.data(), n * sizeof(float), cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(s)), "cudaMemcpyAsync output_grad");
  }
  const bool want_input = st.pass() != pw::Pass::backward_weight && !io.input_grad.empty();
  const bool want_weight = st.pass() != pw::Pass::backward_input;
  detail::backward_layers(*model_, module, st.first_layer(), st.layer_count(), stash, rows, k, want_input, want_weight, s);
  if (!want_input) return;
  if (st.first_layer() == 0) scatter_input_grad(smb, io, k, s);
  else check(cudaMemcpyAsync(io.input_grad.data(), k.a.get(), n * sizeof(float), cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(s)), "cudaMemcpyAsync input_grad");
}

/// The same math as the pipelined callbacks, sequentially on one stream: per microbatch, every
/// encoder item forward, every backbone item forward, loss and backward, the encoder items
/// backward. Returns the loss (synchronizes the stream).
inline double reference_step(Model& m, const pw::Plan& plan, float loss_scale, void* s) {
  const int H = m.hidden();
  const auto hs = static_cast<std::size_t>(H);
  struct EncItem {
    int module, mb, sample, item, rows;
    DeviceFloats stash, grad;
  };
  DeviceFloats loss_sum(1), row(hs);
  for (int mb = 0; mb < plan.microbatches; ++mb) {
    std::vector<EncItem> enc;
    for (const auto& smb : plan.sub_microbatches) {
      if (smb.microbatch().value() != mb || !m.is_encoder(smb.module().value())) continue;
      for (std::size_t i = 0; i < smb.item_tokens().size(); ++i) {
        const int mod = smb.module().value();
        const int rows = static_cast<int>(smb.item_tokens()[i]);
        const auto ref = smb.items()[i];
        EncItem e{mod, mb, ref.sample, ref.item, rows, DeviceFloats(static_cast<std::size_t>(rows) * hs * static_cast<std::size_t>(m.layers(mod) + 1)),
                  DeviceFloats(static_cast<std::size_t>(rows) * hs)};
        check(gen(e.stash.get(), rows, H, detail::u32(mb), detail::u32(ref.sample), detail::u32(1000 + 16 * ref.item + mod), s), "gen");
        detail::forward_layers(m, mod, 0, m.layers(mod), e.stash.get(), rows, s);
        enc.push_back(std::move(e));
      }
    }
    // Encoder items of a sample in (module, sample, item) order, as the executor gathers them.
    std::sort(enc.begin(), enc.end(), [](const EncItem& a, const EncItem& b) {
      return std::tie(a.sample, a.module, a.item) < std::tie(b.sample, b.module, b.item);
    });
    const int bb = m.backbone();
    for (const auto& smb : plan.sub_microbatches) {
      if (smb.microbatch().value() != mb || smb.module().value() != bb) continue;
      for (std::size_t i = 0; i < smb.item_tokens().size(); ++i) {
        const int rows = static_cast<int>(smb.item_tokens()[i]);
        const auto n = static_cast<std::size_t>(rows) * hs;
        const auto ref = smb.items()[i];
        DeviceFloats stash(n * static_cast<std::size_t>(m.layers(bb) + 1));
        detail::Scratch k{DeviceFloats(n), DeviceFloats(n), DeviceFloats(hs)};
        check(gen(stash.get(), rows, H, detail::u32(mb), detail::u32(ref.sample), 7u, s), "gen");
        std::size_t feeder_rows = 0;
        for (const auto& e : enc)
          if (e.sample == ref.sample) feeder_rows += static_cast<std::size_t>(e.rows);
        if (feeder_rows > 0) {
          check(cudaMemsetAsync(row.get(), 0, hs * sizeof(float), static_cast<cudaStream_t>(s)), "cudaMemsetAsync");
          for (const auto& e : enc)
            if (e.sample == ref.sample)
              check(col_sum(e.stash.get() + static_cast<std::size_t>(e.rows) * hs * static_cast<std::size_t>(m.layers(e.module)), e.rows, H,
                            1.0f / static_cast<float>(feeder_rows), row.get(), s),
                    "col_sum");
          check(add_row(stash.get(), row.get(), rows, H, s), "add_row");
        }
        detail::forward_layers(m, bb, 0, m.layers(bb), stash.get(), rows, s);
        check(loss(stash.get() + n * static_cast<std::size_t>(m.layers(bb)), static_cast<long long>(n), loss_scale, k.a.get(), loss_sum.get(), s), "loss");
        detail::backward_layers(m, bb, 0, m.layers(bb), stash.get(), rows, k, feeder_rows > 0, true, s);
        if (feeder_rows == 0) continue;
        check(cudaMemsetAsync(k.row.get(), 0, hs * sizeof(float), static_cast<cudaStream_t>(s)), "cudaMemsetAsync");
        check(col_sum(k.a.get(), rows, H, 1.0f, k.row.get(), s), "col_sum");
        for (auto& e : enc)
          if (e.sample == ref.sample) check(fill_rows(e.grad.get(), k.row.get(), e.rows, H, 1.0f / static_cast<float>(feeder_rows), s), "fill_rows");
      }
    }
    for (auto& e : enc) {
      const auto n = static_cast<std::size_t>(e.rows) * hs;
      detail::Scratch k{DeviceFloats(n), DeviceFloats(n), DeviceFloats(hs)};
      check(cudaMemcpyAsync(k.a.get(), e.grad.get(), n * sizeof(float), cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(s)), "cudaMemcpyAsync");
      detail::backward_layers(m, e.module, 0, m.layers(e.module), e.stash.get(), e.rows, k, false, true, s);
      check(cudaStreamSynchronize(static_cast<cudaStream_t>(s)), "cudaStreamSynchronize");  // before the scratch goes
    }
    check(cudaStreamSynchronize(static_cast<cudaStream_t>(s)), "cudaStreamSynchronize");
  }
  return static_cast<double>(loss_sum.to_host()[0]);
}

}  // namespace mlp_cuda
