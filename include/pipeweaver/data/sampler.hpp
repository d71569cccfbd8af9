#pragma once
// A seeded generator of samples from a DatasetSpec: each sample picks a mixture source by
// weight, then draws its text tokens and, for each modality of the source (in modality-name
// order), an item count and each item's tokens. Same seed, same samples, on every platform.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/limits.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/data/dataset_spec.hpp"
#include "pipeweaver/data/random.hpp"
#include "pipeweaver/model/model_spec.hpp"

namespace pipeweaver {

/// Items of one modality per sample are clamped to this many, so that no draw can allocate
/// without bound.
inline constexpr std::int64_t max_items_per_sample = limits::max_items_per_sample;

/// Checks a dataset: a non-empty mixture of at most limits::max_mixture_sources sources; weights
/// finite >= 0 with a positive sum; every distribution valid; at most
/// limits::max_source_modalities item modalities per source, each non-empty, not "text" (the
/// sample's own field) and unique within the source. Paths follow the JSON layout
/// ("/mixture/1/items/image/count").
inline void validate(const DatasetSpec& d) {
  if (d.mixture.empty())
    throw input_error("the dataset has no sources", {.path = "/mixture", .expected = "a non-empty array of sources"});
  if (static_cast<std::int64_t>(d.mixture.size()) > limits::max_mixture_sources)
    throw input_error("the dataset has " + std::to_string(d.mixture.size()) + " sources",
                      {.path = "/mixture", .expected = "at most " + std::to_string(limits::max_mixture_sources)});
  double total = 0;
  for (std::size_t i = 0; i < d.mixture.size(); ++i) {
    const SourceSpec& s = d.mixture[i];
    const std::string at = "/mixture/" + std::to_string(i);
    if (static_cast<std::int64_t>(s.items.size()) > limits::max_source_modalities)
      throw input_error("the source has items of " + std::to_string(s.items.size()) + " modalities",
                        {.path = at + "/items", .expected = "at most " + std::to_string(limits::max_source_modalities)});
    if (!(std::isfinite(s.weight) && s.weight >= 0))
      throw input_error("source weight is " + detail::number_text(s.weight), {.path = at + "/weight", .expected = "a finite number >= 0"});
    total += s.weight;
    validate(s.text, at + "/text");
    for (std::size_t j = 0; j < s.items.size(); ++j) {
      const ItemsSpec& it = s.items[j];
      const std::string ip = at + "/items/" + detail::json_pointer_token(it.modality);
      if (it.modality.empty() || it.modality == "text")
        throw input_error("invalid item modality \"" + it.modality + "\"", {.path = ip, .expected = "a non-empty modality other than \"text\" (text is drawn by \"text\")"});
      for (std::size_t k = 0; k < j; ++k)
        if (s.items[k].modality == it.modality)
          throw input_error("modality \"" + it.modality + "\" appears twice", {.path = ip, .expected = "each modality once per source"});
      validate(it.count, ip + "/count");
      validate(it.tokens, ip + "/tokens");
    }
  }
  if (!(total > 0) || !std::isfinite(total))
    throw input_error("source weights sum to " + detail::number_text(total), {.path = "/mixture", .expected = "at least one source with a positive weight"});
}

/// Checks that every item modality of the dataset is consumed by some encoder or generator of
/// the model (items nobody consumes would silently vanish from the workload).
inline void check_compatible(const ModelSpec& model, const DatasetSpec& d) {
  for (std::size_t i = 0; i < d.mixture.size(); ++i)
    for (const ItemsSpec& it : d.mixture[i].items) {
      bool consumed = false;
      std::string consumers;
      for (const ModuleSpec& m : model.modules) {
        if (m.role == ModuleRole::backbone) continue;
        consumed = consumed || m.modality == it.modality;
        if (consumers.find("\"" + m.modality + "\"") == std::string::npos)
          consumers += (consumers.empty() ? "" : ", ") + ("\"" + m.modality + "\"");
      }
      if (!consumed)
        throw input_error("no module of model \"" + model.name + "\" consumes \"" + it.modality + "\" items", {.path = "/mixture/" + std::to_string(i) + "/items/" + detail::json_pointer_token(it.modality), .expected = consumers.empty() ? "no items (the model has no encoder or generator)"
                                                   : "items of a modality the model consumes: " + consumers});
    }
}

class DatasetSampler {
 public:
  /// Validates `spec` (throws Error(input)) and keeps a copy of it.
  DatasetSampler(const DatasetSpec& spec, std::uint64_t seed) : spec_(spec), rng_(seed) {
    validate(spec_);
    for (auto& s : spec_.mixture)
      std::sort(s.items.begin(), s.items.end(),
                [](const ItemsSpec& a, const ItemsSpec& b) { return a.modality < b.modality; });
    weights_.reserve(spec_.mixture.size());
    for (const auto& s : spec_.mixture) weights_.push_back(s.weight);
  }

  /// The next sample: items sorted by modality, no empty item lists.
  Sample next() {
    last_source_ = rng_.weighted_index(weights_);
    const SourceSpec& src = spec_.mixture[last_source_];
    Sample out;
    out.text = draw(src.text, rng_);
    for (const ItemsSpec& it : src.items) {
      const std::int64_t count = std::min(draw(it.count, rng_), max_items_per_sample);
      if (count == 0) continue;
      SampleItems items{it.modality, {}};
      items.tokens.reserve(static_cast<std::size_t>(count));
      for (std::int64_t k = 0; k < count; ++k) items.tokens.push_back(draw(it.tokens, rng_));
      out.items.push_back(std::move(items));
    }
    return out;
  }

  /// Mixture index of the source the last sample came from.
  [[nodiscard]] std::size_t last_source() const noexcept { return last_source_; }
  [[nodiscard]] const DatasetSpec& spec() const noexcept { return spec_; }

 private:
  DatasetSpec spec_;
  Rng rng_;
  std::vector<double> weights_;
  std::size_t last_source_ = 0;
};

}  // namespace pipeweaver
