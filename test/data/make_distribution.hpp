#pragma once
// Builds a pipeweaver::Distribution of any kind in one expression (data tests).
#include <optional>
#include <utility>

#include "pipeweaver/data/dataset_spec.hpp"

namespace {
template <class Kind>
pipeweaver::Distribution dist(Kind kind, double scale = 1, std::optional<double> min = {}, std::optional<double> max = {}) {
  pipeweaver::Distribution d;
  d.kind = std::move(kind);
  d.scale = scale;
  d.min = min;
  d.max = max;
  return d;
}
}  // namespace
