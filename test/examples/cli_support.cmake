# What the CLI test scripts of this folder share (include it from a script run with cmake -P).

# require_variables(<name>...): stop unless every named variable is defined (-D<name>=...).
function(require_variables)
  foreach(v ${ARGN})
    if(NOT DEFINED ${v})
      message(FATAL_ERROR "define ${v}")
    endif()
  endforeach()
endfunction()

# fresh_work_dir(): ${WORK} exists and is empty.
function(fresh_work_dir)
  file(REMOVE_RECURSE "${WORK}")
  file(MAKE_DIRECTORY "${WORK}")
endfunction()

# run_ok(<outvar> <arg>...): runs ${PIPEWEAVER} with the arguments; its stdout in <outvar>; stops
# on a nonzero exit status, with stderr.
function(run_ok outvar)
  execute_process(COMMAND "${PIPEWEAVER}" ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "pipeweaver ${ARGN} failed (${rc}): ${err}")
  endif()
  set(${outvar} "${out}" PARENT_SCOPE)
endfunction()

# run_matching(<regex> <arg>...): runs ${PIPEWEAVER} with the arguments; stops unless it exits 0
# and its stdout matches <regex>.
function(run_matching regex)
  execute_process(COMMAND "${PIPEWEAVER}" ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0 OR NOT out MATCHES "${regex}")
    message(FATAL_ERROR "pipeweaver ${ARGN} (${rc}): ${out}${err}")
  endif()
endfunction()
