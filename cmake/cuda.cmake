# CUDA backend (src/cuda/*.cu), included from the top-level CMakeLists.txt after the tqkv target.
# TQKV_CUDA: AUTO (default: build it when nvcc is found, also at /usr/local/cuda/bin/nvcc when
# nvcc is not on PATH), ON (required), OFF. Kernels are built for Hopper only: sm_90a machine code
# plus compute_90 PTX (keeps CI compile time to a few .cu files for one architecture).
set(TQKV_CUDA AUTO CACHE STRING "Build the CUDA backend: AUTO, ON or OFF")
set_property(CACHE TQKV_CUDA PROPERTY STRINGS AUTO ON OFF)

set(TQKV_CUDA_ENABLED OFF)
if(TQKV_SANITIZE AND TQKV_CUDA STREQUAL "AUTO")
  message(STATUS "tqkv: sanitizer build, CUDA backend skipped (set TQKV_CUDA=ON to force it)")
elseif(NOT TQKV_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
    find_program(TQKV_NVCC nvcc HINTS ENV CUDA_PATH PATHS /usr/local/cuda/bin PATH_SUFFIXES bin)
    if(TQKV_NVCC)
      set(CMAKE_CUDA_COMPILER "${TQKV_NVCC}" CACHE FILEPATH "CUDA compiler")
    endif()
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(TQKV_CUDA_ENABLED ON)
  elseif(TQKV_CUDA STREQUAL "ON")
    message(FATAL_ERROR "TQKV_CUDA=ON but no CUDA compiler was found (set CMAKE_CUDA_COMPILER)")
  else()
    message(STATUS "tqkv: nvcc not found, building without the CUDA backend")
  endif()
endif()

if(TQKV_CUDA_ENABLED)
  set(CMAKE_CUDA_ARCHITECTURES OFF)  # explicit -gencode flags below
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)  # CMake < 3.26 does not know nvcc's C++20 flag
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  file(GLOB TQKV_CUDA_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/cuda/*.cu)
  add_library(tqkv_cuda OBJECT ${TQKV_CUDA_SOURCES})
  # Replace the directory's host-only warning flags (nvcc does not take -Wall directly).
  set_property(TARGET tqkv_cuda PROPERTY COMPILE_OPTIONS
    -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90
    -Xcompiler=-Wall,-Wno-unused-parameter -lineinfo --expt-relaxed-constexpr)
  # The encoder must match the CPU reference bit for bit: no contraction into FMA anywhere in it.
  set_source_files_properties(${CMAKE_SOURCE_DIR}/src/cuda/encode.cu PROPERTIES COMPILE_OPTIONS "-fmad=false")
  set_source_files_properties(${CMAKE_SOURCE_DIR}/src/cuda/prerope_encode.cu PROPERTIES COMPILE_OPTIONS "-fmad=false")
  set_target_properties(tqkv_cuda PROPERTIES POSITION_INDEPENDENT_CODE ON CUDA_RUNTIME_LIBRARY Static)
  target_include_directories(tqkv_cuda PRIVATE ${CMAKE_SOURCE_DIR}/include ${CMAKE_SOURCE_DIR}/src)
  target_sources(tqkv PRIVATE $<TARGET_OBJECTS:tqkv_cuda>)
  target_compile_definitions(tqkv PRIVATE TQKV_WITH_CUDA=1)
  # Installed consumers get the static runtime by path (no CUDA::cudart_static target needed in
  # tqkvTargets.cmake); objects that need it are only pulled in by code that calls tqkv/cuda.h.
  target_link_libraries(tqkv PUBLIC $<BUILD_INTERFACE:CUDA::cudart_static>
    $<INSTALL_INTERFACE:${CUDA_cudart_static_LIBRARY}> $<INSTALL_INTERFACE:${CMAKE_DL_LIBS}> $<INSTALL_INTERFACE:rt>)
  set_target_properties(tqkv PROPERTIES POSITION_INDEPENDENT_CODE ON)
  # Shared library with a C API for the Python benchmark (bench/gpu_bench.py, ctypes).
  add_library(tqkv_capi SHARED ${CMAKE_SOURCE_DIR}/bench/cuda_capi.cc)
  target_include_directories(tqkv_capi PRIVATE ${CMAKE_SOURCE_DIR}/src)
  target_link_libraries(tqkv_capi PRIVATE tqkv)
  message(STATUS "tqkv: CUDA backend ON (${CMAKE_CUDA_COMPILER}, sm_90a + compute_90 PTX)")
endif()
