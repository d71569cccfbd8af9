# Every header that a .cu file may include (core/, model/, ir/, schedule/, execute/, and the
# CUDA backend's own headers) compiled alone by nvcc, in C++20 mode: catches range-v3 or other
# nvcc-hostile code before a user's .cu file does.
file(GLOB_RECURSE nvcc_headers CONFIGURE_DEPENDS
  "${PROJECT_SOURCE_DIR}/include/pipeweaver/core/*.hpp"
  "${PROJECT_SOURCE_DIR}/include/pipeweaver/model/*.hpp"
  "${PROJECT_SOURCE_DIR}/include/pipeweaver/ir/*.hpp"
  "${PROJECT_SOURCE_DIR}/include/pipeweaver/schedule/*.hpp"
  "${PROJECT_SOURCE_DIR}/include/pipeweaver/execute/*.hpp")
set(nvcc_cuda_headers)
if(TARGET pipeweaver::cuda)
  file(GLOB_RECURSE nvcc_cuda_headers CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/backends/cuda/include/pipeweaver/*.hpp")
endif()
set(nvcc_sources)
foreach(h IN LISTS nvcc_headers nvcc_cuda_headers)
  if(h IN_LIST nvcc_cuda_headers)
    file(RELATIVE_PATH rel "${PROJECT_SOURCE_DIR}/backends/cuda/include" "${h}")
  else()
    file(RELATIVE_PATH rel "${PROJECT_SOURCE_DIR}/include" "${h}")
  endif()
  string(REGEX REPLACE "[/.]" "_" stem "${rel}")
  set(cu "${CMAKE_CURRENT_BINARY_DIR}/nvcc_headers/${stem}.cu")
  file(CONFIGURE OUTPUT "${cu}" CONTENT "#include <${rel}>\n")
  list(APPEND nvcc_sources "${cu}")
endforeach()
add_library(pipeweaver_nvcc_headers OBJECT ${nvcc_sources})
target_link_libraries(pipeweaver_nvcc_headers PRIVATE pipeweaver::core)
if(TARGET pipeweaver::cuda)
  target_link_libraries(pipeweaver_nvcc_headers PRIVATE pipeweaver::cuda)
endif()
target_compile_options(pipeweaver_nvcc_headers PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20>)
