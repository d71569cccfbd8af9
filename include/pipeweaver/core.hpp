#pragma once
// Umbrella header for core/: units, ids, errors, passes, memory strategies, the concepts.
#include "pipeweaver/core/concepts.hpp"
#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/ids.hpp"
#include "pipeweaver/core/memory_strategy.hpp"
#include "pipeweaver/core/pass.hpp"
#include "pipeweaver/core/units.hpp"
