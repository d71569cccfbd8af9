# CUDA, where asked (PIPEWEAVER_CUDA AUTO or ON): the nvcc checks of the std-only headers and the
# CUDA backend (backends/cuda, target pipeweaver::cuda). Nothing else in the project uses CUDA.
include(CheckLanguage)
check_language(CUDA)
set(PIPEWEAVER_WITH_CUDA OFF)
if(CMAKE_CUDA_COMPILER)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90)  # "native" fails to configure without a GPU
  endif()
  enable_language(CUDA)
  set(PIPEWEAVER_WITH_CUDA ON)
  if(EXISTS "${PROJECT_SOURCE_DIR}/backends/cuda/CMakeLists.txt")
    add_subdirectory(backends/cuda)
  endif()
elseif(PIPEWEAVER_CUDA STREQUAL "ON")
  message(FATAL_ERROR "PIPEWEAVER_CUDA=ON but no CUDA compiler was found (set CMAKE_CUDA_COMPILER or CUDACXX)")
endif()
