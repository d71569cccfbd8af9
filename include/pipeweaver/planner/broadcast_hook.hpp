#pragma once
// Plans travel from the planning rank (the root) to every rank as their binary form
// (schedule/plan_binary.hpp) through a user-supplied broadcast: MPI_Bcast or an NCCL broadcast
// in a real job, host::InProcessBroadcast when the ranks are threads of one process.
//
// A BroadcastHook is that collective already bound to the calling rank: on the root `bytes`
// holds the message when it is called; when it returns, `bytes` holds the root's message on
// every rank. Protocol on top of it, one broadcast per step:
//   * a non-empty message is a plan (to_binary);
//   * an empty message says the root has no plan for this step (its planner failed), so the
//     other ranks get an error instead of waiting for a plan that never comes.
// std-only.
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/execute/plan_broadcast.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/plan_binary.hpp"

namespace pipeweaver {

using BroadcastHook = std::function<void(std::vector<std::byte>&)>;

/// Binds a BroadcastFunction (f(bytes, rank, root), see execute/plan_broadcast.hpp) to one
/// rank. The hook refers to `broadcast`, which must outlive it.
template <BroadcastFunction F>
[[nodiscard]] BroadcastHook bind_broadcast(F& broadcast, RankId rank, RankId root) {
  return [&broadcast, rank, root](std::vector<std::byte>& bytes) { broadcast(bytes, rank, root); };
}

namespace detail {
inline void require_hook(const BroadcastHook& hook, const char* who) {
  if (!hook)
    throw input_error(std::string(who) + " was given an empty broadcast hook", {.expected = "a function void(std::vector<std::byte>&)"});
}
}  // namespace detail

/// Root side: broadcasts `plan` in its binary form.
inline void send_plan(const BroadcastHook& hook, const Plan& plan) {
  detail::require_hook(hook, "send_plan");
  std::vector<std::byte> bytes = to_binary(plan);
  hook(bytes);
}

/// Root side: tells the other ranks that this step has no plan (an empty message).
inline void send_planning_failure(const BroadcastHook& hook) {
  detail::require_hook(hook, "send_planning_failure");
  std::vector<std::byte> bytes;
  hook(bytes);
}

/// Non-root side: receives the step's plan. Throws Error(execution) when the root reported a
/// planning failure, Error(input) when the bytes do not decode.
[[nodiscard]] inline Plan receive_plan(const BroadcastHook& hook) {
  detail::require_hook(hook, "receive_plan");
  std::vector<std::byte> bytes;
  hook(bytes);
  if (bytes.empty())
    throw execution_error("the root rank failed to plan this step (it broadcast no plan)", {.expected = "a plan from the root; see the error raised on the root"});
  return plan_from_binary(bytes);
}

}  // namespace pipeweaver
