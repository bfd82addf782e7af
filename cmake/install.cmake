# Installation and package export: `cmake --install build --prefix P` installs
#   P/lib/libtqkv.a, P/include/tqkv/*.h, P/bin/tqkv,
#   P/lib/cmake/tqkv/{tqkvConfig,tqkvConfigVersion,tqkvTargets,tqkvDependencies}.cmake
#     (find_package(tqkv) -> target tqkv::tqkv),
#   P/lib/pkgconfig/tqkv.pc (pkg-config --cflags --libs tqkv),
#   P/share/tqkv/models/{tqkv-ref-d128.gguf, eval/heldout.txt} (the CLI's default model and text,
#     found at run time relative to the executable: apps/tqkv/data_paths.cc).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set_target_properties(tqkv PROPERTIES EXPORT_NAME tqkv)
add_library(tqkv::tqkv ALIAS tqkv)

install(TARGETS tqkv EXPORT tqkvTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/tqkv DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")
install(TARGETS tqkv_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES models/tqkv-ref-d128.gguf DESTINATION ${CMAKE_INSTALL_DATADIR}/tqkv/models)
install(FILES models/eval/heldout.txt DESTINATION ${CMAKE_INSTALL_DATADIR}/tqkv/models/eval)

set(TQKV_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/tqkv)
install(EXPORT tqkvTargets NAMESPACE tqkv:: DESTINATION ${TQKV_CMAKE_DIR})
configure_package_config_file(cmake/tqkvConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/tqkvConfig.cmake
                              INSTALL_DESTINATION ${TQKV_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/tqkvConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/tqkvConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/tqkvConfigVersion.cmake
              cmake/tqkvDependencies.cmake
        DESTINATION ${TQKV_CMAKE_DIR})

# pkg-config: tqkv is a static library, so its link dependencies are listed for every consumer
# (not only under --static).
set(TQKV_PC_EXTRA_LIBS "")
if(TQKV_CUDA_ENABLED)  # cmake/cuda.cmake: tqkv/cuda.h callers need the static CUDA runtime
   set(TQKV_PC_EXTRA_LIBS " ${CUDA_cudart_static_LIBRARY} -l${CMAKE_DL_LIBS} -lrt")
endif()
file(RELATIVE_PATH TQKV_PC_TO_PREFIX "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")  # "../.." (or deeper)
string(REGEX REPLACE "/$" "" TQKV_PC_TO_PREFIX "${TQKV_PC_TO_PREFIX}")
configure_file(cmake/tqkv.pc.in ${CMAKE_CURRENT_BINARY_DIR}/tqkv.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/tqkv.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
