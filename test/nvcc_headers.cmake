# Every header that a .cu file may include (core/, model/, ir/, schedule/, execute/) compiled
# alone by nvcc, in C++20 mode: catches range-v3 or other nvcc-hostile code before the CUDA
# backend does.
file(GLOB_RECURSE nvcc_headers CONFIGURE_DEPENDS
  "${PROJECT_SOURCE_DIR}/include/pipeweaver/core/*.hpp"
  "${PROJECT_SOURCE_DIR}/include/pipeweaver/model/*.hpp"
  "${PROJECT_SOURCE_DIR}/include/pipeweaver/ir/*.hpp"
  "${PROJECT_SOURCE_DIR}/include/pipeweaver/schedule/*.hpp"
  "${PROJECT_SOURCE_DIR}/include/pipeweaver/execute/*.hpp")
set(nvcc_sources)
foreach(h IN LISTS nvcc_headers)
  file(RELATIVE_PATH rel "${PROJECT_SOURCE_DIR}/include" "${h}")
  string(REGEX REPLACE "[/.]" "_" stem "${rel}")
  set(cu "${CMAKE_CURRENT_BINARY_DIR}/nvcc_headers/${stem}.cu")
  file(CONFIGURE OUTPUT "${cu}" CONTENT "#include <${rel}>\n")
  list(APPEND nvcc_sources "${cu}")
endforeach()
add_library(pipeweaver_nvcc_headers OBJECT ${nvcc_sources})
target_link_libraries(pipeweaver_nvcc_headers PRIVATE pipeweaver::core)
target_compile_options(pipeweaver_nvcc_headers PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20>)
