#pragma once
// Fixtures shared by the fault tests of the host backend and of the CUDA backend on the fake
// device: a callback that does nothing, one that throws once on one rank, the small batch both
// backends' fault tests run (three microbatches of two image samples), a substring check for
// error messages and a step that must fail. Each test keeps its own expectations (the error's
// kind, place and cause); only the inputs and the catching are shared.
#include <doctest/doctest.h>

#include <pipeweaver/core/error.hpp>
#include <pipeweaver/data/batch.hpp>
#include <pipeweaver/execute/stage_io.hpp>
#include <pipeweaver/ir/plan.hpp>
#include <pipeweaver/ir/stage.hpp>
#include <pipeweaver/model/model_spec.hpp>

#include <stdexcept>
#include <string>

namespace test_faults {

namespace pw = pipeweaver;

/// Every stage callback succeeds and does nothing.
struct NoOp {
  void forward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
  void backward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
};

/// Throws "injected failure" from the first backward of `rank` (called from several threads:
/// only that rank's thread ever touches `thrown`).
struct ThrowOnRank {
  int rank = 0;
  bool thrown = false;
  void forward(const pw::StageSpec&, const pw::SubMicrobatchSpec&, pw::StageIO&) {}
  void backward(const pw::StageSpec& s, const pw::SubMicrobatchSpec&, pw::StageIO&) {
    if (s.rank().value() == rank && !thrown) {
      thrown = true;
      throw std::runtime_error("injected failure");
    }
  }
};

/// Three microbatches of two samples (10 and 11 text tokens, one image of 8 and 12 items).
inline pw::Batch small_batch() {
  pw::Batch b;
  for (int mb = 0; mb < 3; ++mb) {
    pw::Microbatch m;
    for (int s = 0; s < 2; ++s) m.samples.push_back(pw::Sample{10 + s, {pw::SampleItems{"image", {8, 12}}}});
    b.microbatches.push_back(m);
  }
  return b;
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// What a failed step threw: its place (`context().path`) and its message.
struct Failure {
  std::string path{};
  std::string what{};
};

/// Runs one step of `plan` on `executor` that must throw an Error of `kind` whose place names
/// `where`; returns the place and the message for the caller's checks of the cause.
template <class Executor, class Callbacks>
Failure expect_failure(Executor& executor, const pw::Plan& plan, const pw::ModelSpec& model, Callbacks& callbacks,
                       pw::ErrorKind kind, const std::string& where) {
  try {
    executor.run(plan, model, callbacks);
  } catch (const pw::Error& e) {
    INFO(e.what());
    CHECK(e.kind() == kind);
    CHECK(contains(e.context().path, where));
    return Failure{e.context().path, e.what()};
  }
  FAIL("the step succeeded despite the fault");
  return {};
}

}  // namespace test_faults
