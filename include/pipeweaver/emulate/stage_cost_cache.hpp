#pragma once
// Stage-latency reuse cache ("spatial and temporal reuse").
//
// A stage's cost depends only on what it computes: the module, the layers of its chunk, the
// pass, the sub-microbatch's shape (token count of every item and of every item's context) and
// the memory strategy. Identical chunks on different ranks, identical shapes in other
// microbatches, and identical shapes in later steps or later search rollouts therefore share one
// cost-model evaluation. Key = (module, first_layer, layer_count, pass, shape id, strategy);
// shapes are interned to small ids once per sub-microbatch, so a lookup hashes a few integers.
//
// Assumption (documented contract with cost models): latency and activation bytes do not depend
// on the stage's rank, its chunk index or the sub-microbatch's microbatch id, only on the key
// above. With StageCostCacheOptions::uniform_layers (the default) the layer range is keyed as
// (layer_count, holds the module's first layer, holds its last layer): a module's layers are
// identical, and only the chunk holding layer 0 (embedding) and the one holding the last layer
// (vocabulary head) differ, as the Stage concept documents. This is what makes identical chunks
// on different ranks share an entry (spatial reuse). A cost model whose layers differ must turn
// uniform_layers off; one that depends on the rank (heterogeneous devices) must disable the cache.
// When the cost model changes (online calibration), update_cost(new_model, change) points the
// cache at the new model and drops exactly the entries of the (module, pass) pairs the change
// names (cost/cost_change.hpp); every other entry, and every interned shape, is kept and reused.
// clear() forgets everything.
//
// Not thread-safe: give each search worker its own cache. std-only.
#include <cstddef>
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/cost/cost_change.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/ir/stage.hpp"

namespace pipeweaver {

/// Interned sub-microbatch shape (item and context token lists).
using ShapeId = std::int32_t;

/// What the emulator needs of one stage: its latency, and for a forward the activation bytes it
/// leaves allocated until its backward finishes (0 for backward passes).
struct StageCost {
  Nanoseconds latency{0};
  Bytes activation{0};
  friend constexpr bool operator==(const StageCost&, const StageCost&) noexcept = default;
};

struct StageCostCacheStats {
  std::uint64_t hits = 0;    ///< lookups answered from the cache
  std::uint64_t misses = 0;  ///< lookups that evaluated the cost model (every lookup when disabled)
  std::size_t entries = 0;   ///< distinct stage keys stored
  std::size_t shapes = 0;    ///< distinct shapes interned
  std::uint64_t invalidated = 0;  ///< entries dropped by update_cost (not by clear)
  [[nodiscard]] double hit_rate() const noexcept {
    const auto n = hits + misses;
    return n == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(n);
  }
};

namespace detail {

[[nodiscard]] constexpr std::uint64_t mix64(std::uint64_t h, std::uint64_t v) noexcept {
  // splitmix64-style mixing of v into h: cheap and well distributed.
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h ^= h >> 31;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 29;
  return h;
}

struct ShapeHash {
  std::size_t operator()(const std::vector<std::int64_t>& v) const noexcept {
    std::uint64_t h = v.size();
    for (auto x : v) h = mix64(h, static_cast<std::uint64_t>(x));
    return static_cast<std::size_t>(h);
  }
};

struct StageKey {
  std::int32_t module = 0;
  std::int32_t first_layer = 0;
  std::int32_t layer_count = 0;
  ShapeId shape = 0;
  std::int16_t full_recompute = 0;
  std::int16_t selective_recompute = 0;
  std::int16_t offload = 0;
  Pass pass = Pass::forward;
  friend constexpr bool operator==(const StageKey&, const StageKey&) noexcept = default;
};

struct StageKeyHash {
  std::size_t operator()(const StageKey& k) const noexcept {
    std::uint64_t h = mix64(static_cast<std::uint64_t>(k.module), static_cast<std::uint64_t>(k.first_layer));
    h = mix64(h, (static_cast<std::uint64_t>(static_cast<std::uint32_t>(k.layer_count)) << 32) |
                     static_cast<std::uint32_t>(k.shape));
    h = mix64(h, (static_cast<std::uint64_t>(static_cast<std::uint16_t>(k.full_recompute)) << 32) |
                     (static_cast<std::uint64_t>(static_cast<std::uint16_t>(k.selective_recompute)) << 16) |
                     static_cast<std::uint16_t>(k.offload));
    h = mix64(h, static_cast<std::uint64_t>(k.pass));
    return static_cast<std::size_t>(h);
  }
};

}  // namespace detail

struct StageCostCacheOptions {
  bool enabled = true;        ///< false: every lookup evaluates the cost model (the benchmark's "cache off")
  bool uniform_layers = true; ///< key chunks by (layer count, first?, last?) rather than the exact range
};

/// Memoises a cost model's stage latencies and activation bytes (see the header comment).
/// Holds a reference to the cost model: it must outlive the cache.
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
class StageCostCache {
 public:
  StageCostCache(const C& cost, const ModelSpec& model, StageCostCacheOptions options = {})
      : cost_(&cost), enabled_(options.enabled), uniform_layers_(options.uniform_layers) {
    module_layers_.reserve(model.modules.size());
    for (const auto& m : model.modules) module_layers_.push_back(m.layers);
  }

