#!/usr/bin/env bash
# The CUDA backend's GPU suite in one script.
#
#   backends/cuda/gpu_suite.sh build   on the build machine (nvcc, no GPU needed): builds the GPU
#                                      suite, the real-API tests and the example trainers in
#                                      build/test and copies the binaries to build/gpu-suite
#                                      (a few MiB; carry that folder to the GPU machine)
#   backends/cuda/gpu_suite.sh run     on the GPU machine, from the repository root: runs them
#                                      (about 2 minutes; 240 s at most per program)
#
# Every failure is loud: a missing binary, no GPU, a missing NCCL or CUDA runtime library, a
# failing case, a program that runs past its limit: the script stops with a non-zero status
# and says which. "run" finds libnccl.so.2 and libcudart.so.13 on the GPU machine (CUDA
# toolkit, or the nvidia-* Python wheels of PyTorch) and puts their folders on
# LD_LIBRARY_PATH; PIPEWEAVER_WORKLOADS points the binaries at this checkout's workloads.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${here}/build/gpu-suite"

die() {
  echo "gpu_suite: FAILED: $*" >&2
  exit 1
}

build() {
  cd "${here}"
  cmake --preset test -DPIPEWEAVER_BUILD_GPU_SUITE=ON
  ninja -C build/test -j2 test_backends_cuda_gpu test_backends_cuda cuda_train
  ninja -C build/test -j2 mpi_train || echo "gpu_suite: mpi_train not built (MPI missing?): the suite runs without it"
  rm -rf "${out}"
  mkdir -p "${out}"
  for b in test_backends_cuda_gpu test_backends_cuda; do
    cp "build/test/test/${b}" "${out}/" || die "build/test/test/${b} missing"
  done
  cp build/test/examples/cuda/cuda_train "${out}/" || die "build/test/examples/cuda/cuda_train missing"
  if [[ -f build/test/examples/cuda/mpi_train ]]; then cp build/test/examples/cuda/mpi_train "${out}/"; fi
  strip --strip-debug "${out}"/* || true
  du -sh "${out}"
}

find_lib() {  # the folder holding library $1: the CUDA toolkit, ld.so's cache, Python wheels
  local name="$1" hit=""
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/lib/x86_64-linux-gnu; do
    [[ -e "${d}/${name}" ]] && { echo "${d}"; return 0; }
  done
  for py in python3 /usr/bin/python3; do
    command -v "${py}" > /dev/null || continue
    local site
    site="$("${py}" -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2> /dev/null || true)"
    while read -r s; do
      [[ -d "${s}/nvidia" ]] || continue
      hit="$(find "${s}/nvidia" -name "${name}" 2> /dev/null | head -n 1)"
      [[ -n "${hit}" ]] && { dirname "${hit}"; return 0; }
    done <<< "${site}"
  done
  return 1
}

run() {
  cd "${here}"
  [[ -d "${out}" ]] || die "${out} missing: run 'gpu_suite.sh build' on the build machine and carry build/gpu-suite"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "gpu_suite: no nvidia-smi"
  local nccl cudart
  nccl="$(find_lib libnccl.so.2)" || die "libnccl.so.2 not found (CUDA toolkit or the nvidia-nccl wheel)"
  cudart="$(find_lib libcudart.so.13)" || die "libcudart.so.13 not found (CUDA 13 toolkit or the nvidia-cuda-runtime wheel)"
  export LD_LIBRARY_PATH="${nccl}:${cudart}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
  export PIPEWEAVER_WORKLOADS="${here}/examples/workloads"
  echo "gpu_suite: NCCL from ${nccl}, CUDA runtime from ${cudart}"
  local status=0
  echo "=== GPU suite (doctest test suite gpu)"
  timeout 240 "${out}/test_backends_cuda_gpu" --test-suite=gpu --success=false --duration=true || { echo "gpu_suite: FAILED: test_backends_cuda_gpu (status $?)"; status=1; }
  echo "=== the real-API tests (with a GPU they check that construction and a one-rank communicator succeed)"
  timeout 120 "${out}/test_backends_cuda" || { echo "gpu_suite: FAILED: test_backends_cuda (status $?)"; status=1; }
  echo "=== the example trainer, single-process mode (4 rank threads on GPU 0, device-to-device copies)"
  timeout 120 "${out}/cuda_train" --local --steps 3 || { echo "gpu_suite: FAILED: cuda_train --local (status $?)"; status=1; }
  local gpus
  gpus="$(nvidia-smi -L 2> /dev/null | wc -l || echo 0)"
  if [[ -x "${out}/mpi_train" ]] && command -v mpirun > /dev/null && [[ "${gpus}" -ge 4 ]] && ! ldd "${out}/mpi_train" | grep -q "not found"; then
    echo "=== the MPI example, 4 processes over NCCL"
    timeout 120 mpirun --allow-run-as-root --oversubscribe -np 4 -x LD_LIBRARY_PATH -x PIPEWEAVER_WORKLOADS "${out}/mpi_train" --steps 3 ||
      { echo "gpu_suite: FAILED: mpirun mpi_train (status $?)"; status=1; }
  else
    echo "gpu_suite: the 4-process MPI run is not testable here (${gpus} GPU(s); mpirun: $(command -v mpirun || echo none); needs 4 GPUs and Open MPI's libraries)"
  fi
  [[ ${status} -eq 0 ]] || die "see the failures above"
  echo "gpu_suite: all passed"
}

case "${1:-}" in
  build) build ;;
  run) run ;;
  *) echo "usage: $0 build|run" >&2; exit 2 ;;
esac
