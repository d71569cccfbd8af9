#pragma once
// Everything of the target pipeweaver::core: the std-only library (no JSON, no backend).
#include "pipeweaver/baselines.hpp"
#include "pipeweaver/core.hpp"
#include "pipeweaver/cost.hpp"
#include "pipeweaver/data.hpp"
#include "pipeweaver/emulate.hpp"
#include "pipeweaver/execute.hpp"
#include "pipeweaver/ir.hpp"
#include "pipeweaver/model.hpp"
#include "pipeweaver/partition.hpp"
#include "pipeweaver/planner.hpp"
#include "pipeweaver/schedule.hpp"
#include "pipeweaver/search.hpp"
