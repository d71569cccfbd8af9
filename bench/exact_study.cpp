// How far dip's plans are from the true optimum: on random small steps (test/support/
// small_steps.hpp: the reference models' layer shapes with fewer layers, P = 2..4, 2..8
// microbatches, two or three modules, analytic costs), the planner plans each step, and the exact
// solver (test/support/exact_schedule.hpp) finds the best per-rank orders for the plan's own
// partition, sub-microbatch split and memory strategies, starting from dip's orders. Reports, over
// the steps the solver proves optimal within its node limit:
//   dip / optimum (geometric mean, worst, how many exactly optimal),
//   tight bound / optimum and classic bound / optimum (how much of the gap the bounds explain),
// and, for the steps it does not prove, dip / best found and dip / tight bound; over every step,
// dip / optimum bracketed by dip / best found (<= it) and dip / max(tight bound, the solver's root
// bound) (>= it, both bounds being <= the optimum), equal where proved. Also whether each
// optimum fits memory (the solver ignores capacity: a relaxation, so dip / optimum is if anything
// overstated) and which candidate the planner returned.
//
// Usage: bench_exact_study [--instances N] [--first-seed S] [--iterations I | --budget-ms T]
//                          [--node-limit L] [--max-ranks P] [--max-microbatches M]
//                          [--max-layers-per-rank K] [--max-stages S] [--target-proved K]
//                          [--csv FILE] [--verbose] [--only I] [--dump]
// --max-stages skips steps whose stage graph is larger (the solver rarely proves those); seeds
// are tried in order until --instances are sampled or --target-proved are proved.
// A plain program (no Google Benchmark timing): its output is the table of bench/README.md.
#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/emulate/emulator.hpp>
#include <pipeweaver/emulate/lower_bound.hpp>
#include <pipeweaver/emulate/schedule_emulator.hpp>
#include <pipeweaver/emulate/stage_cost_cache.hpp>
#include <pipeweaver/planner/planner.hpp>
#include <pipeweaver/schedule/lowering.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "support/exact_schedule.hpp"
#include "support/small_steps.hpp"

namespace pw = pipeweaver;

namespace {

std::string arg(int argc, char** argv, const char* name, std::string fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return fallback;
}
bool flag(int argc, char** argv, const char* name) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return true;
  return false;
}

struct Record {
  std::string label, source;
  std::size_t stages = 0;
  int ranks = 0, microbatches = 0;
  double dip = 0, opt = 0, tight = 0, classic = 0;  // ns; opt = best found when not proved
  double root = 0;  // ns: the solver's bound on the empty tuple, <= the optimum (proved or not)
  bool proved = false, opt_fits = true, skipped = false;
  std::int64_t nodes = 0, dominated = 0;
  double solve_s = 0, plan_s = 0;
};

double geomean(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double s = 0;
  for (double x : v) s += std::log(x);
  return std::exp(s / static_cast<double>(v.size()));
}

