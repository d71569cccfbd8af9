# cmake -P script: a short libFuzzer run of one target from its seed corpus (new inputs go to a
# scratch folder, never into the repository's corpus). FUZZER, TARGET, CORPUS, WORK, SECONDS.
# Fails on any finding: a crash, a sanitizer report, an input slower than -timeout or one that
# takes more than -rss_limit_mb of memory, an exception other than pipeweaver::Error.
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}/new")
execute_process(COMMAND "${FUZZER}" "--target=${TARGET}" -max_total_time=${SECONDS} -rss_limit_mb=2048 -timeout=10
                        -print_final_stats=1 "-artifact_prefix=${WORK}/" "${WORK}/new" "${CORPUS}"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "fuzz target ${TARGET} found a failing input (exit ${rc}); see ${WORK}")
endif()
