// The executor's promises on the host backend with four rank threads: every buffer carries a
// tag of who wrote it for which item (pattern callbacks), across ranks and on one rank, with
// whole and split backwards.
#include <doctest/doctest.h>

#include "backends/host/plans.hpp"
#include "execute/pattern_callbacks.hpp"

#include <pipeweaver/host.hpp>

#include <chrono>

namespace pw = pipeweaver;

TEST_CASE("host: buffers reach the right stage, item and rank") {
  const auto model = test_plans::tiny_vlm();
  const pw::Batch batch = test_plans::routing_batch();
  for (const auto& c : test_plans::routing_cases()) {
    CAPTURE(c.partition.name);
    CAPTURE(c.split);
    const auto plan = test_plans::make_plan(model, c.partition, batch, {.split_backward = c.split});
    pattern::Callbacks cb(model, batch, 4);
    cb.last_chunk_ = c.vit_last_chunk;
    pw::host::Options o;
    o.timeout = std::chrono::seconds(30);
    o.channel_capacity = 1;  // senders block often: exercises the channel's waits
    o.executor.sizes = cb.sizes();
    pw::host::HostExecutor ex(o);
    CHECK_NOTHROW(ex.run(plan, model, cb));
    long compute = 0;
    for (const auto& list : plan.ranks)
      for (const auto& a : list) compute += std::holds_alternative<pw::Forward>(a) || std::holds_alternative<pw::Backward>(a);
    CHECK(cb.calls() == compute);
  }
}

TEST_CASE("host: the in-process broadcast hands the root's plan to every rank") {
  const auto model = test_plans::tiny_vlm();
  pw::Batch batch;
  pw::Microbatch m;
  m.samples.push_back(pw::Sample{7, {pw::SampleItems{"image", {8}}}});
  batch.microbatches.push_back(m);
  const auto plan = test_plans::make_plan(model, test_plans::dip_partition(), batch);
  pw::host::InProcessBroadcast bcast(4, std::chrono::seconds(10));
  for (int root = 0; root < 4; root += 3) {
    std::vector<pw::Plan> got(4);
    std::vector<std::thread> threads;
    for (int r = 0; r < 4; ++r)
      threads.emplace_back([&, r] { got[static_cast<std::size_t>(r)] = pw::broadcast_plan(bcast, pw::RankId{r}, pw::RankId{root}, r == root ? &plan : nullptr); });
    for (auto& t : threads) t.join();
    for (const auto& p : got) CHECK(p == plan);
  }
  SUBCASE("a broadcast nobody roots times out instead of hanging") {
    pw::host::InProcessBroadcast lonely(2, std::chrono::milliseconds(50));
    std::vector<std::byte> bytes;
    CHECK_THROWS_AS(lonely(bytes, pw::RankId{1}, pw::RankId{0}), pw::Error);
  }
}
