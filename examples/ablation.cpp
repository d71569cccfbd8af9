// The ablation of the DIP ideas in emulation: how much each idea adds, on vlm-s / vlm-web-mix /
// h800-tp4-pp4 (or the files given), averaged over a few steps. Rows, each on top of the last:
//   1. baseline          interleaved-1f1b as plan/compare.hpp's BaselineComparison builds it
//                        (static split and v chosen on profile steps, cheapest uniform recompute
//                        that fits);
//   2. + partitioner     DIP's modality-aware partition and sub-microbatches (dip_partition on
//                        the first profile step), ordered by a plain list scheduler with ONE
//                        queue per rank, the fixed 1F1B-like priorities (microbatch order, a
//                        microbatch's backward before later forwards) and an interleaved-1F1B
//                        in-flight limit (V·P − r microbatches on rank r, V = Σ_i K_i), no
//                        memory-aware pausing;
//                        cheapest uniform recompute (none, selective, full) that fits;
//   3. + interleaving    the dual-queue interleaver (F/B alternation, memory pausing) with the
//                        three seed priority orders (best of them), uniform recompute: the
//                        fastest uniform setting that fits;
//   4. + reordering      MCTS over the segment order, same uniform setting, fixed iteration
//                        budget;
//   5. + memory opt.     the full search: per-pair candidate strategies and the per-rank memory
//                        optimizer, same iteration budget.
// Rows 3-5 run the search's own ScheduleEvaluator (rows 3-4 with StepTablesOptions::
// fixed_strategy). Every step time is the emulated step (emulate_schedule, which the tests
// check against emulating the lowered plan). Prints a markdown table.
//
// Usage: ablation [--model F --dataset F --setup F] [--seed N] [--steps K] [--iterations I]
//                 [--threads T]
#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/data/packing.hpp>
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wrestrict"  // g++ 12 -O3 false positive inside the JSON reader
#include <pipeweaver/io/workload_json.hpp>
#pragma GCC diagnostic pop
#include <pipeweaver/emulate/schedule_emulator.hpp>
#include <pipeweaver/partition/dip_partitioner.hpp>
#include <pipeweaver/partition/splitter.hpp>
#include <pipeweaver/baselines/compare.hpp>
#include <pipeweaver/baselines/builder.hpp>
#include <pipeweaver/search/schedule_search.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace pw = pipeweaver;

