#pragma once
// Side-by-side comparison of the baseline schedules on training steps:
// each baseline's static choice (split, v, family) is made once on profile steps of the dataset
// (the "average step": `profile_steps` steps sampled with a fixed `profile_seed`, independent of
// the seed of the steps compared), then for every compared step each baseline's plan is built
// (cheapest uniform recompute that fits), lowered and emulated.
//
// Lower bounds reported per step (emulate/lower_bound.hpp):
//  * lower_bound, the tight one: the smallest of the tight bounds (per-rank relaxation with
//    heads and tails) of every compared plan's graph. Each is valid for every plan over that
//    plan's partition and sub-microbatches, so the minimum is valid for every plan over any of
//    the compared partitions and never exceeds a compared plan's emulated step time. A caller
//    that compares further plans (e.g. a searched one) takes the minimum with their own tight
//    bounds (plan_lower_bound);
//  * classic_lower_bound: the minimum of the partition-independent bound (max(⌈W/P⌉, longest
//    chain) on the stage graph where every module is one chunk and every microbatch one
//    sub-microbatch per module: merging chunks never adds work under a cost model whose stage
//    latency is sub-additive in layers, so this bounds every partition's plans) and the classic
//    bound of every compared plan. Always <= lower_bound (each graph's tight bound is at least
//    its classic one).
// A baseline that cannot be prepared (e.g. fewer backbone layers than pipeline stages for
// optimus) is left out and listed with its reason (unavailable()); the others still run.
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/data/dataset_spec.hpp"
#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/emulate/lower_bound.hpp"
#include "pipeweaver/emulate/result.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/partition/splitter.hpp"
#include "pipeweaver/baselines/builder.hpp"
#include "pipeweaver/baselines/gpipe.hpp"
#include "pipeweaver/baselines/interleaved_1f1b.hpp"
#include "pipeweaver/baselines/megatron.hpp"
#include "pipeweaver/baselines/one_f_one_b.hpp"
#include "pipeweaver/baselines/optimus.hpp"
#include "pipeweaver/baselines/zero_bubble.hpp"
#include "pipeweaver/ir/plan.hpp"

namespace pipeweaver {

/// The baselines a comparison builds, in report order.
inline constexpr std::array<std::string_view, 6> baseline_names{"gpipe", "1f1b", "interleaved-1f1b", "megatron", "optimus", "zero-bubble"};

struct CompareOptions {
  std::uint64_t profile_seed = 0;  ///< seed of the profile steps (fixed: static choices do not depend on the compared seed)
  int profile_steps = 2;           ///< profile steps the static choices are made on
  BaselineOptions baselines{};
  bool record_timeline = false;    ///< keep each plan's emulated timeline (for pictures)
};

/// A baseline that cannot be prepared for a model and setup, and the error that says why.
struct UnavailableBaseline {
  std::string name{};
  std::string reason{};
};

/// One plan of one step.
struct PlanComparison {
  std::string name{};
  Nanoseconds step_time{0};
  Bytes peak_memory{0};  ///< maximum over ranks
  bool fits_memory = true;
  UniformRecompute recompute = UniformRecompute::none;
  Plan plan{};
  EmulationResult emulation{};
};

/// Every baseline on one step.
struct StepComparison {
  int step = 0;
  int microbatches = 0;
  Nanoseconds lower_bound{0};          ///< the tight bound (header comment)
  Nanoseconds classic_lower_bound{0};  ///< the classic bound (header comment)
  std::vector<PlanComparison> plans{};  ///< in baseline_names order
};

/// The profile steps: `options.profile_steps` steps of `dataset` sampled with `options.profile_seed`.
[[nodiscard]] inline std::vector<Batch> profile_batches(const ModelSpec& model, const DatasetSpec& dataset,
                                                        const Setup& setup, const CompareOptions& options = {}) {
  std::vector<Batch> out;
  for (int i = 0; i < std::max(1, options.profile_steps); ++i) out.push_back(sample_step(model, dataset, setup, options.profile_seed, i));
  return out;
}

/// The partition-independent classic lower bound of a step (see the header comment).
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] Nanoseconds partition_independent_lower_bound(const ModelSpec& model, const Setup& setup, const C& cost,
                                                            const Batch& batch) {
  const Partition whole = whole_module_partition(model, setup.pipeline_stages);
  return lower_bound(model, whole, split(model, whole, batch), cost).value;
}

