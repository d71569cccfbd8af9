#pragma once
// Samples, microbatches and steps as metadata: token and item counts only. This is
// all the planner ever sees of the data.
#include <cstdint>
#include <string>
#include <vector>

namespace pipeweaver {

/// Items of one modality in a sample, one token count per item.
struct SampleItems {
  std::string modality{};
  std::vector<std::int64_t> tokens{};
  friend bool operator==(const SampleItems&, const SampleItems&) = default;
};

/// One sample: `{"text": 412, "image": [676, 676]}`. `items` is sorted by modality name and
/// holds no empty lists.
struct Sample {
  std::int64_t text = 0;
  std::vector<SampleItems> items{};

  /// Token counts of this modality's items (empty if none).
  [[nodiscard]] const std::vector<std::int64_t>& tokens_of(const std::string& modality) const {
    static const std::vector<std::int64_t> none;
    for (const auto& it : items)
      if (it.modality == modality) return it.tokens;
    return none;
  }
  friend bool operator==(const Sample&, const Sample&) = default;
};

/// Samples packed under the setup's microbatch budget.
struct Microbatch {
  std::vector<Sample> samples{};
};

/// The microbatches of one training step of one replica.
struct Batch {
  std::vector<Microbatch> microbatches{};
  int truncated_samples = 0;  ///< samples cut to fit the budget while packing (reported, never silent)
};

}  // namespace pipeweaver
