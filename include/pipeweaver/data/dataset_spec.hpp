#pragma once
// A dataset as a seeded generator of samples (examples/workloads/README.md, "datasets/*.json").
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace pipeweaver {

struct FixedDist { double value = 0; };
struct UniformDist { std::int64_t lo = 0, hi = 0; };  ///< integers, inclusive
struct LognormalDist { double median = 1, sigma = 0; };
struct PoissonDist { double mean = 0; };
struct ChoiceDist { std::vector<double> values; std::vector<double> weights; };

/// A distribution of non-negative integers: a draw, times `scale`, clamped to [min, max],
/// rounded to the nearest integer.
struct Distribution {
  std::variant<FixedDist, UniformDist, LognormalDist, PoissonDist, ChoiceDist> kind{};
  double scale = 1;
  std::optional<double> min{};
  std::optional<double> max{};
};

/// Items of one modality in a sample: how many, and the tokens of each.
struct ItemsSpec {
  std::string modality{};
  Distribution count{};
  Distribution tokens{};
};

struct SourceSpec {
  std::string name{};
  double weight = 1;
  Distribution text{};
  std::vector<ItemsSpec> items{};  ///< sorted by modality name
};

struct DatasetSpec {
  std::string name{};
  std::string description{};
  std::vector<SourceSpec> mixture{};
};

}  // namespace pipeweaver
