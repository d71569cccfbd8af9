#pragma once
// Distributing a plan to the ranks as its compact binary form (schedule/plan_binary.hpp), over
// a user-supplied broadcast function: MPI_Bcast or an NCCL broadcast in a real job, the
// in-process host::InProcessBroadcast on the host backend.
// std-only: compiled by nvcc.
#include <concepts>
#include <cstddef>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/plan_binary.hpp"

namespace pipeweaver {

/// A collective every rank calls as f(bytes, rank, root): on the root `bytes` holds the
/// message; when it returns, `bytes` holds the root's message on every rank.
template <class F>
concept BroadcastFunction = std::invocable<F&, std::vector<std::byte>&, RankId, RankId>;

/// Every rank calls this with its rank; the root passes its plan, the others nullptr. Returns
/// the root's plan on every rank (the root's own copy on the root, the decoded binary
/// elsewhere). Throws Error(input) when the root has no plan or the bytes do not decode.
template <BroadcastFunction F>
[[nodiscard]] Plan broadcast_plan(F& broadcast, RankId rank, RankId root, const Plan* plan_on_root) {
  std::vector<std::byte> bytes;
  if (rank == root) {
    if (plan_on_root == nullptr)
      throw input_error("the root rank has no plan to broadcast", {.path = "rank " + std::to_string(rank.value()), .expected = "a plan on the root"});
    bytes = to_binary(*plan_on_root);
  }
  broadcast(bytes, rank, root);
  if (rank == root) return *plan_on_root;
  return plan_from_binary(bytes);
}

}  // namespace pipeweaver
