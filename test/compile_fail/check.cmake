# cmake -P: compile SOURCE, require failure, require the diagnostic to match the file's
# "// expect: <regex>" line.
file(STRINGS "${SOURCE}" expect_line REGEX "^// expect: ")
if(NOT expect_line)
  message(FATAL_ERROR "${SOURCE} has no '// expect: <regex>' line")
endif()
string(REGEX REPLACE "^// expect: " "" expect "${expect_line}")
execute_process(
  COMMAND "${CXX}" -std=c++20 -fsyntax-only -I "${INCLUDE}" "${SOURCE}"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but it must not")
endif()
if(NOT err MATCHES "${expect}")
  message(FATAL_ERROR "diagnostic does not match '${expect}':\n${err}")
endif()
message(STATUS "rejected as expected, diagnostic names: ${CMAKE_MATCH_0}")