Record study_one(std::uint64_t seed, const pwtest::SmallStepLimits& limits, const pw::PlannerOptions& options, std::int64_t node_limit,
                 int max_stages, bool dump) {
  const pwtest::SmallStep st = pwtest::small_step(seed, limits);
  const pw::AnalyticCostModel cost(st.model, st.setup);
  Record rec;
  rec.label = st.label();
  const auto t0 = std::chrono::steady_clock::now();
  const pw::Planner<pw::AnalyticCostModel> planner(st.model, st.setup, cost, std::vector<pw::Batch>{st.batch}, options);
  const pw::PlanResult r = planner.plan(st.batch);
  const auto t1 = std::chrono::steady_clock::now();
  pw::StageCostCache<pw::AnalyticCostModel> cache(cost, st.model);
  const pwtest::PlanProblem pp = pwtest::plan_problem(r.plan, st.model, cache);
  rec.stages = pp.graph->nodes.size();
  rec.ranks = st.setup.pipeline_stages;
  rec.microbatches = st.setup.microbatches_per_step;
  if (max_stages > 0 && rec.stages > static_cast<std::size_t>(max_stages)) {
    rec.skipped = true;
    return rec;
  }
  if (dump) {  // the plan's timeline per rank, for diagnosis
    const auto& g = *pp.graph;
    const pw::ScheduleTiming t = pw::emulate_schedule(g, pp.plan_schedule, std::span<const pw::Nanoseconds>(pp.problem.latency),
                                                      [&](pw::NodeIndex u, pw::NodeIndex v) {
                                                        const auto& outs = g.nodes[static_cast<std::size_t>(u)].outputs;
                                                        for (std::size_t k = 0; k < outs.size(); ++k)
                                                          if (outs[k] == v) return pp.problem.out_transfer[static_cast<std::size_t>(u)][k];
                                                        return pw::Nanoseconds{0};
                                                      });
    const auto ht = pw::heads_and_tails(g, std::span<const pw::Nanoseconds>(pp.problem.latency), [&](pw::NodeIndex u, pw::NodeIndex v) {
      const auto& outs = g.nodes[static_cast<std::size_t>(u)].outputs;
      for (std::size_t k = 0; k < outs.size(); ++k)
        if (outs[k] == v) return pp.problem.out_transfer[static_cast<std::size_t>(u)][k];
      return pw::Nanoseconds{0};
    });
    for (std::size_t rk = 0; rk < pp.plan_schedule.ranks.size(); ++rk) {
      std::printf("rank %zu (busy %.2f ms):", rk, pw::to_ms(t.busy[rk]));
      for (const auto& x : pp.plan_schedule.ranks[rk]) {
        const auto n = static_cast<std::size_t>(x.node);
        const auto& sr = g.nodes[n].stage;
        std::printf(" [m%d c%d s%d %c %.2f-%.2f h%.2f q%.2f]", sr.module.value(), sr.chunk, sr.sub_microbatch.value(),
                    sr.pass == pw::Pass::forward ? 'F' : 'B', pw::to_ms(t.start[n]), pw::to_ms(t.end[n]), pw::to_ms(ht.head[n]),
                    pw::to_ms(ht.tail[n]));
      }
      std::printf("\n");
    }
  }
  const pwtest::ExactResult opt = pwtest::solve_exact(pp.problem, {.node_limit = node_limit, .incumbent = pp.plan_schedule});
  const auto t2 = std::chrono::steady_clock::now();
  if (dump) {  // the best schedule found, same format as dip's above
    const auto& g = *pp.graph;
    const pw::ScheduleTiming t = pw::emulate_schedule(g, opt.schedule, std::span<const pw::Nanoseconds>(pp.problem.latency),
                                                      [&](pw::NodeIndex u, pw::NodeIndex v) {
                                                        const auto& outs = g.nodes[static_cast<std::size_t>(u)].outputs;
                                                        for (std::size_t k = 0; k < outs.size(); ++k)
                                                          if (outs[k] == v) return pp.problem.out_transfer[static_cast<std::size_t>(u)][k];
                                                        return pw::Nanoseconds{0};
                                                      });
    std::printf("best found (%s):\n", opt.optimal ? "optimal" : "not proved");
    for (std::size_t rk = 0; rk < opt.schedule.ranks.size(); ++rk) {
      std::printf("rank %zu (busy %.2f ms):", rk, pw::to_ms(t.busy[rk]));
      for (const auto& x : opt.schedule.ranks[rk]) {
        const auto n = static_cast<std::size_t>(x.node);
        const auto& sr = g.nodes[n].stage;
        std::printf(" [m%d c%d s%d %c %.2f-%.2f]", sr.module.value(), sr.chunk, sr.sub_microbatch.value(),
                    sr.pass == pw::Pass::forward ? 'F' : 'B', pw::to_ms(t.start[n]), pw::to_ms(t.end[n]));
      }
      std::printf("\n");
    }
  }
  const pw::LowerBound lb = pw::lower_bound(r.plan, st.model, cost);
  // Does the optimal order fit memory? Lower it like a plan and emulate it.
  const pw::Plan best_plan = pw::lower(st.model, r.plan.partition, r.plan.sub_microbatches, *pp.graph, opt.schedule, cost, "exact", st.setup.name);
  const pw::EmulationResult e = pw::emulate(best_plan, st.model, st.setup, cost);
  rec.source = r.source;
  rec.dip = static_cast<double>(r.step_time.count());
  rec.opt = static_cast<double>(opt.step_time.count());
  rec.tight = static_cast<double>(lb.tight.count());
  rec.classic = static_cast<double>(lb.value.count());
  rec.root = static_cast<double>(opt.root_bound.count());
  rec.proved = opt.optimal;
  rec.opt_fits = e.fits_memory();
  rec.nodes = opt.nodes;
  rec.dominated = opt.dominated;
  rec.plan_s = std::chrono::duration<double>(t1 - t0).count();
  rec.solve_s = std::chrono::duration<double>(t2 - t1).count();
  if (e.step_time != opt.step_time) throw std::runtime_error("the lowered optimum emulates differently: " + rec.label);
  return rec;
}

