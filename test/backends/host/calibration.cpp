// Online calibration in the host trainer loop (host/training.hpp, host/calibration.hpp), in
// emulated time: the ranks' stages really take twice what the planner's analytic model says
// (their "true" model has twice its α factors). With lookahead 2, steps 0..2 are searched before
// the first calibration (after step 0) and steps 3.. after it. Truths:
//  * every step hands over one timing per Forward / Backward of its plan, each at least the
//    scaled true latency of its stage (a sleep never ends early), and a step never lasts less
//    than X × the true model's emulation of its plan;
//  * with a device clock (a runtime that times its launches itself, as a GPU's events would, so
//    the host's scheduling adds nothing: ExecutorOptions::time_stages with TimesStages), the fit
//    recovers α = 2, and the planner's step time of every step planned after the first
//    calibration is within 5% of the true model's emulation of that plan, against about half of
//    it before;
//  * with the wall clock (what `pipeweaver run --calibrate` does), the emulated / measured ratio
//    of the calibrated steps is far above that of the initial ones and near 1. Ratios only, with
//    a time scale that makes a stage last milliseconds, and wide tolerances: the machine may be
//    busy.
#include <doctest/doctest.h>

#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/cost/online_calibration.hpp>
#include <pipeweaver/data/packing.hpp>
#include <pipeweaver/emulate/emulator.hpp>
#include <pipeweaver/emulate/stage_cost_cache.hpp>
#include <pipeweaver/host.hpp>
#include <pipeweaver/io/workload_json.hpp>
#include <pipeweaver/planner/planner.hpp>

#include <chrono>
#include <map>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

namespace pw = pipeweaver;

namespace {

const std::string W = PIPEWEAVER_WORKLOADS_DIR;
using Cost = pw::AnalyticCostModel;

Cost times(const Cost& base, double k) {
  pw::AnalyticOptions o = base.options();
  o.alpha_flops *= k;
  o.alpha_memory *= k;
  o.alpha_network *= k;
  return Cost(base.model(), base.setup(), o);
}

/// A timed runtime with a device clock: each stage launch reports the duration the stage was
/// given (its scaled true latency), whatever the host thread's scheduling did.
class DeviceClockRuntime : public pw::host::TimedRuntime {
 public:
  struct stage_timer {
    std::size_t launch = 0;
  };
  using TimedRuntime::TimedRuntime;
  template <class F>
  stage_timer launch_timed(queue_type q, F&& f) {
    launch(q, std::forward<F>(f));
    return stage_timer{launches_++};
  }
  pw::Nanoseconds elapsed(const stage_timer& t) const { return durations_.at(t.launch); }
  void begin(std::vector<pw::Nanoseconds> durations) {
    durations_ = std::move(durations);
    launches_ = 0;
  }

 private:
  std::vector<pw::Nanoseconds> durations_;  // per stage launch of the step, in list order
  std::size_t launches_ = 0;
};
static_assert(pw::Runtime<DeviceClockRuntime> && pw::TimesStages<DeviceClockRuntime>);

/// EmulatedTimeRank's parts with the device-clock runtime.
class DeviceClockRank {
 public:
  DeviceClockRank(pw::host::World& world, pw::RankId rank, pw::host::LinkClocks& clocks, const Cost& truth, const pw::ModelSpec& model,
                  double scale)
      : rank_(rank), runtime_(world, rank, clocks), clocks_(&clocks), truth_(&truth), cache_(truth, model), scale_(scale) {
    pw::host::reduce_timer_slack();
  }
  DeviceClockRuntime& runtime() noexcept { return runtime_; }
  pw::host::SleepingCallbacks& callbacks() noexcept { return callbacks_; }
  void prepare(const pw::Plan& plan, std::int64_t) {
    clocks_->prepare(plan, rank_, *truth_, scale_);
    callbacks_.prepare(plan, rank_, cache_, scale_);
    runtime_.begin_step(plan.transfers.size());
    std::vector<pw::Nanoseconds> durations;
    for (const pw::Action& a : plan.ranks.at(rank_.index()))
      std::visit(
          [&](const auto& x) {
            using X = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<X, pw::Forward> || std::is_same_v<X, pw::Backward>) {
              pw::Pass pass = pw::Pass::forward;
              if constexpr (std::is_same_v<X, pw::Backward>) pass = x.pass;
              const auto lat = cache_.stage_cost(pw::StageSpec::of(plan.partition, x.module, x.chunk, pass), plan.sub_microbatch(x.sub_microbatch), x.strategy).latency;
              durations.push_back(pw::Nanoseconds{pw::host::scaled(lat, scale_).count()});
            }
          },
          a);
    runtime_.begin(std::move(durations));
  }

