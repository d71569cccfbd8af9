// The fault path: a callback that throws, or a transfer that never arrives, on one
// rank of four stops every rank within the timeout; the caller gets Error(execution) naming
// the rank, the action and the cause. (The lead runs these under TSan and ASan too.)
#include <doctest/doctest.h>

#include "backends/fault_fixtures.hpp"
#include "backends/host/plans.hpp"

#include <pipeweaver/host.hpp>

#include <chrono>
#include <stdexcept>
#include <string>

namespace pw = pipeweaver;
using namespace std::chrono_literals;

using test_faults::contains;
using test_faults::expect_failure;
using test_faults::NoOp;
using test_faults::small_batch;
using test_faults::ThrowOnRank;

TEST_CASE("host faults: the same plan runs cleanly without a fault") {
  const auto model = test_plans::tiny_vlm();
  const auto plan = test_plans::make_plan(model, test_plans::dip_partition(), small_batch());
  pw::host::HostExecutor ex;
  NoOp cb;
  CHECK_NOTHROW(ex.run(plan, model, cb));
  for (const auto& o : ex.outcomes()) CHECK(o.ok);
}

TEST_CASE("host faults: a throwing callback on rank 2 stops all four ranks with an error naming it") {
  const auto model = test_plans::tiny_vlm();
  const auto plan = test_plans::make_plan(model, test_plans::dip_partition(), small_batch());
  pw::host::Options o;
  o.timeout = 2s;
  pw::host::HostExecutor ex(o);
  ThrowOnRank cb{2};
  const auto start = std::chrono::steady_clock::now();
  const auto f = expect_failure(ex, plan, model, cb, pw::ErrorKind::execution, "rank 2, action ");
  INFO(f.what);
  CHECK(contains(f.path, "(Backward"));
  CHECK(contains(f.what, "backward callback threw: injected failure"));
  // Nobody waited for a timeout: the abort woke them.
  CHECK(std::chrono::steady_clock::now() - start < 1500ms);
  REQUIRE(ex.outcomes().size() == 4);
  for (int r = 0; r < 4; ++r) {
    CAPTURE(r);
    CHECK_FALSE(ex.outcomes()[static_cast<std::size_t>(r)].ok);
    CHECK(ex.outcomes()[static_cast<std::size_t>(r)].kind == (r == 2 ? pw::ErrorKind::execution : pw::ErrorKind::cancelled));
  }
  SUBCASE("the executor runs the next step normally") {
    NoOp ok;
    CHECK_NOTHROW(ex.run(plan, model, ok));
  }
}

TEST_CASE("host faults: a lost transfer stops every rank within the timeout") {
  const auto model = test_plans::tiny_vlm();
  const auto plan = test_plans::make_plan(model, test_plans::dip_partition(), small_batch());
  // A transfer into rank 1 from the middle of the step.
  std::size_t lost = plan.transfers.size();
  for (std::size_t t = plan.transfers.size() / 2; t < plan.transfers.size(); ++t)
    if (plan.transfers[t].to == pw::RankId{1}) {
      lost = t;
      break;
    }
  REQUIRE(lost < plan.transfers.size());
  for (const bool last_on_link : {false, true}) {
    // Lost alone (the receiver times out), or followed by other messages on its link (the
    // receiver sees the wrong message at once).
    CAPTURE(last_on_link);
    pw::host::Options o;
    o.timeout = 300ms;
    o.drop_transfer = pw::TransferId{static_cast<pw::TransferId::rep>(lost)};
    if (last_on_link) {
      // The last transfer of the plan on some link: nothing comes after it there.
      for (std::size_t t = plan.transfers.size(); t-- > 0;) {
        bool later = false;
        for (std::size_t u = t + 1; u < plan.transfers.size(); ++u)
          later = later || (plan.transfers[u].from == plan.transfers[t].from && plan.transfers[u].to == plan.transfers[t].to);
        if (!later) {
          o.drop_transfer = pw::TransferId{static_cast<pw::TransferId::rep>(t)};
          break;
        }
      }
    }
    const auto dropped = plan.transfers[o.drop_transfer->index()];
    pw::host::HostExecutor ex(o);
    NoOp cb;
    const auto start = std::chrono::steady_clock::now();
    const auto f = expect_failure(ex, plan, model, cb, pw::ErrorKind::execution,
                                  "rank " + std::to_string(dropped.to.value()) + ", action ");
    INFO(f.what);
    CHECK(contains(f.path, "(Wait transfer "));
    CHECK((contains(f.what, "did not arrive within 300 ms") || contains(f.what, "was expected (a message was lost")));
    if (last_on_link) CHECK(contains(f.what, "transfer " + std::to_string(o.drop_transfer->value()) + " from rank"));
    CHECK(std::chrono::steady_clock::now() - start < 300ms + 1500ms);
    // Every rank returned: the receiver with the error, the others stopped by it (or done,
    // when their work did not depend on the lost message).
    for (std::size_t r = 0; r < ex.outcomes().size(); ++r) {
      const auto& out = ex.outcomes()[r];
      if (r == dropped.to.index()) CHECK((!out.ok && out.kind == pw::ErrorKind::execution));
      else CHECK((out.ok || out.kind == pw::ErrorKind::cancelled));
    }
  }
}

TEST_CASE("host faults: a plan that puts an action on the wrong rank is rejected before it hangs") {
  const auto model = test_plans::tiny_vlm();
  auto plan = test_plans::make_plan(model, test_plans::dip_partition(), small_batch());
  std::swap(plan.ranks[0], plan.ranks[1]);
  pw::host::Options o;
  o.timeout = 2s;
  pw::host::HostExecutor ex(o);
  NoOp cb;
  const auto f = expect_failure(ex, plan, model, cb, pw::ErrorKind::invalid_plan, "rank ");
  INFO(f.what);
  CHECK((contains(f.what, "placed on rank") || contains(f.what, "goes from rank")));
}
