// The generic executor over a single-rank runtime written here (the reference example of a
// type satisfying Runtime): routing, gathers, scatters, stashes and the pool, checked by the
// pattern callbacks; and the errors of plans it cannot run.
#include <doctest/doctest.h>

#include "backends/host/plans.hpp"
#include "execute/one_rank_runtime.hpp"
#include "execute/pattern_callbacks.hpp"

#include <pipeweaver/execute.hpp>

#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace pw = pipeweaver;

namespace {

// One rank, no peers: compute runs at once, memory is a vector, float32 accumulation.
struct SingleRankRuntime : execute_test::OneRankBase {
  std::vector<std::byte> memory;
  std::vector<std::string> log;  // what ran, in order

  void synchronize(int) {}
  template <class F>
  void launch(int, F&& f) {
    log.push_back("launch");
    f();
  }
  std::span<std::byte> arena(std::size_t n) {
    memory.assign(n, std::byte{0xAB});  // garbage: callbacks must not rely on contents
    return memory;
  }
  void copy(int, std::span<std::byte> d, std::span<const std::byte> s) {
    log.push_back("copy");
    std::memcpy(d.data(), s.data(), s.size());
  }
  void fill_zero(int, std::span<std::byte> d) {
    log.push_back("zero");
    std::memset(d.data(), 0, d.size());
  }
  void accumulate(int, std::span<std::byte> d, std::span<const std::byte> s) {
    log.push_back("accumulate");
    add_f32(d, s);
  }
};
static_assert(pw::Runtime<SingleRankRuntime>);
static_assert(!pw::EagerSend<SingleRankRuntime>);

pw::Batch batch_with_images() {
  pw::Batch b;
  for (int mb = 0; mb < 2; ++mb) {
    pw::Microbatch m;
    m.samples.push_back(pw::Sample{7, {pw::SampleItems{"image", {8, 12, 4}}}});
    m.samples.push_back(pw::Sample{9, {}});  // text only
    m.samples.push_back(pw::Sample{5, {pw::SampleItems{"image", {16}}}});
    b.microbatches.push_back(m);
  }
  return b;
}

pw::Partition single_rank(std::int64_t vit_items, std::int64_t llm_items) {
  return pw::Partition{"single", 1,
                       {test_plans::placement({2, 2}, {0, 0}, vit_items), test_plans::placement({4, 4}, {0, 0}, llm_items)}};
}

}  // namespace

TEST_CASE("executor: one rank runs a whole step with gathers and scatters") {
  const auto model = test_plans::tiny_vlm();
  const auto batch = batch_with_images();
  for (std::int64_t vit_items : {1, 2, 0}) {
    for (std::int64_t llm_items : {1, 0}) {
      CAPTURE(vit_items);
      CAPTURE(llm_items);
      const auto plan = test_plans::make_plan(model, single_rank(vit_items, llm_items), batch);
      CHECK(plan.transfers.empty());
      SingleRankRuntime rt;
      pattern::Callbacks cb(model, batch, 1);
      cb.last_chunk_ = 1;
      pw::ExecutorOptions o;
      o.sizes = cb.sizes();
      pw::Executor<SingleRankRuntime> ex(rt, o);
      ex.prepare(plan, model);
      CHECK_NOTHROW(ex.run(cb));
      CHECK(cb.calls() == static_cast<long>(plan.ranks[0].size()));
      // Gathers copy (one per image and LLM sub-microbatch); scatters zero then accumulate.
      long copies = 0, zeros = 0;
      for (const auto& s : rt.log) {
        copies += s == "copy";
        zeros += s == "zero";
      }
      // Every image lands in exactly one LLM item (8 gather copies), and a ViT sub-microbatch
      // whose images feed several LLM sub-microbatches sums their gradients (a copy, then adds).
      long sums = 0;
      for (const auto& v : plan.sub_microbatches) {
        if (v.module() != pw::ModuleId{0}) continue;
        int consumers = 0;
        for (const auto& l : plan.sub_microbatches) {
          if (l.module() != pw::ModuleId{1} || l.microbatch() != v.microbatch()) continue;
          bool shared = false;
          for (const auto& a : v.items())
            for (const auto& b : l.items()) shared = shared || a.sample == b.sample;
          consumers += shared;
        }
        sums += consumers > 1;
      }
      CHECK(copies == 8 + sums);
      CHECK(zeros > 0);
      CHECK(ex.pool_bytes() < ex.unpooled_bytes());  // lifetimes let buffers share memory
      // A second run of the same program gives the same answers.
      CHECK_NOTHROW(ex.run(cb));
    }
  }
}

