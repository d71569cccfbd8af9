// expect-first: error: static assertion failed: pipeweaver::CostModel \(StageLatencyModel\): latency\(stage, sub_microbatch, strategy\) must return pipeweaver::Nanoseconds
// A cost model whose latency() returns a bare number of seconds: the first error line says what
// it must return.
#include <pipeweaver/planner/planner.hpp>

namespace pw = pipeweaver;

struct DoubleLatency {
  double latency(const pw::StageSpec&, const pw::SubMicrobatchSpec&, const pw::MemoryStrategy&) const { return 0; }
  pw::Bytes activation_bytes(const pw::StageSpec&, const pw::SubMicrobatchSpec&, const pw::MemoryStrategy&) const { return {}; }
  pw::Bytes output_bytes(const pw::StageSpec&, const pw::SubMicrobatchSpec&) const { return {}; }
  pw::Nanoseconds transfer_time(pw::Bytes) const { return {}; }
};

int main() {
  pw::Planner planner{pw::ModelSpec{}, pw::Setup{}, DoubleLatency{}};
  (void)planner;
}
