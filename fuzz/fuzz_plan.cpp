// Fuzz targets of the plan readers and of what reads a decoded plan: JSON or the binary form,
// then the validator against tiny-vlm, then, for a plan it accepts, the emulator
// and the memory walk under the analytic cost model of cpu-pp4. For the binary form the checksum
// is recomputed before decoding, so that mutations reach the body rather than stopping at the
// trailer (the checksum itself is covered by the unit tests).
#include <cstddef>
#include <cstdint>
#include <vector>

#include <pipeweaver/cost/analytic.hpp>
#include <pipeweaver/emulate/emulator.hpp>
#include <pipeweaver/emulate/lower_bound.hpp>
#include <pipeweaver/io/plan_json.hpp>
#include <pipeweaver/ir/plan_binary.hpp>
#include <pipeweaver/schedule/validator.hpp>

#include "fuzz_support.hpp"

namespace pw = pipeweaver;

namespace pwfuzz {

namespace {

pw::Plan decode(std::string_view text, bool binary) {
  if (!binary) return pw::io::parse_plan(text, "plan.json");
  const std::size_t size = text.size();
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>(text[i]);
  if (size >= 16) {
    const std::uint64_t sum = pw::detail::fnv1a64(std::span<const std::byte>(bytes).first(size - 8));
    for (int i = 0; i < 8; ++i) bytes[size - 8 + static_cast<std::size_t>(i)] = static_cast<std::byte>((sum >> (8 * i)) & 0xffu);
  }
  return pw::plan_from_binary(bytes);
}

}  // namespace

void plan_input(std::string_view text, bool binary) {
  const auto& ref = reference();
  static const pw::AnalyticCostModel cost(ref.model, ref.setup);
  const pw::Plan plan = decode(text, binary);
  (void)pw::io::to_json(plan).dump();  // what `plan --out` and `emulate --format json` print
  pw::validate(plan, ref.model);
  const pw::EmulationResult r = pw::emulate(plan, ref.model, ref.setup, cost);
  (void)pw::lower_bound(plan, ref.model, cost);
  (void)pw::peak_memory_by_rank(plan, ref.model, ref.setup, cost);
  (void)r.total_busy();
  (void)pw::plan_from_binary(pw::to_binary(plan));  // the broadcast round trip
}

}  // namespace pwfuzz