 private:
  pw::RankId rank_;
  DeviceClockRuntime runtime_;
  pw::host::LinkClocks* clocks_;
  const Cost* truth_;
  pw::StageCostCache<Cost> cache_;
  double scale_;
  pw::host::SleepingCallbacks callbacks_;
};

struct Seen {
  std::size_t stages = 0, compute_actions = 0;
  bool each_at_least_its_true_latency = true;
  pw::Nanoseconds true_step{0};  ///< the true model's emulation of the step's plan
};

struct Run {
  pw::host::TrainingReport report;
  std::vector<Seen> seen;
  std::vector<pw::host::CalibrationRecord> records;
  pw::AnalyticOptions fitted;
};

constexpr double scale = 0.5;  // stages of about 1 to 10 ms
constexpr int steps = 7;

/// Seven steps of tiny-vlm, the stages taking twice the planner's latencies, calibrated after
/// each step; `device_clock`: the stage timings come from DeviceClockRuntime, else the wall clock.
Run train(bool device_clock) {
  const pw::ModelSpec model = pw::io::read_model(W + "/models/tiny-vlm.json");
  const pw::Setup setup = pw::io::read_setup(W + "/setups/cpu-pp4.json");
  const pw::DatasetSpec dataset = pw::io::read_dataset(W + "/datasets/vlm-captions.json");
  const Cost believed(model, setup);
  const Cost truth = times(believed, 2.0);
  const int P = setup.pipeline_stages;
  std::vector<pw::Batch> batches;
  for (int k = 0; k < steps; ++k) batches.push_back(pw::sample_step(model, dataset, setup, 3, k));

  pw::PlannerOptions po;
  po.budget = std::chrono::nanoseconds{0};
  po.iterations = 2;
  po.partition_iterations = 1;
  po.compare.profile_steps = 1;
  pw::Planner<Cost> planner(model, setup, believed, dataset, po);
  pw::AnalyticCalibrator calibrator(model, setup, believed.options(), {.window = 4});

  Run run;
  pw::StageCostCache<Cost> true_costs(truth, model);
  pw::host::TrainingOptions options;
  options.lookahead = 2;
  options.grace = std::chrono::seconds(60);  // no fallback: every step is planned by the search
  options.host.timeout = std::chrono::minutes(2);
  options.host.channel_capacity = std::size_t{1} << 16;
  options.host.executor.sizes.item_output_bytes = [](const pw::StageSpec&, const pw::SubMicrobatchSpec&, std::size_t) { return std::size_t{16}; };
  options.on_step_measured = [&](const pw::host::MeasuredStep& m) {
    Seen s;
    s.stages = m.stages.size();
    for (const auto& list : m.plan->ranks)
      for (const auto& a : list) s.compute_actions += std::holds_alternative<pw::Forward>(a) || std::holds_alternative<pw::Backward>(a);
    for (const pw::StageTiming& t : m.stages) {
      const pw::StageSpec st = pw::StageSpec::of(m.plan->partition, t.module, t.chunk, t.pass);
      const auto lat = true_costs.stage_cost(st, m.plan->sub_microbatch(t.sub_microbatch), t.strategy).latency;
      s.each_at_least_its_true_latency = s.each_at_least_its_true_latency && t.duration.count() >= pw::host::scaled(lat, scale).count();
    }
    s.true_step = pw::emulate(*m.plan, model, setup, truth).step_time;
    run.seen.push_back(s);
  };
  options.calibrate = pw::host::calibrate_planner(planner, calibrator, scale, [&](const pw::host::CalibrationRecord& r) { run.records.push_back(r); });
  pw::host::LinkClocks clocks(P);
  const std::span<const pw::Batch> span(batches);
  if (device_clock)
    run.report = pw::host::run_training(planner, span, model, P, [&](pw::host::World& w, pw::RankId r) { return DeviceClockRank(w, r, clocks, truth, model, scale); }, options);
  else
    run.report = pw::host::run_training(planner, span, model, P, [&](pw::host::World& w, pw::RankId r) {
      return pw::host::EmulatedTimeRank<Cost>(w, r, clocks, truth, model, scale);
    }, options);
  run.fitted = calibrator.options();
  return run;
}

