#pragma once
// The NCCL communicators of one rank, for either topology (world.hpp's CommTopology):
//  * per_edge: one 2-rank communicator per directed rank pair (from, to), the sender being
//    rank 0 in it and the receiver rank 1; communicator e = edge_index(from, to) of the
//    P(P-1) in the id list. Opposite directions never share a FIFO, and a message never waits
//    behind traffic of another link.
//  * single: one communicator of P ranks, rank = pipeline rank.
// Initialization is non-blocking (every rank's inits inside one group, then polled until ready
// with a deadline), and preconnection exercises every pair once in deterministic rounds before
// the first step, so that no lazy connection happens in the middle of a step.
// std-only.
#include <chrono>
#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/cuda/device_api.hpp"
#include "pipeweaver/cuda/world.hpp"

namespace pipeweaver::cuda {

/// Communicators of a topology over `ranks` ranks.
[[nodiscard]] inline std::size_t comm_count(CommTopology topology, int ranks) noexcept {
  if (ranks <= 1) return topology == CommTopology::single && ranks == 1 ? 1 : 0;
  return topology == CommTopology::single ? 1 : static_cast<std::size_t>(ranks) * static_cast<std::size_t>(ranks - 1);
}
/// Index of the directed edge from -> to (from != to) among the P(P-1) edges, ordered by
/// (from, to).
[[nodiscard]] inline std::size_t edge_index(int from, int to, int ranks) noexcept {
  return static_cast<std::size_t>(from) * static_cast<std::size_t>(ranks - 1) + static_cast<std::size_t>(to < from ? to : to - 1);
}

/// Round-robin pairings (the circle method): rounds[k][r] is r's partner in round k, or -1
/// when r sits out. Every pair of ranks meets exactly once; every rank has at most one partner
/// per round; P - 1 rounds for even P, P for odd P. Every rank computes the same rounds.
[[nodiscard]] inline std::vector<std::vector<int>> pairing_rounds(int ranks) {
  std::vector<std::vector<int>> rounds;
  if (ranks < 2) return rounds;
  const int n = ranks % 2 == 0 ? ranks : ranks + 1;  // a dummy seat for odd P
  std::vector<int> seat(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) seat[static_cast<std::size_t>(i)] = i;
  for (int k = 0; k < n - 1; ++k) {
    std::vector<int> partner(static_cast<std::size_t>(ranks), -1);
    for (int i = 0; i < n / 2; ++i) {
      const int a = seat[static_cast<std::size_t>(i)], b = seat[static_cast<std::size_t>(n - 1 - i)];
      if (a < ranks && b < ranks) {
        partner[static_cast<std::size_t>(a)] = b;
        partner[static_cast<std::size_t>(b)] = a;
      }
    }
    rounds.push_back(std::move(partner));
    // Keep seat 0, rotate the others by one.
    const int last = seat.back();
    for (int i = n - 1; i > 1; --i) seat[static_cast<std::size_t>(i)] = seat[static_cast<std::size_t>(i - 1)];
    seat[1] = last;
  }
  return rounds;
}

/// One rank's communicators.
template <class Comm>
struct CommLinks {
  struct Link {
    Comm comm{};
    int peer = 0;  ///< the peer's rank inside `comm`
    bool valid = false;
  };
  CommTopology topology = CommTopology::per_edge;
  std::vector<Link> send;  ///< by pipeline peer: where this rank's messages to the peer go
  std::vector<Link> recv;  ///< by pipeline peer: where the peer's messages to this rank come from
  std::vector<Comm> all;   ///< every communicator, in creation order

  [[nodiscard]] bool empty() const noexcept { return all.empty(); }
};

namespace detail {

/// Polls every communicator of `links` until all are ready; throws on an error, a deadline or
/// an abort (the caller aborts them).
template <DeviceApi Api>
void await_ready(Api& api, const CommLinks<typename Api::comm>& links, std::chrono::milliseconds timeout,
                 const std::function<bool()>& aborted, RankId rank) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::microseconds(20);
  for (;;) {
    bool ready = true;
    for (const auto& c : links.all) {
      const CommStatus s = api.comm_status(c);
      if (s.state == CommState::failed)
        throw execution_error("NCCL communicator initialization failed on rank " + std::to_string(rank.value()) + ": " + s.message,
                              {.expected = "every communicator to initialize"});
      ready = ready && s.state == CommState::ready;
    }
    if (ready) return;
    if (aborted && aborted())
      throw cancelled_error("communicator initialization on rank " + std::to_string(rank.value()) + " stopped by an abort");
    if (std::chrono::steady_clock::now() > deadline)
      throw execution_error("NCCL communicators of rank " + std::to_string(rank.value()) + " did not initialize within " +
                                std::to_string(timeout.count()) + " ms",
                            {.expected = "every rank to join its communicators (same ids, all ranks started)"});
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(2000));
  }
}

}  // namespace detail

/// Initializes `rank`'s communicators from the ids of the topology (comm_count of them, the
/// same list on every rank) and waits, up to `timeout`, until all are ready. On any failure it
/// aborts the communicators it made and throws Error(execution) (or cancelled on an abort).
template <DeviceApi Api>
[[nodiscard]] CommLinks<typename Api::comm> init_comm_links(Api& api, std::span<const UniqueId> ids, CommTopology topology, RankId rank,
                                                            int ranks, std::chrono::milliseconds timeout,
                                                            const std::function<bool()>& aborted = {}) {
  if (ids.size() != comm_count(topology, ranks))
    throw input_error(std::to_string(ids.size()) + " unique ids for " + std::to_string(ranks) + " ranks",
                      {.expected = std::to_string(comm_count(topology, ranks)) + " ids (one per communicator of the topology)"});
  CommLinks<typename Api::comm> links;
  links.topology = topology;
  links.send.assign(static_cast<std::size_t>(ranks), {});
  links.recv.assign(static_cast<std::size_t>(ranks), {});
  const int me = rank.value();
  try {
    api.group_start();
    try {
      if (topology == CommTopology::single) {
        links.all.push_back(api.comm_init(ids[0], ranks, me));
        for (int p = 0; p < ranks; ++p) links.send[static_cast<std::size_t>(p)] = links.recv[static_cast<std::size_t>(p)] = {links.all[0], p, p != me};
      } else {
        for (int from = 0; from < ranks; ++from)
          for (int to = 0; to < ranks; ++to) {
            if (from == to || (from != me && to != me)) continue;
            const auto c = api.comm_init(ids[edge_index(from, to, ranks)], 2, from == me ? 0 : 1);
            links.all.push_back(c);
            if (from == me) links.send[static_cast<std::size_t>(to)] = {c, 1, true};
            else links.recv[static_cast<std::size_t>(from)] = {c, 0, true};
          }
      }
    } catch (...) {
      api.group_end();
      throw;
    }
    api.group_end();
    detail::await_ready(api, links, timeout, aborted, rank);
  } catch (...) {
    for (const auto& c : links.all) api.comm_abort(c);
    throw;
  }
  return links;
}

}  // namespace pipeweaver::cuda
