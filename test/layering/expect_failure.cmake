cmake_minimum_required(VERSION 3.25)
# cmake -D CHECK=<check_layering.cmake> -D ROOT=<fixture> -P expect_failure.cmake
# The layering check must fail on the fixture and name each deliberate problem with both files.
execute_process(COMMAND "${CMAKE_COMMAND}" -D "ROOT=${ROOT}" -P "${CHECK}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "the layering check passed on a fixture with an upward include:\n${out}${err}")
endif()
foreach(expect IN ITEMS
    "include/pipeweaver/low/a.hpp \\(layer 'low/'\\) includes pipeweaver/high/b.hpp \\(layer 'high/', higher\\)"
    "include/pipeweaver/low/c.hpp \\(std-only layer 'low/'\\) includes <nlohmann/json.hpp>"
    "include/pipeweaver/high.hpp \\(umbrella of 'high/'\\) does not include pipeweaver/high/b.hpp"
    "include/pipeweaver/high/b.hpp cites what a clone does not have")
  if(NOT err MATCHES "${expect}")
    message(FATAL_ERROR "the layering check's message does not match '${expect}':\n${err}")
  endif()
endforeach()
message(STATUS "the layering check rejects the fixture, naming both headers of each problem")
