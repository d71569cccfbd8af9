#pragma once
// What the executor hands a stage callback, and what it asks of the user's callbacks.
//
// The executor's promises to the callbacks (for the plan it runs, on each rank):
//  * Order. forward / backward are called once per Forward / Backward action of the rank, in
//    the rank's list order, from the rank's own thread (host) or the host thread driving the
//    compute queue (a stream-based runtime); calls of different ranks may run concurrently,
//    calls of one rank never do. A stage (module, chunk) always runs on the rank its chunk is
//    placed on.
//  * Identity. `rank` is the calling rank, `sub_microbatch` the id of the call's sub-microbatch
//    (`smb` is plan.sub_microbatch(io.sub_microbatch)), `step` the step index the executor's
//    run was given (Executor::run(callbacks, step), host::HostExecutor::run(..., step)).
//  * Forward: `input` holds the whole input of the stage and stays unchanged (and valid) until
//    the last Backward of the same stage and sub-microbatch has returned:
//      - chunk c > 0: the output of chunk c-1's forward for the same sub-microbatch;
//      - first chunk of a module fed by others (the backbone fed by encoders; a generator fed
//        by the backbone, whose output is then its cross-attention context): the feeders'
//        outputs of the same microbatch, gathered per item: for each item of this stage's
//        sub-microbatch in order, for each feeding module in module order, the feeder items of
//        the same sample in (sample, item) ItemRef order; `segments` lists them;
//      - first chunk of a module nobody feeds: empty (the callback reads its own data, using
//        the sub-microbatch's ItemRefs).
//    `output` (writable, contents unspecified on entry) must be filled completely; its size is
//    the sum over items of the user's item_output_bytes (item i occupies bytes
//    [sum_{j<i} size_j, sum_{j<=i} size_j)). `stash` is a per-(stage, sub-microbatch) scratch
//    that survives until the matching backward. `output_grad` and `input_grad` are empty.
//  * Backward (pass backward or backward_input): `input` and `stash` as the forward left them;
//    `output_grad` holds the gradient of the forward's output (summed over every consumer;
//    empty when nothing consumes the output, e.g. the backbone's last chunk computing its
//    loss); `input_grad` (writable, contents unspecified) must be filled with the gradient of
//    `input`, or is empty when no stage needs it. For a gathered input, the executor
//    scatters (adds) each segment's gradient back to the feeder item it came from.
//    Pass backward_weight: the same `input`, `stash` and `output_grad`; `input_grad` empty.
//    `output` is empty in every backward.
//  * Buffers are valid only during the call; contents must not be read or written after it
//    returns. Buffers are aligned to ExecutorOptions::alignment bytes.
// std-only: compiled by nvcc.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/ir/stage.hpp"

namespace pipeweaver {

/// One feeder item inside a gathered input (first chunk of a module fed by other modules).
struct InputSegment {
  ModuleId module{0};                  ///< feeding module
  SubMicrobatchId sub_microbatch{0};   ///< the feeder's sub-microbatch
  std::size_t item = 0;                ///< item index within that sub-microbatch
  ItemRef origin{};                      ///< sample and item in the microbatch
  std::size_t consumer_item = 0;       ///< index of the item of this stage's sub-microbatch it belongs to
  std::size_t offset = 0;              ///< byte offset in StageIO::input (and input_grad)
  std::size_t bytes = 0;
};

/// Buffers of one stage call (see the promises above).
struct StageIO {
  RankId rank{0};
  /// The sub-microbatch of the call: the index of the callback's `smb` in Plan::sub_microbatches.
  SubMicrobatchId sub_microbatch{0};
  /// The step being run: what Executor::run(callbacks, step) was given (0 for run(callbacks)).
  std::int64_t step = 0;
  std::span<const std::byte> input{};
  std::span<const InputSegment> segments{};  ///< layout of a gathered input, else empty
  std::span<std::byte> output{};
  std::span<std::byte> stash{};
  std::span<const std::byte> output_grad{};
  std::span<std::byte> input_grad{};
  void* queue = nullptr;  ///< the runtime's native compute queue (Runtime::native_handle; nullptr on the host)
};

/// The user's stage callbacks. Called concurrently from different ranks (see above).
template <class C>
concept StageCallbacks = requires(C& c, const StageSpec& stage, const SubMicrobatchSpec& smb, StageIO& io) {
  c.forward(stage, smb, io);
  c.backward(stage, smb, io);
};

/// Sizes of the buffers the executor allocates, from the user (the plan's Transfer bytes come
/// from a cost model whose element sizes need not match the real tensors).
struct BufferSizes {
  /// Bytes of item `item` of the forward output of `stage` on `smb`. Unset: every forward
  /// output is as large as the plan's Transfer that carries it (0 when none does), split over
  /// the items in proportion to their tokens.
  std::function<std::size_t(const StageSpec& stage, const SubMicrobatchSpec& smb, std::size_t item)> item_output_bytes;
  /// Bytes of the stash of `stage` on `smb` (kept from the forward to its backward). Unset: 0.
  std::function<std::size_t(const StageSpec& stage, const SubMicrobatchSpec& smb)> stash_bytes;
};

struct ExecutorOptions {
  BufferSizes sizes{};
  std::size_t alignment = 256;  ///< of every pool buffer (power of two)
  /// Record each Forward / Backward call's duration (Executor::stage_times): the runtime's own
  /// timer when it has one (TimesStages, execute/runtime.hpp), else the wall clock of the call.
  /// Off: no clock is read.
  bool time_stages = false;
};

}  // namespace pipeweaver
