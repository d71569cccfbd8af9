#pragma once
// Umbrella header for emulate/: SEMU (plan emulation), the search's schedule emulator, the
// stage-cost cache and the lower bound.
#include "pipeweaver/emulate/emulator.hpp"
#include "pipeweaver/emulate/lower_bound.hpp"
#include "pipeweaver/emulate/result.hpp"
#include "pipeweaver/emulate/schedule_emulator.hpp"
#include "pipeweaver/emulate/stage_cost_cache.hpp"
