# Installs the Python component of the build tree BUILD into PREFIX and imports the package from
# there with PYTHON (a different folder than the build tree's, so it is the installed copy).
file(REMOVE_RECURSE "${PREFIX}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD}" --component python --prefix "${PREFIX}"
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" -E env "PYTHONPATH=${PREFIX}/${SITE}"
                "${PYTHON}" -c "import pipeweaver, pipeweaver.torch_pipeline; assert pipeweaver.__file__.startswith('${PREFIX}'), pipeweaver.__file__; print(pipeweaver.built_for_python)"
                WORKING_DIRECTORY "${PREFIX}" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the installed package does not import: ${err}")
endif()
message(STATUS "installed package imports (built for Python ${out})")
