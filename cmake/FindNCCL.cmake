# FindNCCL: NCCL's header and library (NCCL ships no CMake package of its own).
#
# Looks in, in order: NCCL_ROOT (CMake or environment variable; also its pip-wheel layout
# nvidia/nccl/{include,lib}), then next to the CUDA toolkit (CUDAToolkit_INCLUDE_DIRS and
# CUDAToolkit_LIBRARY_DIR, when find_package(CUDAToolkit) ran first), then the system paths.
# Defines NCCL_FOUND, NCCL_INCLUDE_DIR, NCCL_LIBRARY, NCCL_VERSION (from NCCL_VERSION_CODE in
# nccl.h) and the imported target NCCL::nccl. Installed beside pipeweaver's package config, so
# that find_package(pipeweaver COMPONENTS cuda) finds NCCL the same way.
include(FindPackageHandleStandardArgs)

set(_nccl_roots)
foreach(_root IN ITEMS "${NCCL_ROOT}" "$ENV{NCCL_ROOT}")
  if(_root)
    list(APPEND _nccl_roots "${_root}" "${_root}/nvidia/nccl")
  endif()
endforeach()

find_path(NCCL_INCLUDE_DIR nccl.h
  HINTS ${_nccl_roots} ${CUDAToolkit_INCLUDE_DIRS} "${CUDAToolkit_LIBRARY_ROOT}"
  PATH_SUFFIXES include)
find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2
  HINTS ${_nccl_roots} "${CUDAToolkit_LIBRARY_DIR}" "${CUDAToolkit_LIBRARY_ROOT}"
  PATH_SUFFIXES lib lib64)

# NCCL_VERSION_CODE is major*10000 + minor*100 + patch since 2.9 (major*1000 + ... before).
set(NCCL_VERSION "")
if(NCCL_INCLUDE_DIR AND EXISTS "${NCCL_INCLUDE_DIR}/nccl.h")
  file(STRINGS "${NCCL_INCLUDE_DIR}/nccl.h" _nccl_code_line REGEX "^#define[ \t]+NCCL_VERSION_CODE[ \t]+[0-9]+")
  if(_nccl_code_line MATCHES "NCCL_VERSION_CODE[ \t]+([0-9]+)")
    set(_nccl_code "${CMAKE_MATCH_1}")
    if(_nccl_code GREATER_EQUAL 10000)
      math(EXPR _nccl_major "${_nccl_code} / 10000")
      math(EXPR _nccl_minor "(${_nccl_code} % 10000) / 100")
    else()
      math(EXPR _nccl_major "${_nccl_code} / 1000")
      math(EXPR _nccl_minor "(${_nccl_code} % 1000) / 100")
    endif()
    math(EXPR _nccl_patch "${_nccl_code} % 100")
    set(NCCL_VERSION "${_nccl_major}.${_nccl_minor}.${_nccl_patch}")
  endif()
endif()

find_package_handle_standard_args(NCCL
  REQUIRED_VARS NCCL_LIBRARY NCCL_INCLUDE_DIR
  VERSION_VAR NCCL_VERSION)

if(NCCL_FOUND AND NOT TARGET NCCL::nccl)
  add_library(NCCL::nccl UNKNOWN IMPORTED)
  set_target_properties(NCCL::nccl PROPERTIES
    IMPORTED_LOCATION "${NCCL_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
endif()
mark_as_advanced(NCCL_INCLUDE_DIR NCCL_LIBRARY)
