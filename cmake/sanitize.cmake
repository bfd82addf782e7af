# Sanitizer and fuzzing builds (scripts/ci-sanitize.sh, docs/fuzzing.md). Off by default.
#   TQKV_SANITIZE=address,undefined|thread  adds -fsanitize=... (no recovery) to everything built here
#   TQKV_BUILD_FUZZ=ON                      adds the libFuzzer targets of fuzz/ (clang; implies fuzzer-no-link)
#   TQKV_THREAD_TESTS=ON                    tqkv_thread_tests: only the threaded attention/cache tests (TSan job)
get_filename_component(TQKV_ROOT_DIR "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
set(TQKV_SANITIZE "" CACHE STRING "Sanitizers for every target: address,undefined or thread (empty = none)")
option(TQKV_BUILD_FUZZ "Build the libFuzzer targets in fuzz/ (clang)" OFF)
option(TQKV_THREAD_TESTS "Build tqkv_thread_tests (threaded attention/cache tests, for TSan)" OFF)

if(TQKV_SANITIZE)
  # _GLIBCXX_ASSERTIONS: bounds-checked operator[] on std::vector (caught softmax_step's P.orot[0]
  # of an empty vector, which UBSan alone does not see).
  add_compile_options(-fsanitize=${TQKV_SANITIZE} -fno-sanitize-recover=all -fno-omit-frame-pointer -g
                      -D_GLIBCXX_ASSERTIONS)
  add_link_options(-fsanitize=${TQKV_SANITIZE})
  if(TQKV_BUILD_FUZZ)
    add_compile_options(-fsanitize=fuzzer-no-link)
  endif()
endif()

# Included before the project's targets are defined (so the flags above reach them); the targets
# below name `tqkv`, which CMake resolves when it generates the build.
if(TQKV_BUILD_FUZZ)
  add_subdirectory(${TQKV_ROOT_DIR}/fuzz ${CMAKE_BINARY_DIR}/fuzz)
endif()
if(TQKV_THREAD_TESTS)
  find_package(GTest REQUIRED)
  file(GLOB TQKV_THREAD_TEST_SOURCES CONFIGURE_DEPENDS ${TQKV_ROOT_DIR}/tests/attention/*_test.cc
       ${TQKV_ROOT_DIR}/tests/cache/*_test.cc)
  file(GLOB TQKV_THREAD_TEST_HELPERS CONFIGURE_DEPENDS ${TQKV_ROOT_DIR}/tests/testing/*.cc)
  add_executable(tqkv_thread_tests ${TQKV_THREAD_TEST_SOURCES} ${TQKV_THREAD_TEST_HELPERS})
  target_include_directories(tqkv_thread_tests PRIVATE ${TQKV_ROOT_DIR}/src ${TQKV_ROOT_DIR}/tests)
  target_link_libraries(tqkv_thread_tests PRIVATE tqkv GTest::gtest GTest::gtest_main)
  target_compile_definitions(tqkv_thread_tests PRIVATE TQKV_SOURCE_DIR="${TQKV_ROOT_DIR}"
                             TQKV_CLI_PATH="/nonexistent-cli")
endif()
