#pragma once
// The activation buffer pool: every buffer a rank needs during a step (stage inputs and
// outputs, received messages, gradients, stashes) gets a fixed offset in one arena, computed
// once per plan from the buffers' sizes and lifetimes. Two buffers share memory only when
// their lifetimes (inclusive ranges of positions in the rank's program) do not overlap, so
// executing the plan allocates nothing.
//
// Placement is greedy first-fit in order of first use (ties: larger first, then request
// order): each buffer takes the lowest aligned offset that is free for its whole lifetime.
// The result is deterministic; its size lies between the peak of live bytes and their sum.
// std-only: compiled by nvcc.
#include <algorithm>
#include <cstddef>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "pipeweaver/core/error.hpp"

namespace pipeweaver {

/// One buffer: size and lifetime [first, last] in program positions (inclusive).
struct PoolRequest {
  std::size_t bytes = 0;
  std::size_t first = 0;
  std::size_t last = 0;
};

struct PoolLayout {
  std::vector<std::size_t> offsets{};  ///< per request, in request order
  std::size_t total = 0;             ///< arena bytes needed
};

[[nodiscard]] constexpr std::size_t align_up(std::size_t n, std::size_t alignment) noexcept {
  return (n + alignment - 1) / alignment * alignment;
}

/// Offsets for `requests` in one arena (see the header comment). Zero-byte buffers get
/// offset 0 and occupy nothing.
[[nodiscard]] inline PoolLayout plan_buffer_pool(std::span<const PoolRequest> requests, std::size_t alignment = 256) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    throw input_error("buffer pool alignment " + std::to_string(alignment) + " is not a power of two", {.path = "ExecutorOptions::alignment", .expected = "a power of two"});
  PoolLayout out;
  out.offsets.assign(requests.size(), 0);
  std::vector<std::size_t> order(requests.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    if (requests[a].first != requests[b].first) return requests[a].first < requests[b].first;
    return requests[a].bytes > requests[b].bytes;
  });
  struct Live {
    std::size_t offset, end, last;
  };
  std::vector<Live> live;  // sorted by offset
  for (std::size_t i : order) {
    const PoolRequest& r = requests[i];
    if (r.bytes == 0) continue;
    std::erase_if(live, [&](const Live& l) { return l.last < r.first; });
    const std::size_t size = align_up(r.bytes, alignment);
    std::size_t offset = 0;
    auto pos = live.begin();
    for (; pos != live.end(); ++pos) {
      if (pos->offset >= offset + size) break;  // the gap before this one fits
      offset = std::max(offset, align_up(pos->end, alignment));
    }
    live.insert(pos, Live{offset, offset + size, r.last});
    out.offsets[i] = offset;
    out.total = std::max(out.total, offset + size);
  }
  return out;
}

}  // namespace pipeweaver
