// The real CUDA runtime and NCCL, linked (cudart, NCCL and the kernels library): the library's
// NCCL version equals its header's, the checking wrapper's errors, NCCL unique ids made without a
// device and carried by a BroadcastFunction, and the no-GPU path: where CUDA cannot run (error
// 35, no driver; error 100, no device) the runtime's constructor throws Error(infeasible)
// quoting CUDA's own message, and communicator setup fails at once instead of hanging. Where a
// GPU is present the same cases check the other branch (construction and setup succeed).
#include <doctest/doctest.h>

#include <pipeweaver/cuda.hpp>
#include <pipeweaver/host/broadcast.hpp>

#include <chrono>
#include <exception>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace pw = pipeweaver;
namespace cu = pipeweaver::cuda;
using namespace std::chrono_literals;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// What CUDA itself says about this machine.
struct Machine {
  cudaError_t error = cudaSuccess;
  int devices = 0;
  Machine() { error = cudaGetDeviceCount(&devices); }
  [[nodiscard]] bool has_gpu() const { return error == cudaSuccess && devices > 0; }
};

}  // namespace

TEST_CASE("cuda: the NCCL library's version equals its header's") {
  CHECK(cu::CudaApi::nccl_version() == NCCL_VERSION_CODE);
}

TEST_CASE("cuda: the checking wrapper names the call, the result code with its name and message, and the line") {
  SUBCASE("an NCCL call") {
    int count = 0;
    const int line = __LINE__ + 2;
    try {
      PW_NCCL_CHECK(ncclCommCount(nullptr, &count));
      FAIL("no error");
    } catch (const pw::Error& e) {
      INFO(e.what());
      CHECK(e.kind() == pw::ErrorKind::execution);
      CHECK(contains(e.what(), std::string("ncclCommCount(nullptr, &count) returned 4 ncclInvalidArgument: ") + ncclGetErrorString(ncclInvalidArgument)));
      CHECK(contains(e.what(), "cuda_api.cpp:" + std::to_string(line)));
    }
  }
  SUBCASE("a CUDA error that is not about the device") {
    const int line = __LINE__ + 2;
    try {
      cu::check_cuda(cudaErrorInvalidValue, "cudaMemcpyAsync(dst, src, n, kind, s)");
      FAIL("no error");
    } catch (const pw::Error& e) {
      INFO(e.what());
      CHECK(e.kind() == pw::ErrorKind::execution);
      CHECK(contains(e.what(), std::string("cudaMemcpyAsync(dst, src, n, kind, s) returned ") + std::to_string(static_cast<int>(cudaErrorInvalidValue)) +
                                   " " + cudaGetErrorName(cudaErrorInvalidValue) + ": " + cudaGetErrorString(cudaErrorInvalidValue)));
      CHECK(contains(e.what(), "cuda_api.cpp:" + std::to_string(line)));
    }
  }
  SUBCASE("no driver or no device is infeasible, not a failure of the run") {
    for (const cudaError_t code : {cudaErrorInsufficientDriver, cudaErrorNoDevice}) {
      try {
        cu::check_cuda(code, "cudaGetDeviceCount(&count)");
        FAIL("no error");
      } catch (const pw::Error& e) {
        CHECK(e.kind() == pw::ErrorKind::infeasible);
        CHECK(contains(e.what(), std::string("no usable CUDA device: cudaGetDeviceCount(&count) returned ") + std::to_string(static_cast<int>(code)) + " " +
                                     cudaGetErrorName(code)));
      }
    }
  }
}

TEST_CASE("cuda: constructing the runtime without a usable device is infeasible and quotes CUDA") {
  const Machine m;
  cu::World<cu::CudaApi> world(1, {});
  if (!m.has_gpu()) {
    REQUIRE(cu::is_no_device(m.error));  // this machine: 35 (no driver) or 100 (no device)
    try {
      cu::CudaRuntime rt(world, pw::RankId{0}, cu::CudaApi{0});
      FAIL("no error");
    } catch (const pw::Error& e) {
      INFO(e.what());
      CHECK(e.kind() == pw::ErrorKind::infeasible);
      CHECK(contains(e.what(), "no usable CUDA device: cudaGetDeviceCount(&count) returned " + std::to_string(static_cast<int>(m.error)) + " " +
                                   cudaGetErrorName(m.error) + ": " + cudaGetErrorString(m.error)));
    }
  } else {
    MESSAGE("this machine has " << m.devices << " CUDA device(s): checking that construction succeeds");
    CHECK_NOTHROW(cu::CudaRuntime(world, pw::RankId{0}, cu::CudaApi{0}));
    try {
      cu::CudaRuntime rt(world, pw::RankId{0}, cu::CudaApi{m.devices});  // one past the last
      FAIL("no error");
    } catch (const pw::Error& e) {
      CHECK(e.kind() == pw::ErrorKind::infeasible);
    }
  }
}

TEST_CASE("cuda: NCCL unique ids need no device and travel over a broadcast function") {
  constexpr int P = 3;
  pw::host::InProcessBroadcast bcast(P, 10s);
  std::vector<std::vector<cu::UniqueId>> got(P);
  std::vector<std::exception_ptr> errors(P);
  std::vector<std::thread> ranks;
  for (int r = 0; r < P; ++r)
    ranks.emplace_back([&, r] {
      try {
        cu::CudaApi api{0};
        got[static_cast<std::size_t>(r)] = cu::exchange_unique_ids(api, bcast, pw::RankId{r}, pw::RankId{0}, P, cu::CommTopology::per_edge);
      } catch (...) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
      }
    });
  for (auto& t : ranks) t.join();
  for (const auto& e : errors) REQUIRE_FALSE(e);
  REQUIRE(got[0].size() == cu::comm_count(cu::CommTopology::per_edge, P));
  for (int r = 1; r < P; ++r) CHECK(got[static_cast<std::size_t>(r)] == got[0]);
  CHECK(std::set<cu::UniqueId>(got[0].begin(), got[0].end()).size() == got[0].size());  // one id per communicator
}

TEST_CASE("cuda: communicator setup without a usable device fails at once, naming NCCL's error") {
  const Machine m;
  cu::CudaApi api{0};
  const auto ids = cu::make_unique_ids(api, cu::CommTopology::single, 1);
  if (m.has_gpu()) {  // the other branch: a one-rank communicator initializes
    api.activate();
    auto links = cu::init_comm_links(api, ids, cu::CommTopology::single, pw::RankId{0}, 1, 60s);
    CHECK(links.all.size() == 1);
    for (auto c : links.all) api.comm_abort(c);
    return;
  }
  const auto start = std::chrono::steady_clock::now();
  try {
    (void)cu::init_comm_links(api, ids, cu::CommTopology::single, pw::RankId{0}, 1, 5s);
    FAIL("no error");
  } catch (const pw::Error& e) {
    INFO(e.what());
    CHECK(e.kind() == pw::ErrorKind::execution);
    CHECK(contains(e.what(), "ncclCommInitRankConfig(&c, ranks, id, rank, &config) returned 1 ncclUnhandledCudaError"));
  }
  CHECK(std::chrono::steady_clock::now() - start < 5s);  // no wait for the deadline
}

TEST_CASE("cuda: the kernels library is linked") {
  const cu::KernelTable& k = cu::builtin_kernels();
  CHECK((k.accumulate_f32 != nullptr));
  CHECK((k.spin != nullptr));
  const Machine m;
  if (!m.has_gpu()) {
    // Launching needs a device: the launch reports CUDA's error instead of crashing.
    CHECK(k.spin(1000, nullptr) != cudaSuccess);
  }
}