/// What holds whatever the clock: the hand-over, the versions, the bounds by construction.
void check_common(const Run& run) {
  REQUIRE(run.seen.size() == static_cast<std::size_t>(steps));
  REQUIRE(run.records.size() == static_cast<std::size_t>(steps));
  REQUIRE(run.report.steps.size() == static_cast<std::size_t>(steps));
  for (std::size_t k = 0; k < run.seen.size(); ++k) {
    CAPTURE(k);
    const pw::host::TrainingStep& s = run.report.steps[k];
    CHECK(run.seen[k].stages == run.seen[k].compute_actions);
    CHECK(run.seen[k].each_at_least_its_true_latency);
    CHECK(run.records[k].step == static_cast<int>(k));
    CHECK(run.records[k].samples == run.seen[k].stages);
    CHECK(s.measured >= pw::Nanoseconds{pw::host::scaled(run.seen[k].true_step, scale).count()});
    CHECK_FALSE(s.fallback);
    CHECK(s.cost_version == (k < 3 ? 0u : run.records[k - 3].cost_version));  // searched after step k - 3's calibration
  }
  CHECK(run.records[0].changed);
}

}  // namespace

TEST_CASE("host training: calibration with a device clock brings the planner's step times within 5% of the truth") {
  const Run run = train(true);
  check_common(run);
  MESSAGE("fitted alpha: flops " << run.fitted.alpha_flops << ", memory " << run.fitted.alpha_memory);
  CHECK(run.fitted.alpha_flops == doctest::Approx(2.0).epsilon(0.01));
  CHECK(run.fitted.alpha_memory == doctest::Approx(2.0).epsilon(0.01));
  for (std::size_t k = 0; k < run.seen.size(); ++k) {
    CAPTURE(k);
    const double ratio = static_cast<double>(run.report.steps[k].planned.count()) / static_cast<double>(run.seen[k].true_step.count());
    MESSAGE("step " << k << " (cost version " << run.report.steps[k].cost_version << "): planned / true step time " << ratio);
    if (k < 3) {
      CHECK(ratio == doctest::Approx(0.5).epsilon(0.05));
    } else {
      CHECK(ratio == doctest::Approx(1.0).epsilon(0.05));
    }
  }
}

TEST_CASE("host training: calibration with the wall clock brings emulated step times near the measured ones") {
  const Run run = train(false);
  check_common(run);
  double before = 0, after = 0;
  for (std::size_t k = 0; k < run.seen.size(); ++k) {
    const pw::host::TrainingStep& s = run.report.steps[k];
    const double ratio = static_cast<double>(pw::host::scaled(s.planned, scale).count()) / static_cast<double>(s.measured.count());
    MESSAGE("step " << k << " (cost version " << s.cost_version << "): emulated / measured " << ratio);
    (k < 3 ? before : after) += ratio / (k < 3 ? 3.0 : static_cast<double>(steps - 3));
  }
  MESSAGE("fitted alpha: flops " << run.fitted.alpha_flops << ", memory " << run.fitted.alpha_memory << "; mean ratio " << before << " -> " << after);
  CHECK(before < 0.6);  // the stages take twice the planner's times (the links do not)
  CHECK(after > 1.4 * before);
  CHECK(after > 0.6);
  CHECK(after < 1.4);
}
