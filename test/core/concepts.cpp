// Each concept with a type that satisfies it and one that does not.
#include <doctest/doctest.h>

#include <pipeweaver/core/concepts.hpp>
#include <pipeweaver/ir/stage.hpp>

#include <vector>

namespace pw = pipeweaver;

namespace {

// --- Stage ---
struct UserStage {  // a user's own stage type: only the accessors matter
  pw::ModuleId module() const { return pw::ModuleId{1}; }
  int chunk() const { return 2; }
  pw::RankId rank() const { return pw::RankId{3}; }
  pw::Pass pass() const { return pw::Pass::backward; }
  int first_layer() const { return 8; }
  int layer_count() const { return 4; }
};
struct StageWithoutRank {
  pw::ModuleId module() const { return pw::ModuleId{1}; }
  int chunk() const { return 2; }
  pw::Pass pass() const { return pw::Pass::forward; }
  int first_layer() const { return 0; }
  int layer_count() const { return 4; }
};
static_assert(pw::HasModule<UserStage> && pw::HasChunk<UserStage> && pw::HasRank<UserStage> &&
              pw::HasPass<UserStage> && pw::HasLayerRange<UserStage>);
static_assert(pw::Stage<UserStage>);
static_assert(pw::Stage<pw::StageSpec>);
static_assert(!pw::HasRank<StageWithoutRank>);
static_assert(!pw::Stage<StageWithoutRank>);
static_assert(!pw::Stage<int>);

// --- SubMicrobatch ---
struct UserSubMicrobatch {
  std::vector<std::int64_t> tokens{676, 676};
  pw::ModuleId module() const { return pw::ModuleId{0}; }
  pw::MicrobatchId microbatch() const { return pw::MicrobatchId{5}; }
  std::span<const std::int64_t> item_tokens() const { return tokens; }
  std::span<const std::int64_t> context_tokens() const { return {}; }
};
struct SubMicrobatchWithTotalOnly {  // a sum is not a shape: attention is per item
  pw::ModuleId module() const { return pw::ModuleId{0}; }
  pw::MicrobatchId microbatch() const { return pw::MicrobatchId{5}; }
  std::int64_t item_tokens() const { return 1352; }
  std::span<const std::int64_t> context_tokens() const { return {}; }
};
static_assert(pw::SubMicrobatch<UserSubMicrobatch>);
static_assert(pw::SubMicrobatch<pw::SubMicrobatchSpec>);
static_assert(pw::HasMicrobatch<SubMicrobatchWithTotalOnly>);
static_assert(!pw::HasItemTokens<SubMicrobatchWithTotalOnly>);
static_assert(!pw::SubMicrobatch<SubMicrobatchWithTotalOnly>);

// --- CostModel and its parts ---
struct UserCostModel {
  template <class S, class M>
  pw::Nanoseconds latency(const S& s, const M&, const pw::MemoryStrategy&) const {
    return pw::Nanoseconds{1000 * s.layer_count()};
  }
  template <class S, class M>
  pw::Bytes activation_bytes(const S&, const M&, const pw::MemoryStrategy&) const { return pw::Bytes{1 << 20}; }
  template <class S, class M>
  pw::Bytes output_bytes(const S&, const M&) const { return pw::Bytes{1 << 16}; }
  pw::Nanoseconds transfer_time(pw::Bytes b) const { return pw::Nanoseconds{b.count() / 25}; }
};
struct CostModelReturningDouble {  // latency must be Nanoseconds, not a bare number
  template <class S, class M>
  double latency(const S&, const M&, const pw::MemoryStrategy&) const { return 1.0; }
  template <class S, class M>
  pw::Bytes activation_bytes(const S&, const M&, const pw::MemoryStrategy&) const { return {}; }
  template <class S, class M>
  pw::Bytes output_bytes(const S&, const M&) const { return {}; }
  pw::Nanoseconds transfer_time(pw::Bytes) const { return {}; }
};
static_assert(pw::StageLatencyModel<UserCostModel, UserStage, UserSubMicrobatch>);
static_assert(pw::ActivationMemoryModel<UserCostModel, UserStage, UserSubMicrobatch>);
static_assert(pw::TransferModel<UserCostModel, UserStage, UserSubMicrobatch>);
static_assert(pw::CostModel<UserCostModel, UserStage, UserSubMicrobatch>);
static_assert(pw::CostModel<UserCostModel, pw::StageSpec, pw::SubMicrobatchSpec>);
static_assert(!pw::StageLatencyModel<CostModelReturningDouble, pw::StageSpec, pw::SubMicrobatchSpec>);
static_assert(pw::ActivationMemoryModel<CostModelReturningDouble, pw::StageSpec, pw::SubMicrobatchSpec>);
static_assert(!pw::CostModel<CostModelReturningDouble, pw::StageSpec, pw::SubMicrobatchSpec>);
static_assert(!pw::CostModel<UserCostModel, StageWithoutRank, UserSubMicrobatch>);

}  // namespace

TEST_CASE("a user's cost model is used through the concept alone") {
  auto total = []<class C>(const C& c) requires pw::CostModel<C, UserStage, UserSubMicrobatch> {
    return c.latency(UserStage{}, UserSubMicrobatch{}, pw::MemoryStrategy{}) + c.transfer_time(pw::Bytes{2500});
  };
  CHECK(total(UserCostModel{}) == pw::Nanoseconds{4100});
}
