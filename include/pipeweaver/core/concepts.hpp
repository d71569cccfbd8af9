#pragma once
// The seams users plug their own types into. Each concept is built from
// small named requirements so that a failed check names the missing piece.
// test/core/concepts.cpp shows, for each, a type that satisfies it and one that does not.
#include <concepts>
#include <cstdint>
#include <span>

#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/core/units.hpp"

namespace pipeweaver {

// --- Stage: one chunk's forward or backward work on a rank ---------------------------------

template <class S>
concept HasModule = requires(const S& s) {
  { s.module() } -> std::convertible_to<ModuleId>;
};
template <class S>
concept HasChunk = requires(const S& s) {
  { s.chunk() } -> std::convertible_to<int>;  // chunk index within its module, 0 .. chunks-1
};
template <class S>
concept HasRank = requires(const S& s) {
  { s.rank() } -> std::convertible_to<RankId>;
};
template <class S>
concept HasPass = requires(const S& s) {
  { s.pass() } -> std::convertible_to<Pass>;
};
template <class S>
concept HasLayerRange = requires(const S& s) {
  { s.first_layer() } -> std::convertible_to<int>;  // first layer of the module in this chunk
  { s.layer_count() } -> std::convertible_to<int>;  // consecutive layers in this chunk
};

/// One chunk's forward or backward work on a rank: module, chunk index, rank, pass and the
/// layers the chunk holds (a cost model needs them; the chunk holding layer 0 of a backbone
/// also embeds tokens, the one holding its last layer also runs the vocabulary head).
template <class S>
concept Stage = HasModule<S> && HasChunk<S> && HasRank<S> && HasPass<S> && HasLayerRange<S>;

// --- SubMicrobatch: a modality-specific piece of a microbatch ------------------------------

template <class M>
concept HasMicrobatch = requires(const M& m) {
  { m.microbatch() } -> std::convertible_to<MicrobatchId>;
};
template <class M>
concept HasItemTokens = requires(const M& m) {
  // Token count of each item (an image, a video, one sample's text sequence); attention
  // never crosses items, so the shape is the list, not just the sum.
  { m.item_tokens() } -> std::convertible_to<std::span<const std::int64_t>>;
};
template <class M>
concept HasContextTokens = requires(const M& m) {
  // Per item, the tokens of the conditioning sequence a cross-attention module attends to
  // (empty for modules without cross-attention).
  { m.context_tokens() } -> std::convertible_to<std::span<const std::int64_t>>;
};

/// A modality-specific piece of a microbatch: which module processes it, which microbatch it
/// belongs to, and the token count of each of its items.
template <class M>
concept SubMicrobatch = HasModule<M> && HasMicrobatch<M> && HasItemTokens<M> && HasContextTokens<M>;

// --- CostModel: what the search and the emulator ask of a cost model -----------------------

/// Time of a stage on a sub-microbatch under a memory strategy (a backward under recompute
/// includes the recomputation).
template <class C, class S, class M>
concept StageLatencyModel = requires(const C& c, const S& s, const M& m, const MemoryStrategy& st) {
  { c.latency(s, m, st) } -> std::same_as<Nanoseconds>;
};
/// Device bytes a forward stage leaves allocated until its backward finishes.
template <class C, class S, class M>
concept ActivationMemoryModel = requires(const C& c, const S& s, const M& m, const MemoryStrategy& st) {
  { c.activation_bytes(s, m, st) } -> std::same_as<Bytes>;
};
/// Bytes a stage hands to the next stage (activations forward, gradients backward) and how
/// long a message of a given size takes between two pipeline ranks.
template <class C, class S, class M>
concept TransferModel = requires(const C& c, const S& s, const M& m, Bytes b) {
  { c.output_bytes(s, m) } -> std::same_as<Bytes>;
  { c.transfer_time(b) } -> std::same_as<Nanoseconds>;
};

/// A cost model for stages of type S on sub-microbatches of type M. The analytic model, the
/// table model and a user's own type satisfy it; nothing derives from a base class.
template <class C, class S, class M>
concept CostModel = Stage<S> && SubMicrobatch<M> && StageLatencyModel<C, S, M> &&
                    ActivationMemoryModel<C, S, M> && TransferModel<C, S, M>;

namespace detail {
// Each member of a cost model in three forms: callable on a const object, callable only on a
// non-const one (a missing `const`), callable with the required return type. The checks below
// use them to say which of the three went wrong.
template <class C, class S, class M>
concept ConstLatency = requires(const C& c, const S& s, const M& m, const MemoryStrategy& st) { c.latency(s, m, st); };
template <class C, class S, class M>
concept MutableLatency = requires(C& c, const S& s, const M& m, const MemoryStrategy& st) { c.latency(s, m, st); };
template <class C, class S, class M>
concept ConstActivationBytes = requires(const C& c, const S& s, const M& m, const MemoryStrategy& st) { c.activation_bytes(s, m, st); };
template <class C, class S, class M>
concept MutableActivationBytes = requires(C& c, const S& s, const M& m, const MemoryStrategy& st) { c.activation_bytes(s, m, st); };
template <class C, class S, class M>
concept ConstOutputBytes = requires(const C& c, const S& s, const M& m) { c.output_bytes(s, m); };
template <class C, class S, class M>
concept MutableOutputBytes = requires(C& c, const S& s, const M& m) { c.output_bytes(s, m); };
template <class C>
concept ConstTransferTime = requires(const C& c, Bytes b) { c.transfer_time(b); };
template <class C>
concept MutableTransferTime = requires(C& c, Bytes b) { c.transfer_time(b); };
}  // namespace detail

/// Compile-time diagnosis of a type meant as a CostModel over S and M: true when it is one;
/// otherwise exactly one static_assert per problem fails, and its message (the first line of
/// the compiler's output) names the concept and the member that is missing, not const, or of
/// the wrong return type. The Planner calls it on its cost model type.
template <class C, class S, class M>
consteval bool diagnose_cost_model() {
  static_assert(detail::ConstLatency<C, S, M> || !detail::MutableLatency<C, S, M>,
                "pipeweaver::CostModel (StageLatencyModel): latency(stage, sub_microbatch, strategy) must be a const member function");
  static_assert(detail::ConstLatency<C, S, M> || detail::MutableLatency<C, S, M>,
                "pipeweaver::CostModel (StageLatencyModel): the cost model has no member "
                "Nanoseconds latency(const Stage&, const SubMicrobatch&, const MemoryStrategy&) const");
  static_assert(!detail::ConstLatency<C, S, M> || StageLatencyModel<C, S, M>,
                "pipeweaver::CostModel (StageLatencyModel): latency(stage, sub_microbatch, strategy) must return pipeweaver::Nanoseconds");
  static_assert(detail::ConstActivationBytes<C, S, M> || !detail::MutableActivationBytes<C, S, M>,
                "pipeweaver::CostModel (ActivationMemoryModel): activation_bytes(stage, sub_microbatch, strategy) must be a const member function");
  static_assert(detail::ConstActivationBytes<C, S, M> || detail::MutableActivationBytes<C, S, M>,
                "pipeweaver::CostModel (ActivationMemoryModel): the cost model has no member "
                "Bytes activation_bytes(const Stage&, const SubMicrobatch&, const MemoryStrategy&) const");
  static_assert(!detail::ConstActivationBytes<C, S, M> || ActivationMemoryModel<C, S, M>,
                "pipeweaver::CostModel (ActivationMemoryModel): activation_bytes(stage, sub_microbatch, strategy) must return pipeweaver::Bytes");
  static_assert(detail::ConstOutputBytes<C, S, M> || !detail::MutableOutputBytes<C, S, M>,
                "pipeweaver::CostModel (TransferModel): output_bytes(stage, sub_microbatch) must be a const member function");
  static_assert(detail::ConstOutputBytes<C, S, M> || detail::MutableOutputBytes<C, S, M>,
                "pipeweaver::CostModel (TransferModel): the cost model has no member Bytes output_bytes(const Stage&, const SubMicrobatch&) const");
  static_assert(detail::ConstTransferTime<C> || !detail::MutableTransferTime<C>,
                "pipeweaver::CostModel (TransferModel): transfer_time(bytes) must be a const member function");
  static_assert(detail::ConstTransferTime<C> || detail::MutableTransferTime<C>,
                "pipeweaver::CostModel (TransferModel): the cost model has no member Nanoseconds transfer_time(Bytes) const");
  static_assert(!(detail::ConstOutputBytes<C, S, M> && detail::ConstTransferTime<C>) || TransferModel<C, S, M>,
                "pipeweaver::CostModel (TransferModel): output_bytes must return pipeweaver::Bytes and transfer_time pipeweaver::Nanoseconds");
  return CostModel<C, S, M>;
}

}  // namespace pipeweaver
