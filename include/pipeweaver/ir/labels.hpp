#pragma once
// How stages and actions are named, in one place for the whole library. Two forms, by purpose:
//  * short, for pictures (SVG timeline, Chrome trace), where space is tight:
//      stage_label   "F vit c2 s17"  (F forward, B backward, Bi input-gradient, Bw weight-gradient part)
//  * long, for every error message (lowering, validator, emulator, executor):
//      describe_stage "Forward vit chunk 2 sub-microbatch 17", "Backward(backward_input) llm chunk 0 ..."
//      action_label   the stage of a compute action, or "Send transfer 3 (Forward vit chunk 3
//                     sub-microbatch 17 on rank 1 -> Forward llm chunk 0 sub-microbatch 4 on
//                     rank 2)"; "Recv ...", "Wait ..." alike.
// Both work on broken plans (unknown modules and transfer ids are printed as such). std-only.
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/ir/plan.hpp"
#include "pipeweaver/ir/stage.hpp"

namespace pipeweaver {

[[nodiscard]] constexpr std::string_view pass_letter(Pass p) noexcept {
  switch (p) {
    case Pass::forward: return "F";
    case Pass::backward: return "B";
    case Pass::backward_input: return "Bi";
    case Pass::backward_weight: return "Bw";
  }
  return "?";
}

/// Name of module `m`, or "module <index>" when the model does not have it.
[[nodiscard]] inline std::string module_label(const ModelSpec& model, ModuleId m) {
  if (m.valid() && m.index() < model.modules.size() && !model.modules[m.index()].name.empty())
    return model.modules[m.index()].name;
  std::string out = "module ";  // appended, not "..." + ...: g++ 12 -O3 warns falsely (-Wrestrict) on that form
  out += std::to_string(m.value());
  return out;
}

/// The stage a compute action runs.
[[nodiscard]] constexpr StageRef stage_of(const Forward& f) noexcept {
  return StageRef{f.module, f.chunk, f.sub_microbatch, Pass::forward};
}
[[nodiscard]] constexpr StageRef stage_of(const Backward& b) noexcept {
  return StageRef{b.module, b.chunk, b.sub_microbatch, b.pass};
}

/// Short form: "F vit c2 s17".
[[nodiscard]] inline std::string stage_label(const ModelSpec& model, const StageRef& s) {
  std::string out(pass_letter(s.pass));
  out += ' ';
  out += module_label(model, s.module);
  out += " c" + std::to_string(s.chunk) + " s" + std::to_string(s.sub_microbatch.value());
  return out;
}

/// Long form: "Forward vit chunk 2 sub-microbatch 17", "Backward(backward_weight) llm chunk 0 ...".
[[nodiscard]] inline std::string describe_stage(const ModelSpec& model, const StageRef& s) {
  std::string out;
  if (s.pass == Pass::forward) out = "Forward ";
  else if (s.pass == Pass::backward) out = "Backward ";
  else {
    out = "Backward(";
    out += to_string(s.pass);
    out += ") ";
  }
  out += module_label(model, s.module);
  out += " chunk " + std::to_string(s.chunk) + " sub-microbatch " + std::to_string(s.sub_microbatch.value());
  return out;
}

/// Long form of an action, for error messages (see the header comment).
[[nodiscard]] inline std::string action_label(const Plan& plan, const ModelSpec& model, const Action& a) {
  const auto transfer = [&](const char* kind, TransferId t) {
    std::string out = kind;
    out += " transfer " + std::to_string(t.value());
    if (t.valid() && t.index() < plan.transfers.size()) {
      const Transfer& tr = plan.transfers[t.index()];
      out += " (" + describe_stage(model, tr.producer) + " on rank " + std::to_string(tr.from.value()) + " -> " +
             describe_stage(model, tr.consumer) + " on rank " + std::to_string(tr.to.value()) + ")";
    } else {
      out += " (no such transfer)";
    }
    return out;
  };
  return std::visit(
      [&](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Forward> || std::is_same_v<T, Backward>) return describe_stage(model, stage_of(x));
        else if constexpr (std::is_same_v<T, Send>) return transfer("Send", x.transfer);
        else if constexpr (std::is_same_v<T, Recv>) return transfer("Recv", x.transfer);
        else return transfer("Wait", x.transfer);
      },
      a);
}

}  // namespace pipeweaver
