#pragma once
// Umbrella header for data/: samples, batches, dataset descriptions, sampling and packing.
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/data/dataset_spec.hpp"
