// cudaStream_t for headers that declare CUDA launchers without including the CUDA runtime:
// the same declaration CUDA's driver_types.h makes, so the two agree when both are seen.
#pragma once

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;
