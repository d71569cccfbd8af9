#pragma once
// Everything: include this, or a folder's umbrella header, or a single component.
#include "pipeweaver/core.hpp"
#include "pipeweaver/data.hpp"
#include "pipeweaver/model.hpp"
#include "pipeweaver/schedule.hpp"
