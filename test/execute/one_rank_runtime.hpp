#pragma once
// What the one-rank test runtimes of the execute tests share: one rank and no peers (a send or a
// receive is an execution error), queues 0 (compute), 1 (send) and 2 (receive), events that carry
// nothing, an abort flag, and float32 accumulation. Each runtime adds its own launch, memory and
// synchronization.
#include <cstddef>
#include <cstring>
#include <span>
#include <string_view>

#include <pipeweaver/execute.hpp>

namespace execute_test {

struct OneRankBase {
  using queue_type = int;
  struct event_type {};
  using recv_handle = int;
  bool stop = false;

  pipeweaver::RankId rank() const { return pipeweaver::RankId{0}; }
  int rank_count() const { return 1; }
  int compute_queue() { return 0; }
  int send_queue(pipeweaver::RankId) { return 1; }
  int recv_queue(pipeweaver::RankId) { return 2; }
  event_type record(int) { return {}; }
  void wait_event(int, const event_type&) {}
  void* native_handle(int) { return nullptr; }
  void send(int, pipeweaver::RankId, pipeweaver::TransferId, std::span<const std::byte>) {
    throw pipeweaver::execution_error("no peers");
  }
  int recv(int, pipeweaver::RankId, pipeweaver::TransferId, std::span<std::byte>) {
    throw pipeweaver::execution_error("no peers");
  }
  void wait_recv(int, const int&) {}
  void abort(std::string_view) noexcept { stop = true; }
  bool aborted() const { return stop; }

  /// d += s, element-wise over float32.
  static void add_f32(std::span<std::byte> d, std::span<const std::byte> s) {
    for (std::size_t i = 0; i + 4 <= s.size(); i += 4) {
      float a, b;
      std::memcpy(&a, d.data() + i, 4);
      std::memcpy(&b, s.data() + i, 4);
      a += b;
      std::memcpy(d.data() + i, &a, 4);
    }
  }
};

}  // namespace execute_test
