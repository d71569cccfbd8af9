// Executing a plan in emulated time (host/timed.hpp): stage callbacks that sleep for their
// cost-model latency and a runtime whose messages arrive after their modeled transfer time.
// Truth: the emulator (emulate/emulator.hpp). Since every event of the timed run happens no
// earlier than its emulated time, the measured step is never shorter than X × emulated; and the
// executor's overhead per action is small, so it is not much longer either.
#include <doctest/doctest.h>

#include "backends/host/plans.hpp"

#include <pipeweaver/emulate/emulator.hpp>
#include <pipeweaver/emulate/stage_cost_cache.hpp>
#include <pipeweaver/execute/executor.hpp>
#include <pipeweaver/host.hpp>
#include <pipeweaver/host/timed.hpp>
#include <pipeweaver/io/workload_json.hpp>

#include <chrono>
#include <exception>
#include <string>
#include <thread>
#include <vector>

namespace pw = pipeweaver;

namespace {

/// Forward 1 ms, backward 2 ms (3 ms for the LLM's last chunk: its loss), every message
/// `transfer_ms` (bytes are ignored).
struct StepCost {
  double transfer_ms = 0;
  template <class S, class M>
  pw::Nanoseconds latency(const S& s, const M&, const pw::MemoryStrategy&) const {
    if (s.pass() == pw::Pass::forward) return pw::from_ms(1);
    return pw::from_ms(s.module().value() == 1 && s.chunk() == 7 ? 3 : 2);
  }
  template <class S, class M>
  pw::Bytes activation_bytes(const S&, const M&, const pw::MemoryStrategy&) const {
    return pw::Bytes{0};
  }
  template <class S, class M>
  pw::Bytes output_bytes(const S&, const M&) const {
    return pw::Bytes{4096};
  }
  pw::Nanoseconds transfer_time(pw::Bytes) const {
    return pw::Nanoseconds{static_cast<std::int64_t>(transfer_ms * 1e6)};
  }
};
static_assert(pw::CostModel<StepCost, pw::StageSpec, pw::SubMicrobatchSpec>);

struct Timed {
  std::chrono::nanoseconds measured{0};
  std::vector<std::size_t> calls;
};

/// One step of `plan` on four threads with TimedRuntime and SleepingCallbacks.
Timed run_timed(const pw::Plan& plan, const pw::ModelSpec& model, const StepCost& cost, double scale) {
  const int P = plan.rank_count();
  pw::host::Options options;
  options.timeout = std::chrono::seconds(30);
  options.executor.sizes.item_output_bytes = [](const pw::StageSpec&, const pw::SubMicrobatchSpec&, std::size_t) {
    return std::size_t{16};
  };
  pw::host::World world(P, options);
  pw::host::LinkClocks clocks(P);
  std::vector<std::unique_ptr<pw::host::TimedRuntime>> runtimes;
  std::vector<std::unique_ptr<pw::Executor<pw::host::TimedRuntime>>> executors;
  std::vector<pw::host::SleepingCallbacks> callbacks(static_cast<std::size_t>(P));
  for (int r = 0; r < P; ++r) {
    runtimes.push_back(std::make_unique<pw::host::TimedRuntime>(world, pw::RankId{r}, clocks));
    executors.push_back(std::make_unique<pw::Executor<pw::host::TimedRuntime>>(*runtimes.back(), options.executor));
    pw::StageCostCache<StepCost> cache(cost, model);
    clocks.prepare(plan, pw::RankId{r}, cost, scale);
    callbacks[static_cast<std::size_t>(r)].prepare(plan, pw::RankId{r}, cache, scale);
    runtimes.back()->begin_step(plan.transfers.size());
    executors.back()->prepare(plan, model);
  }
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(P));
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int r = 0; r < P; ++r)
    threads.emplace_back([&, r] {
      pw::host::reduce_timer_slack();
      try {
        executors[static_cast<std::size_t>(r)]->run(callbacks[static_cast<std::size_t>(r)]);
      } catch (...) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  Timed out;
  out.measured = std::chrono::steady_clock::now() - t0;
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
  for (const auto& c : callbacks) out.calls.push_back(c.calls());
  return out;
}

std::size_t compute_actions(const pw::Plan& plan, int r) {
  std::size_t n = 0;
  for (const auto& a : plan.ranks[static_cast<std::size_t>(r)]) n += std::holds_alternative<pw::Forward>(a) || std::holds_alternative<pw::Backward>(a) ? 1 : 0;
  return n;
}

}  // namespace