/// The tight bound valid for every plan over `plan`'s partition and sub-microbatches (its own
/// graph, split backward when the plan splits).
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] Nanoseconds plan_lower_bound(const Plan& plan, const ModelSpec& model, const C& cost) {
  return lower_bound(plan, model, cost).tight;
}

/// Prepares every baseline once (constructor), then compares them on any number of steps.
/// Holds references to `model`, `setup` and `cost`: they must outlive it.
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
class BaselineComparison {
 public:
  /// Prepares every baseline; one that cannot be prepared for this model and setup (fewer
  /// layers than pipeline stages, ...) is left out and listed in unavailable(), so the others
  /// still run. Cancellation is never swallowed.
  BaselineComparison(const ModelSpec& model, const Setup& setup, const C& cost, std::span<const Batch> profile,
                     CompareOptions options = {})
      : ctx_(model, setup, cost), options_(std::move(options)) {
    const auto& o = options_.baselines;
    const auto attempt = [&](std::string_view name, auto&& prepare) {
      try {
        baselines_.push_back(prepare());
      } catch (const Error& e) {
        if (e.kind() == ErrorKind::cancelled) throw;
        unavailable_.push_back(UnavailableBaseline{std::string(name), e.what()});
      }
    };
    attempt("gpipe", [&] { return prepare_gpipe(ctx_, profile, o); });
    attempt("1f1b", [&] { return prepare_1f1b(ctx_, profile, o); });
    attempt("interleaved-1f1b", [&] { return prepare_interleaved_1f1b(ctx_, profile, o); });
    attempt("megatron", [&] { return prepare_megatron(ctx_, profile, o); });
    attempt("optimus", [&] { return prepare_optimus(ctx_, profile, o); });
    attempt("zero-bubble", [&] { return prepare_zero_bubble(ctx_, profile, o); });
  }

  /// A comparison over baselines already prepared (e.g. a Planner's baselines(), so that a
  /// caller that has a planner does not choose the static splits a second time); none at all
  /// is allowed (every baseline unavailable): compare() then reports the lower bound alone.
  BaselineComparison(const ModelSpec& model, const Setup& setup, const C& cost, std::vector<PreparedBaseline> baselines,
                     CompareOptions options = {}, std::vector<UnavailableBaseline> unavailable = {})
      : ctx_(model, setup, cost), options_(std::move(options)), baselines_(std::move(baselines)), unavailable_(std::move(unavailable)) {}

  [[nodiscard]] const std::vector<PreparedBaseline>& baselines() const noexcept { return baselines_; }
  /// The baselines that could not be prepared, each with the error that says why.
  [[nodiscard]] const std::vector<UnavailableBaseline>& unavailable() const noexcept { return unavailable_; }
  [[nodiscard]] BaselineContext<C>& context() noexcept { return ctx_; }

  /// Builds, lowers and emulates every baseline on `batch`.
  [[nodiscard]] StepComparison compare(const Batch& batch, int step = 0) {
    StepComparison out;
    out.step = step;
    out.microbatches = static_cast<int>(batch.microbatches.size());
    out.classic_lower_bound = partition_independent_lower_bound(ctx_.model(), ctx_.setup(), ctx_.cost(), batch);
    out.lower_bound = Nanoseconds::max();
    EmulateOptions eo;
    eo.record_timeline = options_.record_timeline;
    for (const PreparedBaseline& p : baselines_) {
      BaselinePlan b = build_baseline_plan(ctx_, p.baseline, batch, eo);
      const LowerBound own = lower_bound(b.graph, p.baseline.layout.partition, b.plan.sub_microbatches, ctx_.cache());
      out.classic_lower_bound = std::min(out.classic_lower_bound, own.value);
      out.lower_bound = std::min(out.lower_bound, own.tight);
      PlanComparison pc;
      pc.name = p.baseline.name;
      pc.step_time = b.emulation.step_time;
      pc.peak_memory = b.emulation.peak_memory();
      pc.fits_memory = b.fits_memory;
      pc.recompute = b.recompute;
      pc.plan = std::move(b.plan);
      pc.emulation = std::move(b.emulation);
      out.plans.push_back(std::move(pc));
    }
    return out;
  }

 private:
  BaselineContext<C> ctx_;
  CompareOptions options_;
  std::vector<PreparedBaseline> baselines_;
  std::vector<UnavailableBaseline> unavailable_;
};

}  // namespace pipeweaver
