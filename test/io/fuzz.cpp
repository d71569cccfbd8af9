// Fuzz-style robustness: a few thousand deterministically mutated versions of every shipped
// workload file go through the readers; each must either read (and then sample/pack without
// trouble) or throw pipeweaver::Error -- never another exception, a crash or a hang. Runs
// under ASan/UBSan in the asan preset.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeweaver/data/packing.hpp"
#include "pipeweaver/data/random.hpp"
#include "pipeweaver/data/sampler.hpp"
#include "pipeweaver/io/workload_json.hpp"

using namespace pipeweaver;
using json = nlohmann::json;

namespace {
const std::string workloads = PIPEWEAVER_WORKLOADS_DIR;

enum class Kind { model, setup, dataset, suite };

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// JSON pointers of every node of `j` (the root included).
void pointers(const json& j, const std::string& at, std::vector<std::string>& out) {
  out.push_back(at);
  auto child = [&](const std::string& token) {  // appends: g++ 12 -O3 warns falsely on "/" + temporary
    std::string p = at;
    p += '/';
    p += token;
    return p;
  };
  if (j.is_object())
    for (const auto& [k, v] : j.items()) pointers(v, child(detail::json_pointer_token(k)), out);
  else if (j.is_array())
    for (std::size_t i = 0; i < j.size(); ++i) pointers(j[i], child(std::to_string(i)), out);
}

json replacement(Rng& rng) {
  switch (rng.below(14)) {
    case 0: return "x";
    case 1: return 0;
    case 2: return -1;
    case 3: return 1.5;
    case 4: return true;
    case 5: return nullptr;
    case 6: return json::array();
    case 7: return json::object();
    case 8: return json::array({1, 2});
    case 9: return 1e300;
    case 10: return 18446744073709551615ULL;
    case 11: return -9223372036854775807LL - 1;
    case 12: return "llm";
    default: return 3;
  }
}

/// One structural mutation of parsed JSON: rename a key, swap a value's type, negate or zero a
/// number, delete a key or element, or copy one node over another.
void mutate_json(json& j, Rng& rng) {
  std::vector<std::string> ptrs;
  pointers(j, "", ptrs);
  const json::json_pointer target(ptrs[rng.below(ptrs.size())]);
  json& node = j[target];
  switch (rng.below(6)) {
    case 0: {  // rename a key
      if (!node.is_object() || node.empty()) return;
      auto it = node.begin();
      std::advance(it, static_cast<long>(rng.below(node.size())));
      std::string key = it.key();
      json value = it.value();
      node.erase(key);
      static const char* suffixes[] = {"s", "_", "X", ""};
      std::string renamed = key.empty() ? "k" : key.substr(0, key.size() - rng.below(2)) + suffixes[rng.below(4)];
      if (renamed == key) renamed += "2";
      node[renamed] = std::move(value);
      return;
    }
    case 1: node = replacement(rng); return;  // type swap
    case 2:  // negate or zero a number
      if (node.is_number_float()) node = rng.below(2) ? -node.get<double>() : 0.0;
      else if (node.is_number_integer()) node = rng.below(2) ? -node.get<std::int64_t>() : 0;
      return;
    case 3:  // delete a key or an element
      if (node.is_object() && !node.empty()) {
        auto it = node.begin();
        std::advance(it, static_cast<long>(rng.below(node.size())));
        node.erase(it);
      } else if (node.is_array() && !node.empty()) {
        node.erase(node.begin() + static_cast<long>(rng.below(node.size())));
      }
      return;
    case 4: {  // copy another node here
      const json other = j[json::json_pointer(ptrs[rng.below(ptrs.size())])];
      j[target] = other;
      return;
    }
    default:  // duplicate an array element
      if (node.is_array() && !node.empty()) node.push_back(node[rng.below(node.size())]);
      return;
  }
}

/// t with `piece` inserted at `at` (built by appends: g++ 12 -O3 warns falsely on insert).
std::string inserted(const std::string& t, std::size_t at, const std::string& piece) {
  std::string out;
  out.reserve(t.size() + piece.size());
  out.append(t, 0, at);
  out.append(piece);
  out.append(t, at, std::string::npos);
  return out;
}

/// One textual mutation: flip a byte, delete or duplicate a range, insert a JSON-ish byte.
void mutate_text(std::string& t, Rng& rng) {
  if (t.empty()) {
    t.push_back('{');
    return;
  }
  static const char interesting[] = "{}[]\":,0-e.9 \n\\xtnf/~";
  const auto pos = static_cast<std::size_t>(rng.below(t.size()));
  switch (rng.below(4)) {
    case 0:
      t[pos] = rng.below(3) == 0 ? static_cast<char>(rng.below(256)) : interesting[rng.below(sizeof interesting - 1)];
      return;
    case 1: t.erase(pos, 1 + rng.below(8)); return;
    case 2: {
      const auto len = std::min<std::size_t>(t.size() - pos, 1 + rng.below(16));
      t = inserted(t, static_cast<std::size_t>(rng.below(t.size() + 1)), t.substr(pos, len));
      return;
    }
    default: t = inserted(t, pos, std::string(1, interesting[rng.below(sizeof interesting - 1)])); return;
  }
}

struct Outcome {
  int read = 0, rejected = 0;
};

/// Runs one mutant through its reader and, if it reads, through what consumes it.
void run(Kind kind, const std::string& text, const ModelSpec& vlm, const Setup& h800, Outcome& out) {
  try {
    switch (kind) {
      case Kind::model: {
        const ModelSpec m = io::parse_model(text, "mutant.json");
        io::check_compatible(m, h800, "h800.json");
        break;
      }
      case Kind::setup: {
        const Setup s = io::parse_setup(text, "mutant.json");
        io::check_compatible(vlm, s, "mutant.json");
        break;
      }
      case Kind::dataset: {
        const DatasetSpec d = io::parse_dataset(text, "mutant.json");
        DatasetSampler sampler(d, 5);
        std::vector<Sample> samples;
        for (int i = 0; i < 16; ++i) samples.push_back(sampler.next());
        (void)pack(vlm, h800, samples);
        break;
      }
      case Kind::suite: (void)io::parse_suite(text, "dir/suite.json"); break;
    }
    ++out.read;
  } catch (const Error&) {
    ++out.rejected;
  } catch (const std::exception& e) {
    FAIL("non-pipeweaver exception: " << e.what() << "\non input:\n" << text);
  } catch (...) {
    FAIL("unknown exception on input:\n" << text);
  }
}
}  // namespace

