#pragma once
// Bootstrap of the NCCL communicators: the root rank makes one unique id per communicator of
// the topology, one broadcast (any BroadcastFunction of execute/plan_broadcast.hpp: MPI_Bcast,
// a TCP store, threads) hands them to every rank, and every rank initializes its
// communicators without blocking, polls them until ready within the runtime's timeout, and
// preconnects every link in deterministic rounds. Plans can travel over the same function
// (broadcast_plan).
// std-only.
#include <cstddef>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/cuda/comm_links.hpp"
#include "pipeweaver/cuda/device_api.hpp"
#include "pipeweaver/cuda/runtime.hpp"
#include "pipeweaver/cuda/world.hpp"
#include "pipeweaver/execute/plan_broadcast.hpp"

namespace pipeweaver::cuda {

/// The ids of every communicator of the topology over `ranks` ranks (made on one rank).
template <DeviceApi Api>
[[nodiscard]] std::vector<UniqueId> make_unique_ids(Api& api, CommTopology topology, int ranks) {
  std::vector<UniqueId> ids;
  const std::size_t n = comm_count(topology, ranks);
  ids.reserve(n);
  for (std::size_t i = 0; i < n; ++i) ids.push_back(api.unique_id());
  return ids;
}

/// Collective: every rank calls it; the root makes the ids, the broadcast hands them to all.
/// Throws Error(input) when the bytes that arrive are not the expected number of ids.
template <DeviceApi Api, BroadcastFunction B>
[[nodiscard]] std::vector<UniqueId> exchange_unique_ids(Api& api, B& broadcast, RankId rank, RankId root, int ranks, CommTopology topology) {
  const std::size_t n = comm_count(topology, ranks);
  std::vector<std::byte> bytes;
  if (rank == root) {
    for (const UniqueId& id : make_unique_ids(api, topology, ranks)) bytes.insert(bytes.end(), id.begin(), id.end());
  }
  broadcast(bytes, rank, root);
  if (bytes.size() != n * unique_id_bytes)
    throw input_error("rank " + std::to_string(rank.value()) + " received " + std::to_string(bytes.size()) + " bytes of NCCL unique ids",
                      {.expected = std::to_string(n * unique_id_bytes) + " bytes (" + std::to_string(n) + " ids of " + std::to_string(unique_id_bytes) + ")"});
  std::vector<UniqueId> ids(n);
  for (std::size_t i = 0; i < n; ++i) std::memcpy(ids[i].data(), bytes.data() + i * unique_id_bytes, unique_id_bytes);
  return ids;
}

/// Initializes the runtime's communicators from the ids (the same list on every rank), hands
/// them to it and preconnects every link. Every rank of the pipeline calls it.
template <DeviceApi Api>
void connect(CudaRuntimeT<Api>& rt, std::span<const UniqueId> ids) {
  World<Api>& world = rt.world();
  rt.api().activate();
  auto links = init_comm_links(rt.api(), ids, world.options().topology, rt.rank(), world.rank_count(), world.options().timeout,
                               [&world] { return world.aborted(); });
  rt.install_comms(std::move(links));
  rt.preconnect();
}

/// Collective over the broadcast: exchange_unique_ids, then connect.
template <DeviceApi Api, BroadcastFunction B>
void nccl_bootstrap(CudaRuntimeT<Api>& rt, B& broadcast, RankId root = RankId{0}) {
  const auto ids = exchange_unique_ids(rt.api(), broadcast, rt.rank(), root, rt.rank_count(), rt.world().options().topology);
  connect(rt, ids);
}

}  // namespace pipeweaver::cuda
