# Consumer smoke tests: install pipeweaver to a prefix and build separate projects against it
# with find_package (everything; the std-only core alone with the other packages hidden), and
# build another that vendors the source tree with add_subdirectory.
set(consumer_root "${PROJECT_BINARY_DIR}/consumers")
set(consumer_script "${CMAKE_CURRENT_SOURCE_DIR}/consumer/build_and_run.cmake")
add_test(NAME "consumer: install"
  COMMAND "${CMAKE_COMMAND}" --install "${PROJECT_BINARY_DIR}" --prefix "${consumer_root}/prefix")
set_tests_properties("consumer: install" PROPERTIES FIXTURES_SETUP pipeweaver_installed)

add_test(NAME "consumer: find_package"
  COMMAND "${CMAKE_COMMAND}" -D "SOURCE=${CMAKE_CURRENT_SOURCE_DIR}/consumer/find_package"
          -D "BINARY=${consumer_root}/find_package" -D "PREFIX=${consumer_root}/prefix"
          -D "GENERATOR=${CMAKE_GENERATOR}" -D "CXX=${CMAKE_CXX_COMPILER}" -P "${consumer_script}")
set_tests_properties("consumer: find_package" PROPERTIES FIXTURES_REQUIRED pipeweaver_installed)

# pipeweaver::core alone: configures with nlohmann-json, range-v3 and CUDA hidden from
# find_package, and compiles no header of theirs.
add_test(NAME "consumer: core only, without nlohmann-json, range-v3 or CUDA"
  COMMAND "${CMAKE_COMMAND}" -D "SOURCE=${CMAKE_CURRENT_SOURCE_DIR}/consumer/core_only"
          -D "BINARY=${consumer_root}/core_only" -D "PREFIX=${consumer_root}/prefix"
          "-DHIDE=nlohmann_json,range-v3,CUDAToolkit,NCCL" "-DFORBIDDEN_HEADERS=nlohmann/|range/v3/|cuda|nccl"
          -D "GENERATOR=${CMAKE_GENERATOR}" -D "CXX=${CMAKE_CXX_COMPILER}" -P "${consumer_script}")
set_tests_properties("consumer: core only, without nlohmann-json, range-v3 or CUDA" PROPERTIES FIXTURES_REQUIRED pipeweaver_installed)

# Vendored: no tests, tools or install rules of pipeweaver in the parent, and CUDA not enabled
# although nvcc may be on this machine.
add_test(NAME "consumer: add_subdirectory"
  COMMAND "${CMAKE_COMMAND}" -D "SOURCE=${CMAKE_CURRENT_SOURCE_DIR}/consumer/add_subdirectory"
          -D "BINARY=${consumer_root}/add_subdirectory" -D "PIPEWEAVER_SOURCE=${PROJECT_SOURCE_DIR}"
          -D "GENERATOR=${CMAKE_GENERATOR}" -D "CXX=${CMAKE_CXX_COMPILER}" -P "${consumer_script}")
