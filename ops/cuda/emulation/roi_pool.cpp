// The device-emulation build of ops/cuda/roi_pool.cu: the same source, compiled as host C++
// (torch's extension builder would hand a .cu file to nvcc). See cuda_emulation.h.
#include "cuda/roi_pool.cu"
