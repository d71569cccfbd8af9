#pragma once
// One training step's batch as JSON (the `--batch` file of `pipeweaver plan`): its microbatches,
// each a list of samples in the workload sample format (examples/workloads/README.md):
//
//   {"microbatches": [[{"text": 412, "image": [676, 676]}, {"text": 98}],
//                     [{"text": 1024, "video": [2048]}]],
//    "truncated_samples": 0}
//
// A sample has "text" (its text tokens, an integer in [0, limits::max_item_tokens]) and, per
// modality with items, a non-empty array of at most limits::max_items_per_sample token counts
// (integers in [1, limits::max_item_tokens]); "truncated_samples" is optional (default 0). Every
// microbatch holds at least one sample and at most limits::max_samples_per_microbatch; a batch
// at most limits::max_microbatches_per_step microbatches. Unknown top-level keys are errors;
// errors are Error(input) naming the file, the JSON path and what was expected. Reading is
// linear in the file (a path is built only for an error).
// check_batch(model, setup, batch, source) checks a batch read from a file against the model
// and the setup (data/batch_check.hpp), naming the file in its errors.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeweaver/core/error.hpp"
#include "pipeweaver/core/limits.hpp"
#include "pipeweaver/data/batch.hpp"
#include "pipeweaver/data/batch_check.hpp"
#include "pipeweaver/io/detail/json_reader.hpp"
#include "pipeweaver/model/model_spec.hpp"
#include "pipeweaver/model/setup.hpp"
#include "pipeweaver/model/validate.hpp"