TEST_CASE("executor: a plan the rank cannot run is rejected by prepare, naming rank and action") {
  const auto model = test_plans::tiny_vlm();
  const auto batch = batch_with_images();
  auto plan = test_plans::make_plan(model, single_rank(1, 1), batch);
  SingleRankRuntime rt;
  pw::Executor<SingleRankRuntime> ex(rt);
  SUBCASE("a backward before its forward") {
    auto& list = plan.ranks[0];
    std::size_t b = 0;
    while (!std::holds_alternative<pw::Backward>(list[b])) ++b;
    const pw::Backward bw = std::get<pw::Backward>(list[b]);
    for (std::size_t i = 0; i < list.size(); ++i)
      if (auto* f = std::get_if<pw::Forward>(&list[i]); f && f->module == bw.module && f->chunk == bw.chunk && f->sub_microbatch == bw.sub_microbatch) {
        list.erase(list.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      }
    try {
      ex.prepare(plan, model);
      FAIL("accepted");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::invalid_plan);
      CHECK(std::string(e.context().path).rfind("rank 0, action ", 0) == 0);
    }
  }
  SUBCASE("a stage of a module the model does not have") {
    plan.ranks[0].insert(plan.ranks[0].begin(), pw::Forward{pw::ModuleId{7}, 0, pw::SubMicrobatchId{0}, {}});
    CHECK_THROWS_AS(ex.prepare(plan, model), pw::Error);
  }
  SUBCASE("a model with another module count") {
    auto other = model;
    other.modules.pop_back();
    CHECK_THROWS_AS(ex.prepare(plan, other), pw::Error);
  }
}

TEST_CASE("executor: a callback that throws aborts the runtime and names the action") {
  const auto model = test_plans::tiny_vlm();
  const auto plan = test_plans::make_plan(model, single_rank(1, 1), batch_with_images());
  struct Boom {
    int left = 3;
    void forward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {
      if (--left == 0) throw std::runtime_error("boom");
    }
    void backward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
  } cb;
  SingleRankRuntime rt;
  pw::Executor<SingleRankRuntime> ex(rt);
  try {
    ex.run(plan, model, cb);
    FAIL("no error");
  } catch (const pw::Error& e) {
    CHECK(e.kind() == pw::ErrorKind::execution);
    CHECK(e.message() == "forward callback threw: boom");
    CHECK(std::string(e.context().path).find("(Forward ") != std::string::npos);
  }
  CHECK(rt.stop);
}

TEST_CASE("action_label names modules, chunks, ranks and transfers") {
  const auto model = test_plans::tiny_vlm();
  pw::Plan plan;
  const pw::StageRef producer{pw::ModuleId{0}, 3, pw::SubMicrobatchId{5}, pw::Pass::forward};
  const pw::StageRef consumer{pw::ModuleId{1}, 0, pw::SubMicrobatchId{2}, pw::Pass::forward};
  plan.transfers.push_back(pw::Transfer{pw::RankId{1}, pw::RankId{2}, producer, consumer, pw::Bytes{8}});
  CHECK(pw::action_label(plan, model, pw::Forward{pw::ModuleId{0}, 3, pw::SubMicrobatchId{5}, {}}) ==
        "Forward vit chunk 3 sub-microbatch 5");
  CHECK(pw::action_label(plan, model, pw::Backward{pw::ModuleId{1}, 0, pw::SubMicrobatchId{2}, {}, pw::Pass::backward_input}) ==
        "Backward(backward_input) llm chunk 0 sub-microbatch 2");
  CHECK(pw::action_label(plan, model, pw::Send{pw::TransferId{0}}) ==
        "Send transfer 0 (Forward vit chunk 3 sub-microbatch 5 on rank 1 -> Forward llm chunk 0 sub-microbatch 2 on rank 2)");
  CHECK(pw::action_label(plan, model, pw::Wait{pw::TransferId{7}}) == "Wait transfer 7 (no such transfer)");
  CHECK(pw::action_label(plan, model, pw::Forward{pw::ModuleId{9}, 0, pw::SubMicrobatchId{0}, {}}) ==
        "Forward module 9 chunk 0 sub-microbatch 0");
  // The short form of the pictures.
  CHECK(pw::stage_label(model, pw::StageRef{pw::ModuleId{0}, 2, pw::SubMicrobatchId{17}, pw::Pass::backward_weight}) ==
        "Bw vit c2 s17");
}
