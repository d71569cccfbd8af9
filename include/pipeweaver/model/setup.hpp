#pragma once
// The machines and the training configuration (examples/workloads/README.md, "setups/*.json").
#include <cstdint>
#include <optional>
#include <string>

namespace pipeweaver {

struct DeviceSpec {
  std::string name{};
  double bf16_tflops = 0;   ///< peak dense bf16 TFLOP/s of one device
  double hbm_gb_per_s = 0;  ///< memory bandwidth, GB/s (1e9 bytes)
  double memory_gib = 0;
  double reserved_gib = 0;  ///< held by the framework, never available to the plan
};

struct LinkSpec {
  double gb_per_s = 0;  ///< one direction, 1e9 bytes per second
  double latency_us = 0;
};

struct MicrobatchBudget {
  std::string module{};                    ///< module whose tokens are counted (a name in the model)
  std::int64_t max_tokens = 0;
  std::optional<std::int64_t> max_items{}; ///< at most this many items of that module's modality
};

struct Setup {
  std::string name{};
  std::string description{};
  int pipeline_stages = 1;  ///< P
  int tensor_parallel = 1;
  int data_parallel = 1;
  DeviceSpec device{};
  LinkSpec pipeline_link{};
  std::optional<LinkSpec> tensor_parallel_link{};  ///< required when tensor_parallel > 1
  MicrobatchBudget microbatch{};
  int microbatches_per_step = 1;
  double optimizer_bytes_per_param = 16;  ///< weights + grads + optimizer state, before data-parallel sharding
};

}  // namespace pipeweaver
