# Consumer smoke tests: install pipeweaver to a prefix and build a separate project against it
# with find_package, and build another that vendors the source tree with add_subdirectory.
set(consumer_root "${PROJECT_BINARY_DIR}/consumers")
add_test(NAME "consumer: install"
  COMMAND "${CMAKE_COMMAND}" --install "${PROJECT_BINARY_DIR}" --prefix "${consumer_root}/prefix")
set_tests_properties("consumer: install" PROPERTIES FIXTURES_SETUP pipeweaver_installed)

add_test(NAME "consumer: find_package"
  COMMAND "${CMAKE_COMMAND}" -D "SOURCE=${CMAKE_CURRENT_SOURCE_DIR}/consumer/find_package"
          -D "BINARY=${consumer_root}/find_package" -D "PREFIX=${consumer_root}/prefix"
          -D "GENERATOR=${CMAKE_GENERATOR}" -D "CXX=${CMAKE_CXX_COMPILER}"
          -P "${CMAKE_CURRENT_SOURCE_DIR}/consumer/build_and_run.cmake")
set_tests_properties("consumer: find_package" PROPERTIES FIXTURES_REQUIRED pipeweaver_installed)

add_test(NAME "consumer: add_subdirectory"
  COMMAND "${CMAKE_COMMAND}" -D "SOURCE=${CMAKE_CURRENT_SOURCE_DIR}/consumer/add_subdirectory"
          -D "BINARY=${consumer_root}/add_subdirectory" -D "PIPEWEAVER_SOURCE=${PROJECT_SOURCE_DIR}"
          -D "GENERATOR=${CMAKE_GENERATOR}" -D "CXX=${CMAKE_CXX_COMPILER}"
          -P "${CMAKE_CURRENT_SOURCE_DIR}/consumer/build_and_run.cmake")
