#pragma once
// Umbrella header for data/: samples, batches, dataset descriptions, the seeded sampler and
// packing.
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/data/batch_check.hpp"
#include "pipeweaver/data/dataset_spec.hpp"
#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/data/random.hpp"
#include "pipeweaver/data/sampler.hpp"