TEST_CASE("fuzz: mutated workload files give a result or a pipeweaver::Error") {
  std::vector<std::pair<Kind, std::filesystem::path>> files;
  for (auto [kind, dir] : {std::pair{Kind::model, "models"}, std::pair{Kind::setup, "setups"}, std::pair{Kind::dataset, "datasets"}})
    for (const auto& e : std::filesystem::directory_iterator(workloads + "/" + dir)) files.emplace_back(kind, e.path());
  files.emplace_back(Kind::suite, workloads + "/suite.json");
  std::sort(files.begin(), files.end());  // directory order differs between file systems
  REQUIRE(files.size() >= 15);

  const ModelSpec vlm = io::read_model(workloads + "/models/vlm-s.json");
  const Setup h800 = io::read_setup(workloads + "/setups/h800-tp4-pp4.json");
  Rng rng(0xf00d);
  Outcome out;
  int mutants = 0;
  for (const auto& [kind, path] : files) {
    const std::string original = slurp(path);
    const json parsed = json::parse(original);
    for (int i = 0; i < 200; ++i, ++mutants) {
      std::string text;
      if (rng.below(2) == 0) {
        json j = parsed;
        const auto n = 1 + rng.below(3);
        for (std::uint64_t k = 0; k < n; ++k) mutate_json(j, rng);
        text = j.dump(rng.below(2) ? 2 : -1);
      } else {
        text = original;
        const auto n = 1 + rng.below(3);
        for (std::uint64_t k = 0; k < n; ++k) mutate_text(text, rng);
      }
      run(kind, text, vlm, h800, out);
    }
  }
  MESSAGE(mutants << " mutants: " << out.read << " read, " << out.rejected << " rejected with pipeweaver::Error");
  CHECK(mutants >= 3000);
  CHECK(out.read > 0);      // harmless mutations (a description) still read
  CHECK(out.rejected > out.read);
}
