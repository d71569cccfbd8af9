#pragma once
// Stage callbacks that check the executor's promises (execute/stage_io.hpp) instead of doing
// math: every buffer item carries a tag saying which stage wrote it for which item, so a
// wrong route, order, size or a pool buffer overwritten too early shows up as a mismatch.
// A mismatch throws std::runtime_error describing it.
#include <cstddef>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <pipeweaver/data/batch.hpp>
#include <pipeweaver/execute/stage_io.hpp>
#include <pipeweaver/model/model_spec.hpp>
#include <pipeweaver/ir/stage.hpp>

namespace pattern {

namespace pw = pipeweaver;

inline constexpr std::size_t item_floats = 5;  // [tag, microbatch, sample, item, extra]

class Callbacks {
 public:
  Callbacks(const pw::ModelSpec& model, const pw::Batch& batch, int ranks)
      : model_(&model), batch_(&batch), calls_(static_cast<std::size_t>(ranks), 0) {}

  /// 5 floats per item of every forward output, none for the backbone's last chunk (the loss).
  [[nodiscard]] pw::BufferSizes sizes() const {
    pw::BufferSizes s;
    const pw::ModelSpec* m = model_;
    s.item_output_bytes = [m](const pw::StageSpec& st, const pw::SubMicrobatchSpec&, std::size_t) -> std::size_t {
      const bool last = st.first_layer() + st.layer_count() == m->module(st.module()).layers;
      return last && st.module() == m->backbone() ? 0 : item_floats * sizeof(float);
    };
    s.stash_bytes = [](const pw::StageSpec&, const pw::SubMicrobatchSpec&) -> std::size_t { return 2 * sizeof(float); };
    return s;
  }

  void forward(const pw::StageSpec& st, const pw::SubMicrobatchSpec& smb, pw::StageIO& io) {
    ++calls_[io.rank.index()];
    expect(io.output_grad.empty() && io.input_grad.empty(), "forward got gradient buffers");
    const auto items = smb.items();
    const int c = st.chunk();
    const float mb = static_cast<float>(smb.microbatch().value());
    put(io.stash, 0, {static_cast<float>(st.module().value()) * 1000 + static_cast<float>(smb.item_tokens().size()), static_cast<float>(c)});
    if (c > 0) {
      expect(io.input.size() == items.size() * item_floats * sizeof(float), "input size");
      for (std::size_t k = 0; k < items.size(); ++k) check(io.input, k, {1, mb, f(items[k].sample), f(items[k].item), f(c - 1)}, 5, "forward input");
    } else if (!model_->feeders(st.module()).empty()) {
      check_segments(st, smb, io);
      for (const auto& sg : io.segments)
        check(io.input, sg.offset / (item_floats * sizeof(float)),
              {1, mb, f(sg.origin.sample), f(sg.origin.item), f(last_chunk_)}, 5, "gathered input");
    } else {
      expect(io.input.empty(), "first chunk of an unfed module has an input");
    }
    if (io.output.empty()) return;
    expect(io.output.size() == items.size() * item_floats * sizeof(float), "output size");
    for (std::size_t k = 0; k < items.size(); ++k) put(io.output, k * item_floats, {1, mb, f(items[k].sample), f(items[k].item), f(c)});
  }

