// expect: satisfaction of [^ ]+StageLatencyModel<C, S, M>.+required expression [^ ]+c\.latency\(s, m, st\)[^ ]+ is invalid
// A cost model that forgets latency(): g++ must name StageLatencyModel and the missing expression.
#include <pipeweaver/core/concepts.hpp>
#include <pipeweaver/ir/stage.hpp>

namespace pw = pipeweaver;

struct NoLatency {
  pw::Bytes activation_bytes(const pw::StageSpec&, const pw::SubMicrobatchSpec&, const pw::MemoryStrategy&) const { return {}; }
  pw::Bytes output_bytes(const pw::StageSpec&, const pw::SubMicrobatchSpec&) const { return {}; }
  pw::Nanoseconds transfer_time(pw::Bytes) const { return {}; }
};

template <class C>
  requires pw::CostModel<C, pw::StageSpec, pw::SubMicrobatchSpec>
void plan_with(const C&) {}

int main() { plan_with(NoLatency{}); }
