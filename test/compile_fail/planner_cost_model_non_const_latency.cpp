// expect-first: error: static assertion failed: pipeweaver::CostModel \(StageLatencyModel\): latency\(stage, sub_microbatch, strategy\) must be a const member function
// A cost model whose latency() is not const: the first error line says so.
#include <pipeweaver/planner/planner.hpp>

namespace pw = pipeweaver;

struct MutableLatency {
  pw::Nanoseconds latency(const pw::StageSpec&, const pw::SubMicrobatchSpec&, const pw::MemoryStrategy&) { return {}; }
  pw::Bytes activation_bytes(const pw::StageSpec&, const pw::SubMicrobatchSpec&, const pw::MemoryStrategy&) const { return {}; }
  pw::Bytes output_bytes(const pw::StageSpec&, const pw::SubMicrobatchSpec&) const { return {}; }
  pw::Nanoseconds transfer_time(pw::Bytes) const { return {}; }
};

int main() {
  pw::Planner planner{pw::ModelSpec{}, pw::Setup{}, MutableLatency{}};
  (void)planner;
}
