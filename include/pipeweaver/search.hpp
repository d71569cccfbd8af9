#pragma once
// Umbrella header for search/: segment units and seed orders, MCTS, the memory-strategy
// optimizer and the schedule search.
#include "pipeweaver/search/mcts.hpp"
#include "pipeweaver/search/memory_optimizer.hpp"
#include "pipeweaver/search/schedule_evaluator.hpp"
#include "pipeweaver/search/schedule_search.hpp"
#include "pipeweaver/search/segments.hpp"
