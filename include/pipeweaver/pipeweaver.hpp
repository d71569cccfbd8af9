#pragma once
// Everything: include this, or a folder's umbrella header, or a single component.
#include "pipeweaver/core.hpp"
#include "pipeweaver/cost.hpp"
#include "pipeweaver/data.hpp"
#include "pipeweaver/emulate.hpp"
#include "pipeweaver/execute.hpp"
#include "pipeweaver/io.hpp"
#include "pipeweaver/model.hpp"
#include "pipeweaver/partition.hpp"
#include "pipeweaver/plan.hpp"
#include "pipeweaver/schedule.hpp"
