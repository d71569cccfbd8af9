# Every ```cpp block of README.md is compiled by the test preset with the project's warnings, so
# the README cannot drift from the code: a block with a main() becomes a program that CTest runs
# from the repository root (its relative paths are the README's), any other block an object
# file. Blocks are numbered in README order.
file(READ "${PROJECT_SOURCE_DIR}/README.md" readme)
# CMake lists split on ';' (and brackets nest): hide both while the blocks are listed.
string(REPLACE ";" "@PW_SEMICOLON@" readme "${readme}")
string(REPLACE "[" "@PW_LBRACKET@" readme "${readme}")
string(REPLACE "]" "@PW_RBRACKET@" readme "${readme}")
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/README.md")
string(REGEX MATCHALL "```cpp\n[^`]*```" blocks "${readme}")
set(n 0)
foreach(block IN LISTS blocks)
  math(EXPR n "${n} + 1")
  string(REGEX REPLACE "^```cpp\n" "" code "${block}")
  string(REGEX REPLACE "```$" "" code "${code}")
  string(REPLACE "@PW_SEMICOLON@" ";" code "${code}")
  string(REPLACE "@PW_LBRACKET@" "[" code "${code}")
  string(REPLACE "@PW_RBRACKET@" "]" code "${code}")
  set(source "${CMAKE_CURRENT_BINARY_DIR}/readme/block_${n}.cpp")
  file(WRITE "${source}.new" "${code}")
  file(COPY_FILE "${source}.new" "${source}" ONLY_IF_DIFFERENT)  # unchanged blocks are not rebuilt
  if(code MATCHES "int main\\(")
    add_executable(readme_block_${n} "${source}")
    add_test(NAME "readme: code block ${n} compiles and runs" COMMAND readme_block_${n} WORKING_DIRECTORY "${PROJECT_SOURCE_DIR}")
  else()
    add_library(readme_block_${n} OBJECT "${source}")
  endif()
  target_link_libraries(readme_block_${n} PRIVATE pipeweaver::pipeweaver $<TARGET_NAME_IF_EXISTS:pipeweaver::compiled>)
endforeach()
if(n EQUAL 0)
  message(FATAL_ERROR "README.md has no ```cpp block: the README check would check nothing")
endif()
