// expect-first: error: static assertion failed: pipeweaver::CostModel \(StageLatencyModel\): the cost model has no member Nanoseconds latency
// A user's cost model that forgets latency(), handed to the Planner as a trainer would (class
// template argument deduction): the first error line names the concept and the member.
#include <pipeweaver/planner/planner.hpp>

namespace pw = pipeweaver;

struct NoLatency {
  pw::Bytes activation_bytes(const pw::StageSpec&, const pw::SubMicrobatchSpec&, const pw::MemoryStrategy&) const { return {}; }
  pw::Bytes output_bytes(const pw::StageSpec&, const pw::SubMicrobatchSpec&) const { return {}; }
  pw::Nanoseconds transfer_time(pw::Bytes) const { return {}; }
};

int main() {
  pw::Planner planner{pw::ModelSpec{}, pw::Setup{}, NoLatency{}};
  (void)planner;
}