TEST_CASE("host timed run: measured step time tracks X times the emulated one, transfers included") {
  const pw::ModelSpec model = test_plans::tiny_vlm();
  const pw::Setup setup = pw::io::read_setup(std::string(PIPEWEAVER_WORKLOADS_DIR) + "/setups/cpu-pp4.json");
  pw::Batch batch;
  for (int mb = 0; mb < 3; ++mb) {
    pw::Microbatch m;
    for (int s = 0; s < 2; ++s) {
      pw::Sample sample;
      sample.text = 8;
      sample.items.push_back(pw::SampleItems{"image", {8, 12}});
      m.samples.push_back(sample);
    }
    batch.microbatches.push_back(m);
  }
  const pw::Plan plan = test_plans::make_plan(model, test_plans::dip_partition(2, 1), batch);
  REQUIRE_FALSE(plan.transfers.empty());

  for (double transfer_ms : {0.0, 4.0}) {
    CAPTURE(transfer_ms);
    const StepCost cost{transfer_ms};
    const double scale = 2.0;  // 2 ms per forward
    const pw::EmulationResult e = pw::emulate(plan, model, setup, cost);
    const auto emulated = pw::host::scaled(e.step_time, scale);
    const Timed t = run_timed(plan, model, cost, scale);
    for (int r = 0; r < plan.rank_count(); ++r) CHECK(t.calls[static_cast<std::size_t>(r)] == compute_actions(plan, r));
    const double m_ms = static_cast<double>(t.measured.count()) / 1e6, e_ms = static_cast<double>(emulated.count()) / 1e6;
    MESSAGE("transfers of " << transfer_ms << " ms: emulated " << e_ms << " ms, measured " << m_ms << " ms");
    // Never faster than the model (the clock read before the threads start, so no slack needed) ...
    CHECK(m_ms >= e_ms);
    // ... and the overhead stays small (loose: the machine may be busy, and sanitizers slow it).
    CHECK(m_ms <= 1.5 * e_ms + 50.0);
  }
  // The transfers' time matters for this plan, so the check above saw the link model at work.
  CHECK(pw::emulate(plan, model, setup, StepCost{4.0}).step_time > pw::emulate(plan, model, setup, StepCost{0.0}).step_time);
}

TEST_CASE("host timed run: a stage call out of the plan's order is an error, not a silent sleep") {
  const pw::ModelSpec model = test_plans::tiny_vlm();
  pw::Batch batch;
  pw::Microbatch m;
  pw::Sample sample;
  sample.text = 8;
  sample.items.push_back(pw::SampleItems{"image", {8}});
  m.samples.push_back(sample);
  batch.microbatches.push_back(m);
  const pw::Plan plan = test_plans::make_plan(model, test_plans::dip_partition(2, 1), batch);
  const StepCost cost{};
  pw::StageCostCache<StepCost> cache(cost, model);
  pw::host::SleepingCallbacks cb;
  cb.prepare(plan, pw::RankId{0}, cache, 1e-6);
  REQUIRE(cb.stages() == compute_actions(plan, 0));
  pw::StageIO io;
  // Rank 0's first action is a forward; a backward of the same stage is out of order.
  const auto& first = std::get<pw::Forward>(plan.ranks[0].front());
  const pw::StageSpec wrong = pw::StageSpec::of(plan.partition, first.module, first.chunk, pw::Pass::backward);
  CHECK_THROWS_AS(cb.backward(wrong, plan.sub_microbatch(first.sub_microbatch), io), pw::Error);
  pw::host::SleepingCallbacks fresh;
  fresh.prepare(plan, pw::RankId{0}, cache, 1e-6);
  const pw::StageSpec right = pw::StageSpec::of(plan.partition, first.module, first.chunk, pw::Pass::forward);
  CHECK_NOTHROW(fresh.forward(right, plan.sub_microbatch(first.sub_microbatch), io));
  CHECK(fresh.calls() == 1);
}