void report(const std::vector<Record>& recs) {
  std::vector<double> dip_opt, tight_opt, classic_opt, dip_best_unproved, dip_tight_unproved, dip_bound_unproved, dip_best_all,
      dip_bound_all;
  double worst = 0;
  std::string worst_label;
  int exact = 0, fits = 0, proved = 0;
  std::map<std::string, int> sources;
  std::map<std::string, std::vector<double>> per_family;
  for (const Record& r : recs) {
    ++sources[r.source];
    // dip / optimum lies in [dip / best found, dip / max(tight, root bound)]: both the same when proved
    const double upper = r.proved ? r.dip / r.opt : r.dip / std::max(r.tight, r.root);
    dip_best_all.push_back(r.dip / r.opt);
    dip_bound_all.push_back(upper);
    if (!r.proved) {
      dip_best_unproved.push_back(r.dip / r.opt);
      dip_tight_unproved.push_back(r.dip / r.tight);
      dip_bound_unproved.push_back(upper);
      continue;
    }
    ++proved;
    const double q = r.dip / r.opt;
    dip_opt.push_back(q);
    per_family[r.label.substr(0, 3)].push_back(q);
    tight_opt.push_back(r.tight / r.opt);
    classic_opt.push_back(r.classic / r.opt);
    exact += r.dip == r.opt ? 1 : 0;
    fits += r.opt_fits ? 1 : 0;
    if (q > worst) {
      worst = q;
      worst_label = r.label;
    }
  }
  std::printf("\ninstances: %zu; proved optimal within the node limit: %d\n", recs.size(), proved);
  if (proved > 0) {
    std::printf("over the %d proved instances:\n", proved);
    std::printf("  dip / optimum: geometric mean %.4f, worst %.4f (%s)\n", geomean(dip_opt), worst, worst_label.c_str());
    std::printf("  dip exactly optimal on %d of %d (%.1f%%)\n", exact, proved, 100.0 * exact / proved);
    std::printf("  tight bound / optimum: geometric mean %.4f, lowest %.4f\n", geomean(tight_opt),
                *std::min_element(tight_opt.begin(), tight_opt.end()));
    std::printf("  classic bound / optimum: geometric mean %.4f, lowest %.4f\n", geomean(classic_opt),
                *std::min_element(classic_opt.begin(), classic_opt.end()));
    std::printf("  optimum fits memory on %d of %d\n", fits, proved);
    for (const auto& [fam, v] : per_family)
      std::printf("  %s: %zu instances, dip / optimum geometric mean %.4f, worst %.4f\n", fam.c_str(), v.size(), geomean(v),
                  *std::max_element(v.begin(), v.end()));
  }
  if (!dip_best_unproved.empty()) {
    std::printf("over the %zu unproved instances: dip / best found geometric mean %.4f (worst %.4f), dip / tight bound %.4f,\n",
                dip_best_unproved.size(), geomean(dip_best_unproved),
                *std::max_element(dip_best_unproved.begin(), dip_best_unproved.end()), geomean(dip_tight_unproved));
    std::printf("  dip / max(tight bound, solver root bound) %.4f (worst %.4f): dip / optimum lies between the two\n",
                geomean(dip_bound_unproved), *std::max_element(dip_bound_unproved.begin(), dip_bound_unproved.end()));
  }
  if (!dip_best_all.empty())
    std::printf("over all %zu instances: dip / optimum is at least %.4f and at most %.4f (geometric mean; worst at least %.4f)\n",
                dip_best_all.size(), geomean(dip_best_all), geomean(dip_bound_all),
                *std::max_element(dip_best_all.begin(), dip_best_all.end()));
  std::map<std::pair<int, int>, std::pair<int, int>> by_size;  // (P, M) -> (proved, instances)
  for (const Record& r : recs) {
    auto& c = by_size[{r.ranks, r.microbatches}];
    c.first += r.proved ? 1 : 0;
    ++c.second;
  }
  std::printf("proved / instances by P and M:");
  for (const auto& [pm, c] : by_size) std::printf(" P%dM%d %d/%d", pm.first, pm.second, c.first, c.second);
  std::printf("\n");
  std::printf("plan sources:");
  for (const auto& [s, k] : sources) std::printf(" %s=%d", s.c_str(), k);
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) try {
  const int instances = std::stoi(arg(argc, argv, "--instances", "240"));
  const int only = std::stoi(arg(argc, argv, "--only", "-1"));  // one instance (its index), for diagnosis
  const auto first_seed = static_cast<std::uint64_t>(std::stoull(arg(argc, argv, "--first-seed", "1")));
  const std::int64_t node_limit = std::stoll(arg(argc, argv, "--node-limit", "2000000"));
  pwtest::SmallStepLimits limits;
  limits.max_ranks = std::stoi(arg(argc, argv, "--max-ranks", "4"));
  limits.max_microbatches = std::stoi(arg(argc, argv, "--max-microbatches", "8"));
  limits.max_layers_per_rank = std::stoi(arg(argc, argv, "--max-layers-per-rank", "1"));
  pw::PlannerOptions options;
  const std::string budget_ms = arg(argc, argv, "--budget-ms", "");
  if (!budget_ms.empty()) {
    options.budget = std::chrono::nanoseconds(static_cast<std::int64_t>(std::stod(budget_ms) * 1e6));
  } else {
    options.budget = std::chrono::nanoseconds{0};
    options.iterations = std::stoll(arg(argc, argv, "--iterations", "100"));
  }
  const std::string csv = arg(argc, argv, "--csv", "");
  const int max_stages = std::stoi(arg(argc, argv, "--max-stages", "0"));        // 0: no cap
  const int target_proved = std::stoi(arg(argc, argv, "--target-proved", "0"));  // stop once this many are proved (0: all)
  const bool verbose = flag(argc, argv, "--verbose");
  std::printf("exact study: %d instances from seed %llu, P = 2..%d, M = 2..%d, backbone layers = P x 1..%d, dip %s, node limit %lld\n",
              instances, static_cast<unsigned long long>(first_seed), limits.max_ranks, limits.max_microbatches, limits.max_layers_per_rank,
              budget_ms.empty() ? (std::to_string(options.iterations) + " MCTS iterations").c_str() : (budget_ms + " ms budget").c_str(),
              static_cast<long long>(node_limit));
  std::vector<Record> recs;
  const auto t0 = std::chrono::steady_clock::now();
  int proved = 0, skipped = 0;
  for (int i = 0; i < instances && (target_proved <= 0 || proved < target_proved); ++i) {
    if (only >= 0 && i != only) continue;
    Record one = study_one(first_seed + static_cast<std::uint64_t>(i), limits, options, node_limit, max_stages, flag(argc, argv, "--dump"));
    if (one.skipped) {
      ++skipped;
      continue;
    }
    recs.push_back(std::move(one));
    const Record& r = recs.back();
    proved += r.proved ? 1 : 0;
    if (verbose)
      std::printf("  %3d %-44s %4zu stages  dip/opt %.4f  tight/opt %.4f  %s  %lld nodes (%lld dominated) %.2f s  (%s)\n", i,
                  r.label.c_str(), r.stages, r.dip / r.opt, r.tight / r.opt, r.proved ? "proved" : "NOT proved",
                  static_cast<long long>(r.nodes), static_cast<long long>(r.dominated), r.solve_s, r.source.c_str());
    std::fflush(stdout);
  }
  std::printf("\nsampled %d seeds; %d skipped for more than %d stages\n", static_cast<int>(recs.size()) + skipped, skipped, max_stages);
  report(recs);
  std::printf("total %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  if (!csv.empty()) {
    std::ofstream f(csv);
    f << "label,source,stages,dip_ns,opt_ns,tight_ns,classic_ns,root_ns,proved,opt_fits,nodes,plan_s,solve_s\n";
    for (const Record& r : recs)
      f << '"' << r.label << "\"," << r.source << ',' << r.stages << ',' << static_cast<std::int64_t>(r.dip) << ','
        << static_cast<std::int64_t>(r.opt) << ',' << static_cast<std::int64_t>(r.tight) << ',' << static_cast<std::int64_t>(r.classic)
        << ',' << static_cast<std::int64_t>(r.root) << ',' << r.proved << ',' << r.opt_fits << ',' << r.nodes << ',' << r.plan_s << ',' << r.solve_s << '\n';
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "exact_study: %s\n", e.what());
  return 1;
}
