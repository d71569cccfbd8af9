#pragma once
// Umbrella header for core/: ids, units (time and bytes), limits, errors, passes, memory strategies and
// the concepts users plug their types into.
#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/limits.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/core/units.hpp"
