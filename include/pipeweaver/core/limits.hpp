#pragma once
// The documented maximums of every size the library accepts, in one place. Readers and
// validators refuse anything beyond them with Error(input) (or Error(invalid_plan) for a plan
// built in code) before allocating in proportion to it; within them nothing the library forms
// overflows, and memory stays within a stated bound. Time and memory arithmetic is checked as
// well (core/units.hpp), so a product of in-range figures that leaves 64 bits is an error too,
// never a wrapped value.
//
// Why these values:
//  * counts that index arrays (ranks, chunks, sub-microbatches, stages) stay below 2^31, so an
//    int32 id never wraps, and their products with one another (ranks x ranks, sub-microbatches
//    x chunks) are bounded by max_stages_per_step before anything of that size is allocated;
//  * token counts stay below 2^30 per item (2^36 per sub-microbatch), so tokens x hidden
//    (2^20) x 8 bytes stays below 2^63;
//  * files are read with a size cap, and JSON nesting is bounded, so a reader's memory is a
//    small multiple of max_file_bytes.
#include <cstdint>

namespace pipeweaver::limits {

// --- files ---------------------------------------------------------------------------------
inline constexpr std::int64_t max_file_bytes = std::int64_t{64} << 20;  ///< any input file (JSON or binary plan)
inline constexpr int max_json_depth = 64;                              ///< nesting of arrays and objects

// --- model ---------------------------------------------------------------------------------
inline constexpr std::int64_t max_modules = 256;
inline constexpr std::int64_t max_layers = 32767;  // MemoryStrategy counts layers in int16
inline constexpr std::int64_t max_hidden = std::int64_t{1} << 20;
inline constexpr std::int64_t max_heads = std::int64_t{1} << 16;
inline constexpr std::int64_t max_vocab = std::int64_t{1} << 24;
inline constexpr double max_output_tokens_per_input_token = 1024;

// --- setup ---------------------------------------------------------------------------------
inline constexpr std::int64_t max_pipeline_stages = 1024;  ///< also the most ranks a plan may have
inline constexpr std::int64_t max_tensor_parallel = 1024;
inline constexpr std::int64_t max_data_parallel = std::int64_t{1} << 20;
inline constexpr std::int64_t max_microbatches_per_step = std::int64_t{1} << 16;  ///< also per batch and per plan
inline constexpr std::int64_t max_microbatch_tokens = std::int64_t{1} << 30;
inline constexpr std::int64_t max_microbatch_items = std::int64_t{1} << 20;
/// Device and link figures: a range wide enough for any real machine (a CPU core to a future
/// accelerator) and narrow enough that one token's work takes a representable time.
inline constexpr double min_device_rate = 1e-3;  ///< bf16_tflops, hbm_gb_per_s, gb_per_s: at least this
inline constexpr double max_device_rate = 1e9;   ///< and at most this
inline constexpr double max_memory_gib = 1 << 20;      ///< 1 PiB per device
inline constexpr double max_link_latency_us = 1e6;     ///< one second
inline constexpr double max_optimizer_bytes_per_param = 1024;

// --- data: datasets, samples, batches -------------------------------------------------------
inline constexpr std::int64_t max_mixture_sources = 1024;  ///< sources of a dataset (a sample draws among them)
inline constexpr std::int64_t max_choice_values = 1024;    ///< values of a "choice" distribution (a draw scans them)
inline constexpr std::int64_t max_source_modalities = max_modules;  ///< item modalities of one source
inline constexpr std::int64_t max_suite_cases = 1024;
inline constexpr std::int64_t max_item_tokens = max_microbatch_tokens;  ///< tokens of one item, and a sample's text
inline constexpr std::int64_t max_items_per_sample = 65536;            ///< items of one modality in one sample
inline constexpr std::int64_t max_samples_per_microbatch = 65536;
/// Items (of every modality) and samples one step may hold when sampled from a dataset: the
/// packer refuses a step that needs more (a budget module that the data gives almost no
/// tokens), so that sampling's memory stays bounded (a few hundred MB at these counts).
inline constexpr std::int64_t max_items_per_step = std::int64_t{1} << 24;
inline constexpr std::int64_t max_samples_per_step = std::int64_t{1} << 22;
/// Tokens one microbatch puts on one module (the budget module has its own, smaller budget;
/// the backbone also gets encoder outputs, up to 1024 per input token).
inline constexpr std::int64_t max_module_tokens_per_microbatch = std::int64_t{1} << 36;

// --- plans ---------------------------------------------------------------------------------
inline constexpr std::int64_t max_ranks = max_pipeline_stages;
inline constexpr std::int64_t max_chunks_per_module = max_layers;
inline constexpr std::int64_t max_sub_microbatches = std::int64_t{1} << 22;
inline constexpr std::int64_t max_items_per_sub_microbatch = max_microbatch_items;
inline constexpr std::int64_t max_sub_microbatch_tokens = max_module_tokens_per_microbatch;
inline constexpr std::int64_t max_transfers = std::int64_t{1} << 23;
inline constexpr std::int64_t max_transfer_bytes = std::int64_t{1} << 50;  ///< 1 PiB
/// Stage nodes of one step (forward and backward parts): the stage graph, the validator and
/// the search allocate in proportion to it (a few hundred bytes each).
inline constexpr std::int64_t max_stages_per_step = std::int64_t{1} << 22;

// --- time ----------------------------------------------------------------------------------
/// Any time the library forms (a stage, a transfer, a step) is below 2^62 ns (146 years);
/// beyond it, Error(input) (core/units.hpp).
inline constexpr std::int64_t max_nanoseconds = std::int64_t{1} << 62;
/// Any byte count the library forms is below 2^62 (4 EiB); beyond it, Error(input).
inline constexpr std::int64_t max_bytes = std::int64_t{1} << 62;

}  // namespace pipeweaver::limits
