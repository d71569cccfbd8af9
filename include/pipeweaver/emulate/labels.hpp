#pragma once
// Short human-readable names of stages and actions, shared by the emulator's errors and the
// pictures: "F vit c2 s17" = forward of chunk 2 of module "vit" on sub-microbatch 17
// ("B" backward, "Bi" input-gradient part, "Bw" weight-gradient part). std-only.
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/schedule/plan.hpp"

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

/// Name of module `m`, or "m<index>" when the model does not have it.
[[nodiscard]] inline std::string module_label(const ModelSpec& model, ModuleId m) {
  if (m.valid() && m.index() < model.modules.size() && !model.modules[m.index()].name.empty())
    return model.modules[m.index()].name;
  std::string out = "m";  // appended, not "m" + ...: g++ 12 -O3 warns falsely (-Wrestrict) on that form
  out += std::to_string(m.value());
  return out;
}

/// "F vit c2 s17".
[[nodiscard]] inline std::string stage_label(const ModelSpec& model, const StageRef& s) {
  std::string out(pass_letter(s.pass));
  out += ' ';
  out += module_label(model, s.module);
  out += " c" + std::to_string(s.chunk) + " s" + std::to_string(s.sub_microbatch.value());
  return out;
}

/// The stage a compute action runs.
[[nodiscard]] constexpr StageRef stage_of(const Forward& f) noexcept {
  return StageRef{f.module, f.chunk, f.sub_microbatch, Pass::forward};
}
[[nodiscard]] constexpr StageRef stage_of(const Backward& b) noexcept {
  return StageRef{b.module, b.chunk, b.sub_microbatch, b.pass};
}

/// "F vit c2 s17", "Send t12 (1->2, F vit c3 s17)", "Recv t12", "Wait t12". Works on broken plans
/// too (an out-of-range transfer id is printed as such).
[[nodiscard]] inline std::string action_label(const Plan& plan, const ModelSpec& model, const Action& a) {
  auto transfer_label = [&](const char* kind, TransferId t) {
    std::string out = std::string(kind) + " t" + std::to_string(t.value());
    if (t.valid() && t.index() < plan.transfers.size()) {
      const Transfer& tr = plan.transfers[t.index()];
      out += " (" + std::to_string(tr.from.value()) + "->" + std::to_string(tr.to.value()) + ", " +
             stage_label(model, tr.producer) + " -> " + stage_label(model, tr.consumer) + ")";
    } else {
      out += " (no such transfer)";
    }
    return out;
  };
  return std::visit(
      [&](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Forward> || std::is_same_v<T, Backward>) return stage_label(model, stage_of(x));
        else if constexpr (std::is_same_v<T, Send>) return transfer_label("Send", x.transfer);
        else if constexpr (std::is_same_v<T, Recv>) return transfer_label("Recv", x.transfer);
        else return transfer_label("Wait", x.transfer);
      },
      a);
}

}  // namespace pipeweaver
