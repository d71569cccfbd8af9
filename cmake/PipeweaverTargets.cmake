# The library's targets (header-only INTERFACE targets, fmt's model: a light core, opt-in extras):
#   pipeweaver::core        std-only: everything from the concepts to the Planner (no JSON, no
#                           backend); every header a .cu file may include is in it
#   pipeweaver::io          JSON readers and writers, Chrome trace, SVG (nlohmann-json)
#   pipeweaver::host        the host backend: rank threads, in-process channels, the trainer loop
#   pipeweaver::pipeweaver  all of the above (and the umbrella header pipeweaver/pipeweaver.hpp)
#   pipeweaver::compiled    optional static library: Planner<AnalyticCostModel> and
#                           Planner<TableCostModel> instantiated once (PIPEWEAVER_COMPILED)
# Each target requires only what its headers include.
find_package(Threads REQUIRED)

set(pipeweaver_include "${PROJECT_SOURCE_DIR}/include")
file(GLOB_RECURSE pipeweaver_core_headers CONFIGURE_DEPENDS "${pipeweaver_include}/pipeweaver/*.hpp")
file(GLOB_RECURSE pipeweaver_io_headers CONFIGURE_DEPENDS "${pipeweaver_include}/pipeweaver/io/*.hpp")
list(APPEND pipeweaver_io_headers "${pipeweaver_include}/pipeweaver/io.hpp")
list(REMOVE_ITEM pipeweaver_core_headers ${pipeweaver_io_headers} "${pipeweaver_include}/pipeweaver/pipeweaver.hpp")
file(GLOB_RECURSE pipeweaver_host_headers CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/backends/host/include/pipeweaver/*.hpp")

# pipeweaver_header_target(NAME EXPORT_NAME BASE_DIR HEADERS...)
function(pipeweaver_header_target name export_name base)
  add_library(${name} INTERFACE)
  add_library(pipeweaver::${export_name} ALIAS ${name})
  set_target_properties(${name} PROPERTIES EXPORT_NAME ${export_name})
  target_sources(${name} INTERFACE FILE_SET HEADERS BASE_DIRS "${base}" FILES ${ARGN})
  target_compile_features(${name} INTERFACE cxx_std_20)
endfunction()

pipeweaver_header_target(pipeweaver_core core "${pipeweaver_include}" ${pipeweaver_core_headers})
target_link_libraries(pipeweaver_core INTERFACE Threads::Threads)
# The same inputs and seed must give the same plan on every platform: forbid fusing a*b+c into
# one FMA (GCC does it by default where FMA exists, e.g. aarch64), which changes rounding.
target_compile_options(pipeweaver_core INTERFACE $<$<COMPILE_LANG_AND_ID:CXX,GNU,Clang>:-ffp-contract=off>)

pipeweaver_header_target(pipeweaver_host host "${PROJECT_SOURCE_DIR}/backends/host/include" ${pipeweaver_host_headers})
target_link_libraries(pipeweaver_host INTERFACE pipeweaver_core)

# pipeweaver::io needs nlohmann-json. A top-level build requires it (tests and tools use it); a
# parent project that vendors pipeweaver without it still gets pipeweaver::core and ::host.
if(PROJECT_IS_TOP_LEVEL)
  find_package(nlohmann_json 3.11 REQUIRED)
else()
  find_package(nlohmann_json 3.11 QUIET)
endif()
set(PIPEWEAVER_WITH_IO ${nlohmann_json_FOUND})
if(PIPEWEAVER_WITH_IO)
  pipeweaver_header_target(pipeweaver_io io "${pipeweaver_include}" ${pipeweaver_io_headers})
  target_link_libraries(pipeweaver_io INTERFACE pipeweaver_core nlohmann_json::nlohmann_json)

  pipeweaver_header_target(pipeweaver pipeweaver "${pipeweaver_include}" "${pipeweaver_include}/pipeweaver/pipeweaver.hpp")
  target_link_libraries(pipeweaver INTERFACE pipeweaver_core pipeweaver_io pipeweaver_host)
else()
  message(STATUS "pipeweaver: nlohmann-json not found: pipeweaver::io and pipeweaver::pipeweaver are not defined "
                 "(pipeweaver::core and pipeweaver::host are)")
endif()

if(PIPEWEAVER_BUILD_COMPILED)
  add_library(pipeweaver_compiled STATIC "${PROJECT_SOURCE_DIR}/src/planner_instances.cpp")
  add_library(pipeweaver::compiled ALIAS pipeweaver_compiled)
  set_target_properties(pipeweaver_compiled PROPERTIES EXPORT_NAME compiled POSITION_INDEPENDENT_CODE ON)
  target_link_libraries(pipeweaver_compiled PUBLIC pipeweaver_core)
  target_compile_definitions(pipeweaver_compiled PUBLIC PIPEWEAVER_COMPILED)
endif()
