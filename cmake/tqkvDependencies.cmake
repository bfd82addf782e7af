# Link dependencies of the tqkv library, shared by the build (CMakeLists.txt) and by installed
# consumers (tqkvConfig.cmake includes this file next to itself): tqkv is a static library, so a
# consumer links its private dependencies too.
#
# BLAS: tqkv calls the CBLAS interface (cblas_sgemm/sgemv) and two OpenBLAS extensions
# (openblas_set_num_threads, openblas_get_corename), so it needs OpenBLAS specifically, not any
# BLAS. Debian's libopenblas-dev ships OpenBLASConfig.cmake (variables only); tqkv::openblas is an
# imported target made from it, with pkg-config's openblas.pc as the fallback.
find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED)
find_package(LibLZMA REQUIRED)
if(NOT TARGET tqkv::openblas)
  find_package(OpenBLAS CONFIG QUIET)
  if(OpenBLAS_FOUND AND OpenBLAS_LIBRARIES)
    add_library(tqkv::openblas INTERFACE IMPORTED)
    set_target_properties(tqkv::openblas PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${OpenBLAS_INCLUDE_DIRS}"
      INTERFACE_LINK_LIBRARIES "${OpenBLAS_LIBRARIES}")
  else()
    find_package(PkgConfig QUIET)
    if(PkgConfig_FOUND)
      pkg_check_modules(TQKV_OPENBLAS QUIET IMPORTED_TARGET openblas)
    endif()
    if(TARGET PkgConfig::TQKV_OPENBLAS)
      add_library(tqkv::openblas INTERFACE IMPORTED)
      set_target_properties(tqkv::openblas PROPERTIES INTERFACE_LINK_LIBRARIES PkgConfig::TQKV_OPENBLAS)
    else()
      message(FATAL_ERROR "tqkv needs OpenBLAS (Debian: apt-get install libopenblas-dev): "
                          "neither OpenBLASConfig.cmake nor openblas.pc was found")
    endif()
  endif()
endif()
# xxHash (Debian libxxhash-dev): checksums of prompt-cache files (src/cache/cache_file.cc).
if(NOT TARGET tqkv::xxhash)
  find_path(TQKV_XXHASH_INCLUDE xxhash.h)
  find_library(TQKV_XXHASH_LIB xxhash)
  if(NOT TQKV_XXHASH_INCLUDE OR NOT TQKV_XXHASH_LIB)
    message(FATAL_ERROR "tqkv needs xxHash (Debian: apt-get install libxxhash-dev)")
  endif()
  add_library(tqkv::xxhash INTERFACE IMPORTED)
  set_target_properties(tqkv::xxhash PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${TQKV_XXHASH_INCLUDE}"
                        INTERFACE_LINK_LIBRARIES "${TQKV_XXHASH_LIB}")
endif()