  void backward(const pw::StageSpec& st, const pw::SubMicrobatchSpec& smb, pw::StageIO& io) {
    ++calls_[io.rank.index()];
    expect(io.output.empty(), "backward got an output buffer");
    const auto items = smb.items();
    const int c = st.chunk();
    const float mb = static_cast<float>(smb.microbatch().value());
    check(io.stash, 0, {static_cast<float>(st.module().value()) * 1000 + static_cast<float>(smb.item_tokens().size()), static_cast<float>(c)}, 2, "stash");
    const bool last = st.first_layer() + st.layer_count() == model_->module(st.module()).layers;
    if (!last) {
      for (std::size_t k = 0; k < items.size(); ++k) check(io.output_grad, k, {2, mb, f(items[k].sample), f(items[k].item), f(c + 1)}, 5, "output gradient");
    } else if (model_->module(st.module()).feeds) {
      for (std::size_t k = 0; k < items.size(); ++k) check(io.output_grad, k, {3, mb, f(items[k].sample), f(items[k].item)}, 4, "scattered gradient");
    } else {
      expect(io.output_grad.empty(), "the loss chunk got an output gradient");
    }
    if (st.pass() == pw::Pass::backward_weight) {
      expect(io.input_grad.empty(), "backward_weight got an input gradient buffer");
      return;
    }
    if (c > 0) {
      expect(io.input_grad.size() == io.input.size(), "input gradient size");
      for (std::size_t k = 0; k < items.size(); ++k) put(io.input_grad, k * item_floats, {2, mb, f(items[k].sample), f(items[k].item), f(c)});
    } else if (!io.segments.empty()) {
      expect(io.input_grad.size() == io.input.size(), "gathered input gradient size");
      for (const auto& sg : io.segments)
        put(io.input_grad, sg.offset / sizeof(float), {3, mb, f(sg.origin.sample), f(sg.origin.item), f(static_cast<int>(sg.consumer_item))});
    } else {
      expect(io.input_grad.empty(), "input gradient for an unfed first chunk");
    }
  }

  [[nodiscard]] long calls() const {
    long n = 0;
    for (long v : calls_) n += v;
    return n;
  }

 private:
  static float f(int v) { return static_cast<float>(v); }
  static void expect(bool ok, const std::string& what) {
    if (!ok) throw std::runtime_error("pattern check failed: " + what);
  }
  static void put(std::span<std::byte> b, std::size_t float_offset, std::initializer_list<float> v) {
    expect((float_offset + v.size()) * sizeof(float) <= b.size(), "buffer too small to write");
    std::memcpy(b.data() + float_offset * sizeof(float), v.begin(), v.size() * sizeof(float));
  }
  // Compares the first `n` floats of item `k` (item_floats wide; 2 wide for the stash).
  static void check(std::span<const std::byte> b, std::size_t k, std::initializer_list<float> want, std::size_t n, const char* what) {
    const std::size_t width = n == 2 ? 0 : item_floats;
    const std::size_t at = k * width;
    expect((at + n) * sizeof(float) <= b.size(), std::string(what) + ": buffer too small");
    std::vector<float> got(n);
    std::memcpy(got.data(), b.data() + at * sizeof(float), n * sizeof(float));
    for (std::size_t i = 0; i < n; ++i)
      if (got[i] != want.begin()[i])
        throw std::runtime_error(std::string("pattern check failed: ") + what + " item " + std::to_string(k) + " field " +
                                 std::to_string(i) + " is " + std::to_string(got[i]) + ", expected " + std::to_string(want.begin()[i]));
  }
  // Segments: per consumer item, the feeder items of its sample in item order, all of them.
  void check_segments(const pw::StageSpec&, const pw::SubMicrobatchSpec& smb, pw::StageIO& io) {
    const auto items = smb.items();
    std::size_t offset = 0, i = 0;
    for (std::size_t k = 0; k < items.size(); ++k) {
      const auto& sample = batch_->microbatches.at(smb.microbatch().index()).samples.at(static_cast<std::size_t>(items[k].sample));
      const auto& images = sample.tokens_of("image");
      for (std::size_t img = 0; img < images.size(); ++img, ++i) {
        expect(i < io.segments.size(), "too few segments");
        const auto& sg = io.segments[i];
        expect(sg.consumer_item == k && sg.origin.sample == items[k].sample && sg.origin.item == static_cast<int>(img),
               "segment " + std::to_string(i) + " out of order");
        expect(sg.offset == offset && sg.bytes == item_floats * sizeof(float), "segment layout");
        offset += sg.bytes;
      }
    }
    expect(i == io.segments.size(), "too many segments");
    expect(io.input.size() == offset, "gathered input size");
  }

 public:
  int last_chunk_ = 0;  ///< chunk index of the encoder's last chunk (set by the test)

 private:
  const pw::ModelSpec* model_;
  const pw::Batch* batch_;
  std::vector<long> calls_;  // per rank
};

}  // namespace pattern
