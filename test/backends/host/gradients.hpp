#pragma once
// Gradient comparisons of toy_vlm models for the host backend's correctness tests.
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "../../../examples/toy_vlm/toy_vlm.hpp"

namespace test_plans {

/// Largest elementwise |a - b| / (|a| + tiny) over every parameter gradient.
inline double max_relative_gradient_error(toy_vlm::Model<float>& a, toy_vlm::Model<float>& b) {
  auto pa = a.params(), pb = b.params();
  double worst = 0;
  for (std::size_t t = 0; t < pa.size(); ++t)
    for (std::size_t i = 0; i < pa[t]->g.size(); ++i) {
      const double x = pa[t]->g[i], y = pb[t]->g[i];
      worst = std::max(worst, std::abs(x - y) / (std::abs(x) + 1e-12));
    }
  return worst;
}

/// Euclidean norm of all parameter gradients.
inline double gradient_norm(toy_vlm::Model<float>& m) {
  double s = 0;
  for (auto* p : m.params())
    for (double g : p->g) s += g * g;
  return std::sqrt(s);
}

}  // namespace test_plans