namespace pipeweaver::io {

/// The batch as JSON (the format of the header comment).
[[nodiscard]] inline nlohmann::ordered_json to_json(const Batch& batch) {
  nlohmann::ordered_json mbs = nlohmann::ordered_json::array();
  for (const Microbatch& mb : batch.microbatches) {
    nlohmann::ordered_json samples = nlohmann::ordered_json::array();
    for (const Sample& s : mb.samples) {
      nlohmann::ordered_json j;
      j["text"] = s.text;
      for (const SampleItems& it : s.items) j[it.modality] = it.tokens;
      samples.push_back(std::move(j));
    }
    mbs.push_back(std::move(samples));
  }
  nlohmann::ordered_json out;
  out["microbatches"] = std::move(mbs);
  out["truncated_samples"] = batch.truncated_samples;
  return out;
}

namespace detail {

inline constexpr std::int64_t max_batch_tokens = limits::max_item_tokens;

inline Sample sample_from_json(const nlohmann::json& j, const std::string& path, const std::string& file) {
  const auto fail = [&](const std::string& p, std::string message, std::string expected) {
    throw input_error(std::move(message), {.file = file, .path = p, .expected = std::move(expected)});
  };
  if (!j.is_object()) fail(path, "found " + json_type_name(j), "a sample: {\"text\": N, \"<modality>\": [tokens, ...]}");
  // Modalities are open-ended, so every key but "text" is a modality (checked against the
  // model by check_compatible).
  const CheckedObject reader(nlohmann::json::object(), path, file, {});
  Sample s;
  bool has_text = false;
  for (const auto& [key, value] : j.items()) {
    const std::string p = path + "/" + json_pointer_token(key);
    if (key == "text") {
      s.text = reader.integer_value(value, p, 0, max_batch_tokens);
      has_text = true;
      continue;
    }
    if (key.empty()) fail(p, "empty modality name", "\"text\" or a modality name");
    if (!value.is_array()) fail(p, "found " + json_type_name(value), "an array of item token counts");
    if (value.empty()) fail(p, "empty item list", "at least one item (leave the key out when the sample has none)");
    if (value.size() > static_cast<std::size_t>(limits::max_items_per_sample))
      fail(p, std::to_string(value.size()) + " items", "at most " + std::to_string(limits::max_items_per_sample) + " per modality and sample");
    SampleItems items;
    items.modality = key;
    items.tokens.reserve(value.size());
    for (std::size_t i = 0; i < value.size(); ++i) {
      // The common case without building the element's path; the reader's error otherwise.
      const auto& v = value[i];
      if (v.is_number_unsigned() && v.get<std::uint64_t>() >= 1 && v.get<std::uint64_t>() <= static_cast<std::uint64_t>(max_batch_tokens))
        items.tokens.push_back(static_cast<std::int64_t>(v.get<std::uint64_t>()));
      else
        items.tokens.push_back(reader.integer_value(v, p + "/" + std::to_string(i), 1, max_batch_tokens));
    }
    s.items.push_back(std::move(items));
  }
  if (!has_text) fail(path + "/text", "missing required key \"text\"", "the sample's text tokens, an integer >= 0");
  std::sort(s.items.begin(), s.items.end(), [](const SampleItems& a, const SampleItems& b) { return a.modality < b.modality; });
  return s;
}

inline Batch batch_from_json_impl(const nlohmann::json& j, std::string_view source) {
  const std::string file(source);
  const CheckedObject root(j, "", file, {"microbatches", "truncated_samples"}, "a batch (a JSON object)");
  Batch b;
  const auto& mbs = root.array("microbatches", /*non_empty=*/true);
  if (mbs.size() > static_cast<std::size_t>(limits::max_microbatches_per_step))
    root.fail("microbatches", std::to_string(mbs.size()) + " microbatches", "at most " + std::to_string(limits::max_microbatches_per_step));
  b.microbatches.reserve(mbs.size());
  for (std::size_t m = 0; m < mbs.size(); ++m) {
    const std::string mp = "/microbatches/" + std::to_string(m);
    if (!mbs[m].is_array())
      root.fail_at(mp, "found " + json_type_name(mbs[m]), "a microbatch: an array of samples");
    if (mbs[m].empty()) root.fail_at(mp, "empty microbatch", "at least one sample");
    if (mbs[m].size() > static_cast<std::size_t>(limits::max_samples_per_microbatch))
      root.fail_at(mp, std::to_string(mbs[m].size()) + " samples", "at most " + std::to_string(limits::max_samples_per_microbatch));
    Microbatch mb;
    mb.samples.reserve(mbs[m].size());
    for (std::size_t i = 0; i < mbs[m].size(); ++i)
      mb.samples.push_back(sample_from_json(mbs[m][i], mp + "/" + std::to_string(i), file));
    b.microbatches.push_back(std::move(mb));
  }
  if (root.has("truncated_samples"))
    b.truncated_samples = static_cast<int>(root.integer("truncated_samples", 0, 1 << 30));
  return b;
}

}  // namespace detail

/// A batch from parsed JSON; `source` names it in errors.
[[nodiscard]] inline Batch batch_from_json(const nlohmann::json& j, std::string_view source) {
  return detail::batch_from_json_impl(j, source);
}
/// A batch from JSON text.
[[nodiscard]] inline Batch parse_batch(std::string_view text, std::string_view source_name) {
  return detail::batch_from_json_impl(detail::parse_json_text(text, source_name), source_name);
}
/// A batch file.
[[nodiscard]] inline Batch read_batch(const std::filesystem::path& path) {
  return parse_batch(detail::read_text_file(path), path.string());
}
/// Writes `batch` as JSON; Error(input) naming the file when it cannot be written.
inline void write_batch(const std::filesystem::path& path, const Batch& batch) {
  std::ofstream out(path, std::ios::binary);
  if (out) out << to_json(batch).dump(1) << '\n';
  if (!out)
    throw input_error("cannot write the batch file", {.file = path.string(), .expected = "a writable path"});
}

/// check_batch (data/batch_check.hpp) with `source`, the batch's file, in the error.
inline void check_batch(const ModelSpec& model, const Setup& setup, const Batch& batch, std::string_view source) {
  try {
    pipeweaver::check_batch(model, setup, batch);
  } catch (const Error& e) {
    throw in_file(e, source);
  }
}

}  // namespace pipeweaver::io
