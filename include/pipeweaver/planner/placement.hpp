#pragma once
// The Planner's one-off placement choice: which Partition (chunks per rank, items per
// sub-microbatch) every step of the training run uses.
//
// Candidates, in this order: DIP's own partition (partition/dip_partitioner.hpp), its neighbors
// (other K_i, other B_i) and, when asked, every distinct static placement of the baselines (as
// they are, then with DIP's sub-microbatch sizes). Each is scored by a short, iteration-bounded
// schedule search on the first profile steps; the best (fits memory on every scored step, then
// the least total step time; ties to the earlier candidate) is kept. A profile step of more
// than PlacementScoring::max_microbatches microbatches is scored on its first that many: the
// candidates differ in chunks per rank and items per sub-microbatch, whose effect on a long step
// its first window already shows, and a bounded window keeps the one-off set-up from growing
// with the step (the search of a step costs more than linear time in its microbatches). Every
// score is deterministic, so the choice is too. Static memory that cannot fit anywhere is an
// Error{infeasible} naming the rank, its bytes and the capacity. When DIP's partition cannot be
// made (a module with fewer layers than ranks), the baselines' placements are the candidates.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/baselines/builder.hpp"
#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/emulate/stage_cost_cache.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/partition/dip_partitioner.hpp"
#include "pipeweaver/partition/splitter.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"
#include "pipeweaver/search/schedule_search.hpp"

namespace pipeweaver {

/// How one candidate placement scored on the profile steps.
struct PlacementScore {
  std::string name{};              ///< the partition's name: "dip", "dip K(vit)=2", ...
  bool fits = false;               ///< static memory fits and every profile step's schedule fits
  Nanoseconds total_step_time{0};  ///< summed over the profile steps (searched schedules)
  std::string reason{};            ///< why it does not fit, when it does not
};

/// What the scoring searches use: the search options with the seed and thread count to use, an
/// iteration budget per search and the number of profile steps scored.
struct PlacementScoring {
  ScheduleSearchOptions search{};
  std::uint64_t seed = 0;
  int threads = 1;
  std::int64_t iterations = 2;
  std::size_t steps = 2;
  std::size_t max_microbatches = 64;  ///< the window of a profile step that is scored
};

/// The chosen placement and every candidate's score (empty when only DIP's was considered).
struct PlacementChoice {
  Partition partition{};
  std::vector<PlacementScore> scores{};
};

namespace detail {

/// Appends each distinct baseline placement (one with the same chunks and B_i as an earlier
/// candidate is skipped), as it is and with DIP's B_i (cands.front() is DIP's own partition;
/// when cands is empty, DIP's partition could not be made and the placements come as they are).
inline void add_baseline_placements(const ModelSpec& model, const Setup& setup, std::span<const PreparedBaseline> baselines,
                                    std::vector<Partition>& cands) {
  const auto known = [&](const Partition& x) {
    return std::any_of(cands.begin(), cands.end(), [&](const Partition& c) { return c.ranks == x.ranks && c.modules == x.modules; });
  };
  const bool have_dip = !cands.empty();
  std::vector<std::int64_t> dip_b;  // a copy: pushing to cands may reallocate it
  if (have_dip)
    for (const auto& m : cands.front().modules) dip_b.push_back(m.sub_microbatch_items);
  for (const PreparedBaseline& pb : baselines) {
    Partition own = pb.baseline.layout.partition;
    if (own.ranks != setup.pipeline_stages || own.modules.size() != model.size()) continue;
    const bool complete = std::all_of(own.modules.begin(), own.modules.end(), [](const auto& m) { return !m.chunks.empty(); });
    if (!complete) continue;  // a partial layout (e.g. encoders scheduled outside) is not a placement
    own.name = "baseline " + pb.baseline.name;
    Partition sub = own;
    sub.name += " with DIP's B";
    if (have_dip)
      for (std::size_t i = 0; i < sub.modules.size(); ++i) sub.modules[i].sub_microbatch_items = dip_b[i];
    if (!known(own)) cands.push_back(std::move(own));
    if (have_dip && !known(sub)) cands.push_back(std::move(sub));
  }
}

/// The first `max_microbatches` microbatches of `step` (all of them when it has no more).
[[nodiscard]] inline Batch scoring_window(const Batch& step, std::size_t max_microbatches) {
  if (step.microbatches.size() <= max_microbatches) return step;
  Batch window;
  window.microbatches.assign(step.microbatches.begin(), step.microbatches.begin() + static_cast<std::ptrdiff_t>(max_microbatches));
  return window;
}

/// One candidate's score: its static memory, then a searched schedule per profile step.
template <class C>
[[nodiscard]] PlacementScore score_placement(const ModelSpec& model, const Setup& setup, const Partition& candidate,
                                             std::span<const Batch> profile, StageCostCache<C>& cache,
                                             const PlacementScoring& scoring) {
  PlacementScore sc;
  sc.name = candidate.name;
  sc.fits = true;
  try {
    check_static_memory(model, setup, candidate);
    for (std::size_t k = 0; k < scoring.steps; ++k) {
      const auto smbs = split(model, candidate, scoring_window(profile[k], scoring.max_microbatches));
      const StageGraph graph = build_stage_graph(model, candidate, smbs);
      ScheduleSearchOptions so = scoring.search;
      so.mcts.seed = scoring.seed;
      so.mcts.threads = scoring.threads;
      so.mcts.max_iterations = scoring.iterations;
      so.mcts.time_budget = std::chrono::nanoseconds{0};
      so.mcts.record_trace = false;
      const ScheduleSearchResult r = search_schedule(model, setup, candidate, smbs, graph, cache, so);
      sc.total_step_time += r.step_time;
      if (!r.feasible) {
        sc.fits = false;
        sc.reason = "profile step " + std::to_string(k) + " does not fit memory";
      }
    }
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::infeasible) throw;
    sc.fits = false;
    sc.reason = e.what();
  }
  return sc;
}

}  // namespace detail

