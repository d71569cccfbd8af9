// Stage timing (ExecutorOptions::time_stages): one record per Forward / Backward of the rank's
// list, in list order, naming its stage and memory strategy; the durations of a runtime that
// times its own launches (TimesStages) are the ones it reports, read after the step's final
// synchronization; other runtimes get the wall clock of the call; with the option off nothing is
// recorded and the runtime's timer is never used.
#include <doctest/doctest.h>

#include "backends/host/plans.hpp"
#include "execute/one_rank_runtime.hpp"

#include <pipeweaver/execute.hpp>

#include <chrono>
#include <cstring>
#include <span>
#include <string_view>
#include <thread>
#include <vector>

namespace pw = pipeweaver;

namespace {

// One rank without peers; with `Timed`, it times launches itself: the k-th launch "takes"
// 1000·(k + 1) ns, which it reveals only after synchronize() (as a stream's events would).
template <bool Timed>
struct OneRank : execute_test::OneRankBase {
  struct stage_timer {
    int launch = 0;
  };
  std::vector<std::byte> memory;
  int launches = 0, timed_launches = 0;
  bool synchronized = false, elapsed_before_sync = false;

  void synchronize(int q) { synchronized = synchronized || q == 0; }
  template <class F>
  void launch(int, F&& f) {
    ++launches;
    f();
  }
  template <class F>
    requires Timed
  stage_timer launch_timed(int q, F&& f) {
    ++timed_launches;
    synchronized = false;
    launch(q, std::forward<F>(f));
    return stage_timer{launches - 1};
  }
  pw::Nanoseconds elapsed(const stage_timer& t)
    requires Timed
  {
    elapsed_before_sync = elapsed_before_sync || !synchronized;
    return pw::Nanoseconds{1000 * (t.launch + 1)};
  }
  std::span<std::byte> arena(std::size_t n) {
    memory.assign(n, std::byte{0});
    return memory;
  }
  void copy(int, std::span<std::byte> d, std::span<const std::byte> s) { std::memcpy(d.data(), s.data(), s.size()); }
  void fill_zero(int, std::span<std::byte> d) { std::memset(d.data(), 0, d.size()); }
  void accumulate(int, std::span<std::byte> d, std::span<const std::byte> s) { add_f32(d, s); }
};
static_assert(pw::Runtime<OneRank<false>> && !pw::TimesStages<OneRank<false>>);
static_assert(pw::Runtime<OneRank<true>> && pw::TimesStages<OneRank<true>>);

/// One rank, split backwards and a memory strategy on some stages, so every field is exercised.
pw::Plan one_rank_plan(const pw::ModelSpec& model) {
  pw::Batch b;
  for (int mb = 0; mb < 2; ++mb) {
    pw::Microbatch m;
    m.samples.push_back(pw::Sample{7, {pw::SampleItems{"image", {8, 12}}}});
    m.samples.push_back(pw::Sample{5, {pw::SampleItems{"image", {16}}}});
    b.microbatches.push_back(m);
  }
  const pw::Partition single{"single", 1, {test_plans::placement({2, 2}, {0, 0}, 1), test_plans::placement({4, 4}, {0, 0}, 0)}};
  pw::StageGraphOptions go;
  go.split_backward = true;
  pw::Plan plan = test_plans::make_plan(model, single, b, go);
  // Give the LLM's chunk 1 forward and its backward parts a strategy (the executor passes it through).
  for (pw::Action& a : plan.ranks[0]) {
    if (auto* f = std::get_if<pw::Forward>(&a); f && f->module == pw::ModuleId{1} && f->chunk == 1) f->strategy = pw::MemoryStrategy::full(2);
    if (auto* k = std::get_if<pw::Backward>(&a); k && k->module == pw::ModuleId{1} && k->chunk == 1) k->strategy = pw::MemoryStrategy::full(2);
  }
  return plan;
}

/// The plan's compute actions as the timings should name them (list order).
std::vector<pw::StageTiming> expected(const pw::Plan& plan) {
  std::vector<pw::StageTiming> out;
  for (std::size_t i = 0; i < plan.ranks[0].size(); ++i) {
    const pw::Action& a = plan.ranks[0][i];
    if (const auto* f = std::get_if<pw::Forward>(&a)) out.push_back({pw::RankId{0}, i, f->module, f->chunk, f->sub_microbatch, pw::Pass::forward, f->strategy, {}});
    if (const auto* k = std::get_if<pw::Backward>(&a)) out.push_back({pw::RankId{0}, i, k->module, k->chunk, k->sub_microbatch, k->pass, k->strategy, {}});
  }
  return out;
}

}  // namespace

TEST_CASE("executor stage timing: a runtime's own timer, read after the step's synchronization") {
  const auto model = test_plans::tiny_vlm();
  const pw::Plan plan = one_rank_plan(model);
  const std::vector<pw::StageTiming> want = expected(plan);
  REQUIRE(want.size() > 10);
  OneRank<true> rt;
  pw::ExecutorOptions o;
  o.time_stages = true;
  pw::Executor<OneRank<true>> ex(rt, o);
  ex.prepare(plan, model);
  CHECK(ex.stage_times().size() == want.size());
  struct Quiet {
    void forward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
    void backward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
  } quiet;
  for (int step = 0; step < 2; ++step) {
    ex.run(quiet, step);
    const auto got = ex.stage_times();
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
      CAPTURE(i);
      pw::StageTiming w = want[i];
      w.duration = pw::Nanoseconds{1000 * (static_cast<std::int64_t>(step * want.size() + i) + 1)};  // the launch counter runs on
      CHECK(got[i] == w);
    }
  }
  CHECK(rt.timed_launches == 2 * static_cast<int>(want.size()));
  CHECK_FALSE(rt.elapsed_before_sync);
}

TEST_CASE("executor stage timing: the wall clock of each call without a runtime timer, nothing when off") {
  const auto model = test_plans::tiny_vlm();
  const pw::Plan plan = one_rank_plan(model);
  const std::vector<pw::StageTiming> want = expected(plan);
  // Callbacks that sleep 3 ms in one chosen call: its record is at least that long (sleep_for
  // never returns early); the others' are whatever they are.
  struct Sleepy {
    std::size_t calls = 0, slow = 0;
    void hit() {
      if (calls++ == slow) std::this_thread::sleep_for(std::chrono::milliseconds(3));
    }
    void forward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) { hit(); }
    void backward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) { hit(); }
  };
  SUBCASE("on") {
    OneRank<false> rt;
    pw::ExecutorOptions o;
    o.time_stages = true;
    pw::Executor<OneRank<false>> ex(rt, o);
    ex.prepare(plan, model);
    Sleepy cb{0, want.size() / 2};
    ex.run(cb);
    const auto got = ex.stage_times();
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
      CAPTURE(i);
      pw::StageTiming w = want[i];
      w.duration = got[i].duration;
      CHECK(got[i] == w);
      CHECK(got[i].duration.count() >= 0);
    }
    CHECK(got[want.size() / 2].duration >= pw::from_ms(3));
  }
  SUBCASE("off") {
    OneRank<true> rt;
    pw::Executor<OneRank<true>> ex(rt, pw::ExecutorOptions{});
    ex.prepare(plan, model);
    Sleepy cb{0, want.size() + 1};
    ex.run(cb);
    CHECK(ex.stage_times().empty());
    CHECK(rt.timed_launches == 0);
    CHECK(rt.launches == static_cast<int>(want.size()));
  }
}