namespace {

/// One queue per rank, 1F1B-style: whenever a rank can start something, it runs its
/// highest-priority ready stage (ties: lower node); the rank that can start earliest goes first
/// (ties: lower rank). As in 1F1B, rank r holds at most V·P − r microbatches in flight, V the
/// number of times a microbatch passes through the ranks (Σ_i K_i: with an encoder and a
/// backbone of one segment each, V = 2, as in interleaved 1F1B with v = 2): a forward of a
/// microbatch the rank has not started yet waits while that many started microbatches still
/// have backward work on the rank (lifted only if every rank would otherwise stall).
pw::Schedule single_queue_schedule(const pw::StageGraph& g, std::span<const std::int64_t> priority,
                                   std::span<const pw::Nanoseconds> latency, std::span<const std::int32_t> microbatch,
                                   int V, auto&& transfer, auto&& strategy_of) {
  const std::size_t n = g.nodes.size();
  int P = 0, M = 0;
  for (std::size_t v = 0; v < n; ++v) {
    P = std::max(P, g.nodes[v].rank.value() + 1);
    M = std::max(M, microbatch[v] + 1);
  }
  const auto Pu = static_cast<std::size_t>(P);
  pw::Schedule out;
  out.ranks.assign(Pu, {});
  std::vector<std::int32_t> remaining(n);
  std::vector<std::int64_t> ready(n, 0), t_last(Pu, 0);
  std::vector<std::vector<pw::NodeIndex>> queued(Pu);
  // Per (microbatch, rank): backward stages left, and whether it is admitted; per rank: in flight.
  std::vector<int> backward_left(static_cast<std::size_t>(M) * Pu, 0), in_flight(Pu, 0);
  std::vector<char> admitted(static_cast<std::size_t>(M) * Pu, 0);
  auto slot = [&](std::size_t v) { return static_cast<std::size_t>(microbatch[v]) * Pu + g.nodes[v].rank.index(); };
  for (std::size_t v = 0; v < n; ++v) {
    remaining[v] = static_cast<std::int32_t>(g.nodes[v].inputs.size());
    if (remaining[v] == 0) queued[g.nodes[v].rank.index()].push_back(static_cast<pw::NodeIndex>(v));
    if (pw::is_backward(g.nodes[v].stage.pass)) ++backward_left[slot(v)];
  }
  auto eligible = [&](std::size_t v, bool lift) {
    if (pw::is_backward(g.nodes[v].stage.pass) || admitted[slot(v)] || lift) return true;
    const std::size_t r = g.nodes[v].rank.index();
    return in_flight[r] < V * P - static_cast<int>(r);
  };
  for (std::size_t done = 0; done < n; ++done) {
    std::int64_t best_s = std::numeric_limits<std::int64_t>::max();
    std::size_t best_r = 0;
    bool lift = false;
    for (int attempt = 0; attempt < 2 && best_s == std::numeric_limits<std::int64_t>::max(); ++attempt) {
      lift = attempt == 1;
      for (std::size_t r = 0; r < Pu; ++r)
        for (pw::NodeIndex v : queued[r]) {
          if (!eligible(static_cast<std::size_t>(v), lift)) continue;
          const std::int64_t s = std::max(t_last[r], ready[static_cast<std::size_t>(v)]);
          if (s < best_s) {
            best_s = s;
            best_r = r;
          }
        }
    }
    auto& q = queued[best_r];
    std::size_t pick = q.size();
    for (std::size_t i = 0; i < q.size(); ++i) {
      const auto v = static_cast<std::size_t>(q[i]);
      if (ready[v] > best_s || !eligible(v, lift)) continue;
      if (pick == q.size() || priority[v] > priority[static_cast<std::size_t>(q[pick])] ||
          (priority[v] == priority[static_cast<std::size_t>(q[pick])] && q[i] < q[pick]))
        pick = i;
    }
    const pw::NodeIndex v = q[pick];
    q.erase(q.begin() + static_cast<std::ptrdiff_t>(pick));
    const auto vu = static_cast<std::size_t>(v);
    const std::size_t sl = slot(vu);
    if (pw::is_backward(g.nodes[vu].stage.pass)) {
      if (--backward_left[sl] == 0 && admitted[sl]) --in_flight[best_r];
    } else if (!admitted[sl]) {
      admitted[sl] = 1;
      if (backward_left[sl] > 0) ++in_flight[best_r];
    }
    const std::int64_t end = best_s + latency[vu].count();
    t_last[best_r] = end;
    out.ranks[best_r].push_back({v, strategy_of(v)});
    for (pw::NodeIndex u : g.nodes[vu].outputs) {
      const auto uu = static_cast<std::size_t>(u);
      std::int64_t arrive = end;
      if (g.nodes[uu].rank != g.nodes[vu].rank) arrive += pw::Nanoseconds{transfer(v, u)}.count();
      ready[uu] = std::max(ready[uu], arrive);
      if (--remaining[uu] == 0) queued[g.nodes[uu].rank.index()].push_back(u);
    }
  }
  return out;
}

struct Row {
  const char* name;
  const char* what;
  double sum_ms = 0;
  int fits = 0;
  std::string detail{};
  Row(const char* n, const char* w) : name(n), what(w) {}
};

std::string arg(int argc, char** argv, const char* name, std::string fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return fallback;
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string dir = PIPEWEAVER_EXAMPLE_WORKLOADS;
  const std::string model_path = arg(argc, argv, "--model", dir + "/models/vlm-s.json");
  const std::string dataset_path = arg(argc, argv, "--dataset", dir + "/datasets/vlm-web-mix.json");
  const std::string setup_path = arg(argc, argv, "--setup", dir + "/setups/h800-tp4-pp4.json");
  const auto seed = static_cast<std::uint64_t>(std::stoull(arg(argc, argv, "--seed", "1")));
  const int steps = std::stoi(arg(argc, argv, "--steps", "4"));
  const int iterations = std::stoi(arg(argc, argv, "--iterations", "100"));
  const int threads = std::stoi(arg(argc, argv, "--threads", "2"));

  const pw::ModelSpec model = pw::io::read_model(model_path);
  const pw::DatasetSpec dataset = pw::io::read_dataset(dataset_path);
  const pw::Setup setup = pw::io::read_setup(setup_path);
  const pw::AnalyticCostModel cost{model, setup};
  const pw::CompareOptions copt;
  const std::vector<pw::Batch> profile = pw::profile_batches(model, dataset, setup, copt);
  pw::BaselineComparison<pw::AnalyticCostModel> compare(model, setup, cost, profile, copt);
  const pw::DipPartition dip = pw::dip_partition(model, setup, cost, profile.front());
  const pw::Partition& partition = dip.partition;
  pw::BaselineContext<pw::AnalyticCostModel> ctx(model, setup, cost);  // memory accounting of row 2
  pw::StageCostCache<pw::AnalyticCostModel> cache(cost, model);

  std::array<Row, 5> rows{Row{"baseline", "interleaved-1f1b (Megatron-style, static mixed split)"},
                          Row{"+ partitioner", "DIP partition, 1F1B-like single-queue list schedule (V*P - r in flight)"},
                          Row{"+ interleaving", "dual-queue interleaver, seed priorities, uniform recompute"},
                          Row{"+ reordering", "MCTS segment order, uniform recompute"},
                          Row{"+ memory optimization", "per-pair strategies, per-rank memory optimizer"}};
  double lb_sum = 0;
  const std::array<pw::UniformRecompute, 3> settings = pw::uniform_recompute_settings;
  for (int step = 0; step < steps; ++step) {
    const pw::Batch batch = pw::sample_step(model, dataset, setup, seed, step);
    // 1. baseline
    const pw::StepComparison cmp = compare.compare(batch, step);
    for (const auto& p : cmp.plans)
      if (p.name == "interleaved-1f1b") {
        rows[0].sum_ms += pw::to_ms(p.step_time);
        rows[0].fits += p.fits_memory ? 1 : 0;
        rows[0].detail = std::string("recompute ") + std::string(pw::to_string(p.recompute));
      }
    lb_sum += pw::to_ms(cmp.lower_bound);

    const std::vector<pw::SubMicrobatchSpec> smbs = pw::split(model, partition, batch);
    const pw::StageGraph graph = pw::build_stage_graph(model, partition, smbs);
    const pw::SegmentUnits units = pw::segment_units(graph, smbs, partition.ranks);
    const std::vector<pw::SeedOrder> seeds = pw::seed_orders(model, units, partition.ranks);
    auto transfer_ns = [&](pw::NodeIndex u, pw::NodeIndex v) {
      return cost.transfer_time(pw::edge_bytes(cost, partition, smbs, graph.nodes[static_cast<std::size_t>(u)],
                                               graph.nodes[static_cast<std::size_t>(v)]));
    };

    // 2. + partitioner: single-queue list schedule, cheapest uniform recompute that fits.
    {
      int V = 0;  // passes of a microbatch through the ranks
      for (const auto& pl : partition.modules) V += static_cast<int>(pl.chunks.size()) / partition.ranks;
      std::vector<std::int32_t> mb_of_node(graph.nodes.size());
      for (std::size_t v = 0; v < graph.nodes.size(); ++v)
        mb_of_node[v] = smbs[graph.nodes[v].stage.sub_microbatch.index()].microbatch().value();
      std::vector<std::int64_t> unit_prio, node_prio;
      pw::priorities_from_sequence(units, seeds[0].sequence, unit_prio, node_prio);  // 1f1b-like
      bool done = false;
      for (pw::UniformRecompute rc : settings) {
        auto strategy_of = [&](pw::NodeIndex v) {
          const auto& s = graph.nodes[static_cast<std::size_t>(v)].stage;
          return pw::uniform_strategy(rc, partition.chunk(s.module, s.chunk).layer_count);
        };
        pw::Schedule probe;
        probe.ranks.assign(static_cast<std::size_t>(partition.ranks), {});
        for (std::size_t v = 0; v < graph.nodes.size(); ++v)
          probe.ranks[graph.nodes[v].rank.index()].push_back({static_cast<pw::NodeIndex>(v), strategy_of(static_cast<pw::NodeIndex>(v))});
        const auto lat = pw::node_latencies(graph, probe, partition, smbs, cache);
        const pw::Schedule sched = single_queue_schedule(graph, node_prio, lat, mb_of_node, V, transfer_ns, strategy_of);
        const auto peak = pw::schedule_peak_memory(ctx, partition, smbs, graph, sched);
        const bool fits = std::all_of(peak.begin(), peak.end(), [&](pw::Bytes b) { return b <= ctx.capacity(); });
        if (!fits && rc != pw::UniformRecompute::full) continue;
        const auto timing = pw::emulate_schedule(graph, sched, std::span<const pw::Nanoseconds>(lat), transfer_ns);
        rows[1].sum_ms += pw::to_ms(timing.step_time);
        rows[1].fits += fits ? 1 : 0;
        rows[1].detail = std::string("recompute ") + std::string(pw::to_string(rc));
        done = true;
        break;
      }
      if (!done) return 1;
    }

    // 3. + interleaving and 4. + reordering: the search's evaluator with one uniform strategy per
    // pair; the fastest uniform setting whose best seed order fits.
    pw::ScheduleEvaluatorOptions uniform_eval;
    uniform_eval.try_both_bases = false;  // frugal = fastest: one candidate per pair
    double best3 = std::numeric_limits<double>::infinity();
    bool fit3 = false;
    pw::UniformRecompute chosen = pw::UniformRecompute::full;
    for (pw::UniformRecompute rc : settings) {
      pw::StepTablesOptions to;
      to.fixed_strategy = [rc](int layers) { return pw::uniform_strategy(rc, layers); };
      const pw::StepTables tables = pw::build_step_tables(model, setup, partition, smbs, graph, units, cache, to);
      pw::ScheduleEvaluator ev(tables, uniform_eval);
      for (const auto& s : seeds) {
        const pw::Evaluation e = ev.evaluate(s.sequence);
        if (!e.feasible && fit3) continue;
        const double ms = pw::to_ms(e.step_time);
        if ((e.feasible && !fit3) || ms < best3) {
          best3 = ms;
          fit3 = e.feasible;
          chosen = rc;
        }
      }
    }
    rows[2].sum_ms += best3;
    rows[2].fits += fit3 ? 1 : 0;
    rows[2].detail = std::string("recompute ") + std::string(pw::to_string(chosen));

    pw::ScheduleSearchOptions so;
    so.mcts.max_iterations = iterations;
    so.mcts.threads = threads;
    so.mcts.seed = seed;
    {
      pw::ScheduleSearchOptions uo = so;
      uo.evaluator = uniform_eval;
      uo.tables.fixed_strategy = [chosen](int layers) { return pw::uniform_strategy(chosen, layers); };
      const auto r = pw::search_schedule(model, setup, partition, smbs, graph, cache, uo);
      rows[3].sum_ms += pw::to_ms(r.step_time);
      rows[3].fits += r.feasible ? 1 : 0;
      rows[3].detail = std::string("recompute ") + std::string(pw::to_string(chosen)) + ", " + std::to_string(iterations) + " iterations";
    }
    // 5. + memory optimization: the full search.
    {
      const auto r = pw::search_schedule(model, setup, partition, smbs, graph, cache, so);
      rows[4].sum_ms += pw::to_ms(r.step_time);
      rows[4].fits += r.feasible ? 1 : 0;
      rows[4].detail = std::to_string(iterations) + " iterations";
    }
    std::fprintf(stderr, "step %d done\n", step);
  }

  std::printf("Ablation on %s / %s / %s, seed %llu, steps 0..%d (mean emulated step time)\n\n", model.name.c_str(),
              dataset.name.c_str(), setup.name.c_str(), static_cast<unsigned long long>(seed), steps - 1);
  std::printf("| configuration | what runs | mean step (ms) | vs baseline | vs previous | fits memory | setting |\n");
  std::printf("| --- | --- | ---: | ---: | ---: | ---: | --- |\n");
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const double mean = rows[i].sum_ms / steps;
    const double base = rows[0].sum_ms / steps;
    const double prev = i == 0 ? mean : rows[i - 1].sum_ms / steps;
    std::printf("| %s | %s | %.1f | %.3fx | %.3fx | %d/%d | %s |\n", rows[i].name, rows[i].what, mean, base / mean, prev / mean,
                rows[i].fits, steps, rows[i].detail.c_str());
  }
  std::printf("\nLower bound (partition-independent, mean): %.1f ms\n", lb_sum / steps);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "ablation: %s\n", e.what());
  return 1;
}
