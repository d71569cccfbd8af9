# Short fuzz runs (fuzz/): where a clang that links -fsanitize=fuzzer is found, the fuzz project is
# built with it and every target runs for a few seconds from its seed corpus; elsewhere the tests
# are not registered (the long runs are in fuzz/README.md).
find_program(PIPEWEAVER_FUZZ_CXX NAMES clang++ clang++-15 clang++-14 DOC "clang for the fuzz targets (libFuzzer)")
set(PIPEWEAVER_FUZZ_SECONDS 5 CACHE STRING "seconds each fuzz target runs in the test preset")
if(NOT PIPEWEAVER_FUZZ_CXX)
  message(STATUS "fuzz tests: no clang found, not registered")
  return()
endif()
set(probe "${PROJECT_BINARY_DIR}/fuzz-probe")
file(WRITE "${probe}/probe.cpp" "#include <cstddef>\n#include <cstdint>\nextern \"C\" int LLVMFuzzerTestOneInput(const std::uint8_t*, std::size_t) { return 0; }\n")
execute_process(COMMAND "${PIPEWEAVER_FUZZ_CXX}" -fsanitize=fuzzer,address,undefined "${probe}/probe.cpp" -o "${probe}/probe"
                RESULT_VARIABLE probe_rc OUTPUT_QUIET ERROR_QUIET)
if(NOT probe_rc EQUAL 0)
  message(STATUS "fuzz tests: ${PIPEWEAVER_FUZZ_CXX} cannot link -fsanitize=fuzzer, not registered")
  return()
endif()
message(STATUS "fuzz tests: ${PIPEWEAVER_FUZZ_CXX}, ${PIPEWEAVER_FUZZ_SECONDS} s per target")

set(fuzz_binary "${PROJECT_BINARY_DIR}/fuzz")
add_test(NAME "fuzz: build the targets with clang"
  COMMAND "${CMAKE_COMMAND}" -D "SOURCE=${PROJECT_SOURCE_DIR}/fuzz" -D "BINARY=${fuzz_binary}" -D "CXX=${PIPEWEAVER_FUZZ_CXX}"
          -D "GENERATOR=${CMAKE_GENERATOR}" -P "${PROJECT_SOURCE_DIR}/fuzz/build.cmake")
set_tests_properties("fuzz: build the targets with clang" PROPERTIES FIXTURES_SETUP pipeweaver_fuzz_built)
foreach(target IN ITEMS model setup dataset suite batch plan_json plan_binary)
  add_test(NAME "fuzz: ${target}"
    COMMAND "${CMAKE_COMMAND}" -D "FUZZER=${fuzz_binary}/pipeweaver_fuzz" -D "TARGET=${target}"
            -D "CORPUS=${PROJECT_SOURCE_DIR}/fuzz/corpus/${target}" -D "WORK=${fuzz_binary}/run-${target}"
            -D "SECONDS=${PIPEWEAVER_FUZZ_SECONDS}" -P "${PROJECT_SOURCE_DIR}/fuzz/run.cmake")
  set_tests_properties("fuzz: ${target}" PROPERTIES FIXTURES_REQUIRED pipeweaver_fuzz_built LABELS fuzz)
endforeach()
