# Use ccache when it is installed: CI rebuilds from a clean clone, and one LibTorch translation unit
# costs ~25 s on two cores. The precompiled header needs ccache's pch sloppiness to be cacheable.
find_program(ZLORA_CCACHE ccache)
if(ZLORA_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(_zlora_launcher ${CMAKE_COMMAND} -E env
      CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
      CCACHE_BASEDIR=${PROJECT_SOURCE_DIR} CCACHE_NOHASHDIR=1 ${ZLORA_CCACHE})
  set(CMAKE_C_COMPILER_LAUNCHER ${_zlora_launcher})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${_zlora_launcher})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${_zlora_launcher})
  message(STATUS "zlora: compiling through ccache (${ZLORA_CCACHE})")
endif()
