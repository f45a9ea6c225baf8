# Every third-party dependency is found here, once, and exposed as an imported target.
# The same file serves Debian's CPU LibTorch 1.13 and PyTorch 2.x's CUDA LibTorch.

find_package(Torch REQUIRED)
find_package(MPI REQUIRED COMPONENTS C)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(yaml-cpp REQUIRED)
find_package(Boost REQUIRED COMPONENTS program_options)
find_package(nlohmann_json 3.9 REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(PNG QUIET)
# Unicode NFC normalisation for the tokenizer (HF tokenizers' NFC normalizer); no hand-rolled tables.
find_package(ICU REQUIRED COMPONENTS uc)

# MPI's C API from C++: skip OpenMPI's deprecated C++ bindings, which mpi.h otherwise drags in.
add_library(zlora_mpi INTERFACE IMPORTED)
target_link_libraries(zlora_mpi INTERFACE MPI::MPI_C)
target_compile_definitions(zlora_mpi INTERFACE OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)

# yaml-cpp 0.7 exports `yaml-cpp`, 0.8 exports `yaml-cpp::yaml-cpp`.
if(TARGET yaml-cpp::yaml-cpp)
  set(ZLORA_YAML_TARGET yaml-cpp::yaml-cpp)
else()
  set(ZLORA_YAML_TARGET yaml-cpp)
endif()

# PCRE2 ships no CMake package (measured); its pkg-config file on the GPU machine points at /usr.
find_path(PCRE2_INCLUDE_DIR pcre2.h REQUIRED)
find_library(PCRE2_LIBRARY NAMES pcre2-8 REQUIRED)
add_library(zlora_pcre2 INTERFACE IMPORTED)
target_include_directories(zlora_pcre2 INTERFACE ${PCRE2_INCLUDE_DIR})
target_link_libraries(zlora_pcre2 INTERFACE ${PCRE2_LIBRARY})
target_compile_definitions(zlora_pcre2 INTERFACE PCRE2_CODE_UNIT_WIDTH=8)

# LibTorch as one interface target carrying its flags (TORCH_CXX_FLAGS holds the C++11 ABI define).
add_library(zlora_torch INTERFACE IMPORTED)
target_link_libraries(zlora_torch INTERFACE ${TORCH_LIBRARIES})
target_include_directories(zlora_torch INTERFACE ${TORCH_INCLUDE_DIRS})
# PyTorch 2.x wheels bundle fmt 12 headers in torch/include; spdlog (system) needs the system fmt it was
# built with, so a LibTorch translation unit that logs would see two fmt versions (measured: spdlog's
# common.h fails against fmt 12 on the GPU machine). A shadow directory holding only the system fmt is
# put in front of LibTorch's include path, so <fmt/...> means the system fmt everywhere.
list(GET TORCH_INCLUDE_DIRS 0 _zlora_torch_inc)
if(EXISTS "${_zlora_torch_inc}/fmt/format.h")
  find_path(ZLORA_SYSTEM_FMT_INCLUDE fmt/format.h PATHS /usr/include /usr/local/include NO_DEFAULT_PATH REQUIRED)
  set(_zlora_fmt_shadow "${PROJECT_BINARY_DIR}/fmt-shadow")
  file(MAKE_DIRECTORY "${_zlora_fmt_shadow}")
  file(CREATE_LINK "${ZLORA_SYSTEM_FMT_INCLUDE}/fmt" "${_zlora_fmt_shadow}/fmt" SYMBOLIC)
  target_include_directories(zlora_torch SYSTEM BEFORE INTERFACE "${_zlora_fmt_shadow}")
  message(STATUS "zlora: LibTorch bundles fmt; using the system fmt in ${ZLORA_SYSTEM_FMT_INCLUDE} first")
endif()
separate_arguments(_zlora_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
target_compile_options(zlora_torch INTERFACE ${_zlora_torch_flags})

# CUDA and NCCL: on automatically when the LibTorch found was built with CUDA.
set(_zlora_torch_has_cuda OFF)
if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES)
  set(_zlora_torch_has_cuda ON)
endif()
if(ZLORA_WITH_CUDA STREQUAL "AUTO")
  set(ZLORA_CUDA_ENABLED ${_zlora_torch_has_cuda})
elseif(ZLORA_WITH_CUDA)
  if(NOT _zlora_torch_has_cuda)
    message(FATAL_ERROR "ZLORA_WITH_CUDA=ON but the LibTorch found at ${Torch_DIR} has no CUDA; "
                        "point CMAKE_PREFIX_PATH at a CUDA build (python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')")
  endif()
  set(ZLORA_CUDA_ENABLED ON)
else()
  set(ZLORA_CUDA_ENABLED OFF)
endif()

# Architectures for zlora's own CUDA kernels, set per target (LibTorch's CMake resets
# CMAKE_CUDA_ARCHITECTURES to OFF and drives its flags from TORCH_CUDA_ARCH_LIST instead; measured on the
# GPU machine with PyTorch 2.11).
set(ZLORA_CUDA_ARCHITECTURES "90a" CACHE STRING "CUDA architectures of zlora's kernels (Hopper: 90a)")
if(ZLORA_CUDA_ENABLED)
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS $ENV{NCCL_INCLUDE_DIR} $ENV{NCCL_ROOT}/include ${CUDAToolkit_INCLUDE_DIRS} REQUIRED)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS $ENV{NCCL_ROOT}/lib ${CUDAToolkit_LIBRARY_DIR} REQUIRED)
  add_library(zlora_nccl INTERFACE IMPORTED)
  target_include_directories(zlora_nccl INTERFACE ${NCCL_INCLUDE_DIR})
  target_link_libraries(zlora_nccl INTERFACE ${NCCL_LIBRARY} CUDA::cudart)
  message(STATUS "zlora: CUDA on (LibTorch ${Torch_VERSION}, NCCL ${NCCL_LIBRARY}, kernels for ${ZLORA_CUDA_ARCHITECTURES})")
else()
  message(STATUS "zlora: CUDA off (LibTorch ${Torch_VERSION} is a CPU build or ZLORA_WITH_CUDA=OFF)")
endif()

# zlora's own kernels (src/model/kernels.cu) are torch-free: they compile wherever nvcc is found, so a
# CPU build (CI: CPU LibTorch, CUDA toolkit in /usr/local/cuda) still compiles them for
# ZLORA_CUDA_ARCHITECTURES; only a CUDA build links them into the decoder.
set(ZLORA_KERNELS OFF)
if(ZLORA_CUDA_ENABLED)
  set(ZLORA_KERNELS ON)
elseif(NOT ZLORA_WITH_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(ZLORA_KERNELS ON)
    message(STATUS "zlora: compiling the CUDA kernels with ${CMAKE_CUDA_COMPILER} (not linked: CPU LibTorch)")
  endif()
endif()