/// Chooses the placement (see the header comment). `profile` holds at least one batch; with
/// scoring.steps == 0 (or a single candidate) DIP's own partition is taken unscored.
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] PlacementChoice choose_placement(const ModelSpec& model, const Setup& setup, const C& cost, std::span<const Batch> profile,
                                               std::span<const PreparedBaseline> baselines, const DipOptions& dip,
                                               StageCostCache<C>& cache, PlacementScoring scoring) {
  // DIP's partition cannot be made when a module has fewer layers than ranks: then the
  // baselines' placements are the candidates (the search still plans on the best of them), and
  // without any, DIP's error stands.
  std::vector<Partition> cands;
  std::optional<Error> dip_error;
  try {
    cands = candidate_partitions(model, setup, cost, profile.front(), dip);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::infeasible) throw;
    dip_error = e;
  }
  scoring.steps = std::min(scoring.steps, profile.size());
  if (scoring.steps > 0 || dip_error) detail::add_baseline_placements(model, setup, baselines, cands);
  if (cands.empty()) throw *dip_error;
  PlacementChoice out;
  if (scoring.steps == 0 || cands.size() == 1) {
    check_static_memory(model, setup, cands.front());
    out.partition = std::move(cands.front());
    return out;
  }
  std::optional<std::size_t> best;
  for (std::size_t i = 0; i < cands.size(); ++i) {
    PlacementScore sc = detail::score_placement(model, setup, cands[i], profile, cache, scoring);
    const bool better = !best || (sc.fits && !out.scores[*best].fits) ||
                        (sc.fits == out.scores[*best].fits && sc.total_step_time < out.scores[*best].total_step_time);
    out.scores.push_back(std::move(sc));
    if (better) best = i;
  }
  // Nothing fits: DIP's own partition's static memory error, if that is the reason.
  if (!out.scores[*best].fits) check_static_memory(model, setup, cands.front());
  out.partition = std::move(cands[*best]);
  return out;
}

}  // namespace pipeweaver
