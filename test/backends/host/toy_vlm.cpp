// The toy trainer's math (examples/toy_vlm/toy_vlm.hpp): hand-written backwards against
// central finite differences (in double), chunked execution against the whole model, and a
// split backward (input part, then weight part) against the whole backward.
#include <doctest/doctest.h>

#include "../../../examples/toy_vlm/toy_vlm.hpp"
#include "backends/host/plans.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

namespace {

using toy_vlm::Model;

// Loss of one sample through the whole model (double).
double sample_loss(Model<double>& m, const toy_vlm::ToySample& s) {
  const auto& c = m.cfg;
  std::vector<double> seq;
  for (const auto& im : s.images) {
    const int n = static_cast<int>(im.size()) / c.patch_dim;
    std::vector<double> p(im.begin(), im.end()), out(m.vit_out_floats(0, c.vit_layers, n));
    m.vit_forward(0, c.vit_layers, p.data(), n, out.data());
    seq.insert(seq.end(), out.begin(), out.end());
  }
  return m.llm_forward(0, c.llm_layers, seq.data(), toy_vlm::image_tokens(c, s), s.text, nullptr);
}

}  // namespace

TEST_CASE("toy_vlm: every parameter's gradient matches central finite differences") {
  const auto cfg = toy_vlm::Config::from(test_plans::tiny_vlm());
  toy_vlm::DatasetOptions o;
  o.microbatches = 1;
  o.samples_per_microbatch = 1;
  o.min_text = o.max_text = 5;
  o.max_images = 2;
  o.min_image_tokens = 5;  // not a multiple of 4: the merge pads
  o.max_image_tokens = 7;
  toy_vlm::ToyBatch batch;
  for (std::uint64_t seed = 1;; ++seed) {  // a sample with two images
    batch = toy_vlm::make_batch(cfg, seed, o);
    if (batch.samples[0][0].images.size() == 2) break;
  }
  Model<double> m(cfg, 3);
  const double loss = toy_vlm::reference_step(m, batch);  // loss_scale = 1 / predicted tokens
  CHECK(loss == doctest::Approx(sample_loss(m, batch.samples[0][0])).epsilon(1e-12));
  toy_vlm::Rng pick{11};
  int checked = 0;
  for (auto* p : m.params()) {
    for (int trial = 0; trial < 2; ++trial) {
      const std::size_t i = static_cast<std::size_t>(pick.next() % p->w.size());
      const double w0 = p->w[i], h = 1e-5;
      p->w[i] = w0 + h;
      const double up = sample_loss(m, batch.samples[0][0]);
      p->w[i] = w0 - h;
      const double down = sample_loss(m, batch.samples[0][0]);
      p->w[i] = w0;
      const double numeric = (up - down) / (2 * h);
      INFO("parameter tensor of size " << p->w.size() << ", entry " << i);
      CHECK(std::abs(p->g[i] - numeric) <= 1e-7 + 1e-5 * std::abs(numeric));
      ++checked;
    }
  }
  CHECK(checked > 2 * 20);
}

TEST_CASE("toy_vlm: a model cut into chunks computes exactly what the whole model does") {
  const auto cfg = toy_vlm::Config::from(test_plans::tiny_vlm());
  Model<float> m(cfg, 5);
  toy_vlm::Rng rng{9};
  const int n = 10;
  std::vector<float> patches(static_cast<std::size_t>(n * cfg.patch_dim));
  for (auto& v : patches) v = static_cast<float>(rng.symmetric());
  std::vector<float> whole(m.vit_out_floats(0, 4, n));
  m.vit_forward(0, 4, patches.data(), n, whole.data());
  std::vector<float> a(m.vit_out_floats(0, 3, n)), b(m.vit_out_floats(3, 1, n));
  m.vit_forward(0, 3, patches.data(), n, a.data());
  m.vit_forward(3, 1, a.data(), n, b.data());
  CHECK(whole == b);
  CHECK(whole.size() == static_cast<std::size_t>(3 * cfg.llm_hidden));  // ceil(10 / 4) merged tokens
}

