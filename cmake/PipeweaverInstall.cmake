# Install + export, one export set per target, so that find_package(pipeweaver COMPONENTS core)
# loads (and asks for the dependencies of) only what it names. Build-tree exports too, so that
# find_package(pipeweaver) also works against a build directory.
include(CMakePackageConfigHelpers)
include(GNUInstallDirs)
set(PIPEWEAVER_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/pipeweaver")
configure_package_config_file(cmake/pipeweaver-config.cmake.in
  "${PROJECT_BINARY_DIR}/pipeweaver-config.cmake"
  INSTALL_DESTINATION "${PIPEWEAVER_CMAKE_DIR}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/pipeweaver-config-version.cmake"
  COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)

set(pipeweaver_exported core host)
if(PIPEWEAVER_WITH_IO)
  list(APPEND pipeweaver_exported io pipeweaver)
endif()
if(TARGET pipeweaver_cuda)
  list(APPEND pipeweaver_exported cuda)
endif()
if(TARGET pipeweaver_compiled)
  list(APPEND pipeweaver_exported compiled)
endif()
foreach(c IN LISTS pipeweaver_exported)
  if(c STREQUAL "pipeweaver")
    set(target pipeweaver)
  else()
    set(target pipeweaver_${c})
  endif()
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "INTERFACE_LIBRARY")
    set(what FILE_SET HEADERS)
  else()
    set(what ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}")
  endif()
  if(PIPEWEAVER_INSTALL)
    install(TARGETS ${target} EXPORT pipeweaver-${c}-targets ${what})
    install(EXPORT pipeweaver-${c}-targets NAMESPACE pipeweaver:: DESTINATION "${PIPEWEAVER_CMAKE_DIR}")
  else()
    # export() needs the target in some export set even when nothing is installed.
    install(TARGETS ${target} EXPORT pipeweaver-${c}-targets ${what} EXCLUDE_FROM_ALL)
  endif()
  export(EXPORT pipeweaver-${c}-targets NAMESPACE pipeweaver:: FILE "${PROJECT_BINARY_DIR}/pipeweaver-${c}-targets.cmake")
endforeach()
if(PIPEWEAVER_INSTALL)
  install(FILES
    "${PROJECT_BINARY_DIR}/pipeweaver-config.cmake"
    "${PROJECT_BINARY_DIR}/pipeweaver-config-version.cmake"
    DESTINATION "${PIPEWEAVER_CMAKE_DIR}")
endif()