  [[nodiscard]] const C& cost() const noexcept { return *cost_; }
  /// Disabled: every lookup evaluates the cost model (the benchmark's "cache off" mode).
  [[nodiscard]] bool enabled() const noexcept { return enabled_; }
  void set_enabled(bool on) noexcept { enabled_ = on; }
  [[nodiscard]] bool uniform_layers() const noexcept { return uniform_layers_; }

  /// Small id of the sub-microbatch's shape; equal shapes get equal ids for the cache's lifetime.
  [[nodiscard]] ShapeId intern(const SubMicrobatchSpec& smb) {
    scratch_.clear();
    const auto items = smb.item_tokens();
    const auto context = smb.context_tokens();
    scratch_.push_back(static_cast<std::int64_t>(items.size()));
    scratch_.insert(scratch_.end(), items.begin(), items.end());
    scratch_.push_back(static_cast<std::int64_t>(context.size()));
    scratch_.insert(scratch_.end(), context.begin(), context.end());
    auto it = shapes_.find(scratch_);
    if (it != shapes_.end()) return it->second;
    const auto id = static_cast<ShapeId>(shapes_.size());
    shapes_.emplace(scratch_, id);
    return id;
  }

  /// Cost of `stage` on `smb` (whose interned shape is `shape`) under `strategy`.
  [[nodiscard]] StageCost stage_cost(const StageSpec& stage, const SubMicrobatchSpec& smb, ShapeId shape,
                                     const MemoryStrategy& strategy) {
    if (!enabled_) {
      ++misses_;
      return evaluate(stage, smb, strategy);
    }
    const detail::StageKey key{stage.module().value(), key_first_layer(stage), stage.layer_count(), shape,
                               strategy.full_recompute, strategy.selective_recompute, strategy.offload,
                               stage.pass()};
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      ++hits_;
      return it->second;
    }
    ++misses_;
    const StageCost c = evaluate(stage, smb, strategy);
    entries_.emplace(key, c);
    return c;
  }
  /// Same, interning the shape first.
  [[nodiscard]] StageCost stage_cost(const StageSpec& stage, const SubMicrobatchSpec& smb,
                                     const MemoryStrategy& strategy) {
    return stage_cost(stage, smb, enabled_ ? intern(smb) : ShapeId{0}, strategy);
  }

  [[nodiscard]] StageCostCacheStats stats() const noexcept {
    return {hits_, misses_, entries_.size(), shapes_.size(), invalidated_};
  }
  [[nodiscard]] std::uint64_t hits() const noexcept { return hits_; }
  [[nodiscard]] std::uint64_t misses() const noexcept { return misses_; }
  void reset_stats() noexcept { hits_ = misses_ = invalidated_ = 0; }
  /// From now on, costs come from `cost` (which must outlive the cache, or the next update);
  /// the entries of the (module, pass) pairs `change` names are dropped, every other is kept.
  void update_cost(const C& cost, const CostChange& change) {
    cost_ = &cost;
    const std::size_t before = entries_.size();
    if (change.all()) entries_.clear();
    else if (!change.empty())
      std::erase_if(entries_, [&](const auto& e) { return change.affects(ModuleId{e.first.module}, e.first.pass); });
    invalidated_ += before - entries_.size();
  }
  /// Forgets every entry and shape and resets the counters.
  void clear() {
    entries_.clear();
    shapes_.clear();
    reset_stats();
  }

 private:
  /// The exact first layer, or with uniform_layers its position class: 0 (holds layer 0),
  /// -2 (holds the last layer but not the first), -1 (neither).
  [[nodiscard]] std::int32_t key_first_layer(const StageSpec& stage) const noexcept {
    const auto m = stage.module();
    if (!uniform_layers_ || !m.valid() || m.index() >= module_layers_.size() || stage.first_layer() == 0)
      return stage.first_layer();
    return stage.first_layer() + stage.layer_count() >= module_layers_[m.index()] ? -2 : -1;
  }

  [[nodiscard]] StageCost evaluate(const StageSpec& stage, const SubMicrobatchSpec& smb,
                                   const MemoryStrategy& strategy) const {
    StageCost c;
    c.latency = cost_->latency(stage, smb, strategy);
    if (stage.pass() == Pass::forward) c.activation = cost_->activation_bytes(stage, smb, strategy);
    return c;
  }

  const C* cost_;
  bool enabled_;
  bool uniform_layers_;
  std::vector<int> module_layers_;
  std::uint64_t hits_ = 0;
  std::uint64_t misses_ = 0;
  std::uint64_t invalidated_ = 0;
  std::vector<std::int64_t> scratch_;
  std::unordered_map<std::vector<std::int64_t>, ShapeId, detail::ShapeHash> shapes_;
  std::unordered_map<detail::StageKey, StageCost, detail::StageKeyHash> entries_;
};

}  // namespace pipeweaver
