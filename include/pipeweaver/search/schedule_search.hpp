#pragma once
// One step's schedule search: decision units and seed orders of the stage graph,
// the step tables, MCTS over unit orders scored by ScheduleEvaluator (one per worker thread),
// and the best order's schedule. The seeds (1F1B-like, interleaved-like, encoder-in-bubbles,
// then the caller's own) are always scored, so the result is never worse than the best of them
// under the same partition.
//
// A graph with split backwards (StageGraphOptions::split_backward) has the same units as the
// graph without (a backward's two parts belong to one unit), so an order found on one is an
// order of the other: the Planner seeds its split search with the best order of its unsplit
// one (ScheduleSearchOptions::seeds).
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/units.hpp"
#include "pipeweaver/emulate/lower_bound.hpp"
#include "pipeweaver/emulate/stage_cost_cache.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/ir/partition.hpp"
#include "pipeweaver/ir/stage.hpp"
#include "pipeweaver/schedule/stage_graph.hpp"
#include "pipeweaver/search/mcts.hpp"
#include "pipeweaver/search/schedule_evaluator.hpp"
#include "pipeweaver/search/segments.hpp"

namespace pipeweaver {

struct ScheduleSearchOptions {
  MctsOptions mcts{};
  ScheduleEvaluatorOptions evaluator{};
  StepTablesOptions tables{};
  /// Further seed orders, scored after the built-in ones (found_by "given"). Each must be a
  /// topological order of the step's units (segments.hpp); one that is not is Error{input}.
  std::vector<std::vector<std::int32_t>> seeds{};
};

struct ScheduleSearchResult {
  Schedule schedule{};
  bool feasible = false;          ///< fits memory on every rank
  Nanoseconds step_time{0};       ///< emulate_schedule of `schedule`
  LowerBound bound{};               ///< of this step under this partition
  std::string found_by{};           ///< a seed's name, or "mcts"
  MctsResult search{};              ///< iterations, rollouts, tree size, convergence trace
};

/// Searches one step. The cache is used only on the calling thread (building the tables), so a
/// caller may keep it across steps (temporal reuse).
template <class C>
  requires CostModel<C, StageSpec, SubMicrobatchSpec>
[[nodiscard]] ScheduleSearchResult search_schedule(const ModelSpec& model, const Setup& setup, const Partition& partition,
                                                   std::span<const SubMicrobatchSpec> smbs, const StageGraph& graph,
                                                   StageCostCache<C>& cache, const ScheduleSearchOptions& options = {}) {
  const SegmentUnits units = segment_units(graph, smbs, partition.ranks);
  const StepTables tables = build_step_tables(model, setup, partition, smbs, graph, units, cache, options.tables);
  std::vector<SeedOrder> seeds = seed_orders(model, units, partition.ranks);
  for (std::size_t i = 0; i < options.seeds.size(); ++i) {
    if (!is_topological(units, options.seeds[i]))
      throw input_error("given seed order " + std::to_string(i) + " is not an order of this step's units",
                        {.path = "ScheduleSearchOptions::seeds", .expected = "a topological order of the " + std::to_string(units.size()) + " segment units"});
    seeds.push_back({"given", options.seeds[i]});
  }
  std::vector<std::vector<std::int32_t>> seed_sequences;
  for (const auto& s : seeds) seed_sequences.push_back(s.sequence);
  const UnitDag dag{units.successors, units.indegree};
  ScheduleSearchResult out;
  out.search = mcts_search(dag, seed_sequences, [&](int) { return ScheduleEvaluator(tables, options.evaluator); }, options.mcts);
  ScheduleEvaluator final_eval(tables, options.evaluator);
  Evaluation e = final_eval.evaluate(out.search.best_sequence);
  out.schedule = std::move(e.schedule);
  out.feasible = e.feasible;
  out.step_time = e.step_time;
  out.bound = tables.bound;
  out.found_by = out.search.best_seed >= 0 ? seeds[static_cast<std::size_t>(out.search.best_seed)].name : "mcts";
  return out;
}

}  // namespace pipeweaver
