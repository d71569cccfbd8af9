# Compile-fail tests: each test/compile_fail/<name>.cpp must NOT compile, and g++'s
# diagnostic must name the failed requirement given on its first line as
#   // expect: <regex>
# (nvcc reports only "failed deduction"; g++ names the atom, so these run with g++ only).
if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  return()
endif()
file(GLOB cases CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/compile_fail/*.cpp")
foreach(src IN LISTS cases)
  get_filename_component(name "${src}" NAME_WE)
  add_test(NAME "compile-fail: ${name}"
    COMMAND "${CMAKE_COMMAND}" -D "CXX=${CMAKE_CXX_COMPILER}" -D "SOURCE=${src}"
            -D "INCLUDE=${PROJECT_SOURCE_DIR}/include"
            -P "${CMAKE_CURRENT_SOURCE_DIR}/compile_fail/check.cmake")
endforeach()
