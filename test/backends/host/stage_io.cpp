// What a stage callback learns about its call on the host backend: StageIO::sub_microbatch is
// the id of the sub-microbatch it is handed, and StageIO::step the step the caller gave
// HostExecutor::run (0 when it gave none). Truth: the plan's Forward and Backward actions of
// every rank, in order.
#include <doctest/doctest.h>

#include "backends/host/plans.hpp"

#include <pipeweaver/host.hpp>

#include <cstdint>
#include <variant>
#include <vector>

namespace pw = pipeweaver;

namespace {

struct Call {
  pw::StageSpec stage;
  const pw::SubMicrobatchSpec* smb = nullptr;
  pw::SubMicrobatchId id{0};
  std::int64_t step = -1;
};

/// Records every call per rank (each rank's thread appends to its own list only).
struct Recording {
  std::vector<std::vector<Call>> calls = std::vector<std::vector<Call>>(4);
  void forward(const pw::StageSpec& s, const pw::SubMicrobatchSpec& smb, pw::StageIO& io) { record(s, smb, io); }
  void backward(const pw::StageSpec& s, const pw::SubMicrobatchSpec& smb, pw::StageIO& io) { record(s, smb, io); }
  void record(const pw::StageSpec& s, const pw::SubMicrobatchSpec& smb, const pw::StageIO& io) {
    calls.at(io.rank.index()).push_back(Call{s, &smb, io.sub_microbatch, io.step});
  }
};

/// The calls of `rank` against its Forward / Backward actions.
void check_calls(const pw::Plan& plan, const std::vector<Call>& got, int rank, std::int64_t step) {
  std::size_t k = 0;
  for (const pw::Action& a : plan.ranks[static_cast<std::size_t>(rank)]) {
    pw::StageRef want;
    if (const auto* f = std::get_if<pw::Forward>(&a)) want = pw::StageRef{f->module, f->chunk, f->sub_microbatch, pw::Pass::forward};
    else if (const auto* b = std::get_if<pw::Backward>(&a)) want = pw::StageRef{b->module, b->chunk, b->sub_microbatch, b->pass};
    else continue;
    REQUIRE(k < got.size());
    const Call& c = got[k++];
    CAPTURE(k);
    CHECK(c.stage.module() == want.module);
    CHECK(c.stage.chunk() == want.chunk);
    CHECK(c.stage.pass() == want.pass);
    CHECK(c.id == want.sub_microbatch);
    CHECK(c.smb == &plan.sub_microbatch(c.id));  // the very spec the callback got
    CHECK(c.step == step);
  }
  CHECK(k == got.size());
}

}  // namespace

TEST_CASE("host: StageIO carries the call's sub-microbatch id and the step") {
  const auto model = test_plans::tiny_vlm();
  pw::Batch batch;
  for (int mb = 0; mb < 3; ++mb) {
    pw::Microbatch m;
    m.samples.push_back(pw::Sample{7, {pw::SampleItems{"image", {8, 12, 4}}}});
    m.samples.push_back(pw::Sample{9, {}});
    batch.microbatches.push_back(m);
  }
  const auto plan = test_plans::make_plan(model, test_plans::dip_partition(1, 1), batch, {.split_backward = true});
  REQUIRE(plan.rank_count() == 4);
  pw::host::HostExecutor ex;
  for (const std::int64_t step : {std::int64_t{-1}, std::int64_t{0}, std::int64_t{41}, std::int64_t{1} << 40}) {
    CAPTURE(step);
    Recording rec;
    if (step < 0) ex.run(plan, model, rec);  // no step given: step 0
    else ex.run(plan, model, rec, step);
    for (int r = 0; r < 4; ++r) {
      CAPTURE(r);
      check_calls(plan, rec.calls[static_cast<std::size_t>(r)], r, step < 0 ? 0 : step);
    }
  }
}
