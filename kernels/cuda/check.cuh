// kernels/cuda/check.cuh - CUDA error checks that name the file, the line and
// the op: CUDA_CHECK(call, "op") and CUDA_CHECK_LAUNCH("op") after a launch.
#pragma once
#include <cuda_runtime.h>

#include "tensor/error.h"

#define CUDA_CHECK(call, op)                                                             \
  do {                                                                                   \
    cudaError_t _e = (call);                                                             \
    if (_e != cudaSuccess) NALA_FAIL(op, ": CUDA error ", cudaGetErrorString(_e), " in ", #call); \
  } while (0)

#define CUDA_CHECK_LAUNCH(op) CUDA_CHECK(cudaGetLastError(), op)