TEST_CASE("toy_vlm: a backward split into its input and weight parts computes exactly the whole backward") {
  const auto cfg = toy_vlm::Config::from(test_plans::tiny_vlm());
  toy_vlm::Rng rng{21};
  const int n = 9, n_img = 3;
  const std::vector<int> text{5, 17, 300, 2, 44, 9};
  const int seq = n_img + static_cast<int>(text.size());
  auto fill = [&](std::size_t count) {
    std::vector<float> v(count);
    for (auto& x : v) x = static_cast<float>(rng.symmetric());
    return v;
  };
  const auto patches = fill(static_cast<std::size_t>(n * cfg.patch_dim));
  const auto vit_mid = fill(static_cast<std::size_t>(n * cfg.vit_hidden));
  const auto vit_dout = fill(static_cast<std::size_t>(toy_vlm::Model<float>::merged(n) * cfg.llm_hidden));
  const auto vit_dmid = fill(static_cast<std::size_t>(n * cfg.vit_hidden));
  const auto llm_in = fill(static_cast<std::size_t>(n_img * cfg.llm_hidden));
  const auto llm_mid = fill(static_cast<std::size_t>(seq * cfg.llm_hidden));
  const auto llm_dout = fill(static_cast<std::size_t>(seq * cfg.llm_hidden));
  // Every chunk kind: first, middle and last chunks of both modules.
  struct Chunk {
    const char* name;
    std::function<void(toy_vlm::Model<float>&, toy_vlm::Part, std::vector<float>&)> run;
    std::size_t din_floats;
  };
  const std::vector<Chunk> chunks{
      {"vit first", [&](auto& m, auto part, auto& din) { m.vit_backward(0, 2, patches.data(), n, vit_dmid.data(), din.data(), part); }, 0},
      {"vit last", [&](auto& m, auto part, auto& din) { m.vit_backward(2, 2, vit_mid.data(), n, vit_dout.data(), din.data(), part); },
       vit_mid.size()},
      {"llm first", [&](auto& m, auto part, auto& din) { m.llm_backward(0, 3, llm_in.data(), n_img, text, llm_dout.data(), din.data(), part); },
       llm_in.size()},
      {"llm middle", [&](auto& m, auto part, auto& din) { m.llm_backward(3, 2, llm_mid.data(), n_img, text, llm_dout.data(), din.data(), part); },
       llm_mid.size()},
      {"llm last", [&](auto& m, auto part, auto& din) { m.llm_backward(5, 3, llm_mid.data(), n_img, text, nullptr, din.data(), part); },
       llm_mid.size()},
  };
  for (const Chunk& c : chunks) {
    CAPTURE(c.name);
    toy_vlm::Model<float> whole(cfg, 4), parts(cfg, 4);
    std::vector<float> din_whole(std::max<std::size_t>(c.din_floats, 1), 0.f), din_input(din_whole.size(), 0.f),
        din_weight(din_whole.size(), 7.f);
    c.run(whole, toy_vlm::Part::both, din_whole);
    c.run(parts, toy_vlm::Part::input, din_input);
    double after_input = 0;
    for (auto* p : parts.params())
      for (double g : p->g) after_input += std::abs(g);
    CHECK(after_input == 0);  // the input part keeps no parameter gradient
    c.run(parts, toy_vlm::Part::weight, din_weight);
    CHECK(std::all_of(din_weight.begin(), din_weight.end(), [](float x) { return x == 7.f; }));  // nor the weight part an input gradient
    CHECK(din_input == din_whole);
    auto pw_ = whole.params(), pp = parts.params();
    bool equal = true, any = false;
    for (std::size_t t = 0; t < pw_.size(); ++t) {
      equal = equal && pw_[t]->g == pp[t]->g;
      for (double g : pw_[t]->g) any = any || g != 0;
    }
    CHECK(equal);
    CHECK(any);
  }
}
