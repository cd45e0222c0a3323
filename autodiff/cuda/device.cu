// CUDA memory for tensors: stream-ordered allocation from the device's default memory pool.
#include <cuda_runtime.h>

#include <cstring>
#include <cstdint>

#include "autodiff/device.h"

namespace remoe::device {
namespace {

cudaMemPool_t default_pool() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaMemPool_t pool = nullptr;
  CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev));
  return pool;
}

// One non-blocking stream for all of remoe's work; created with the first use.
cudaStream_t stream_handle() {
  static cudaStream_t stream = [] {
    cudaStream_t s = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    // NOTE: keep freed blocks in the pool: the default threshold (0) hands memory back to the
    // driver at every synchronisation, turning each step's allocations into real cudaMallocs.
    uint64_t threshold = UINT64_MAX;
    CUDA_CHECK(cudaMemPoolSetAttribute(default_pool(), cudaMemPoolAttrReleaseThreshold, &threshold));
    return s;
  }();
  return stream;
}

cudaMemcpyKind copy_kind(Device dst, Device src) {
  if (dst == Device::cuda) return src == Device::cuda ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice;
  return src == Device::cuda ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost;
}

}  // namespace

bool cuda_built() { return true; }

bool cuda_available() {
  static const bool available = [] {
    int count = 0;
    return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  }();
  return available;
}

std::string cuda_device_name() {
  if (!cuda_available()) return "";
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  return prop.name;
}

void* cuda_alloc(size_t bytes) {
  REMOE_CHECK(cuda_available(), "cuda_alloc: no CUDA device is visible (cudaGetDeviceCount)");
  void* ptr = nullptr;
  if (bytes) CUDA_CHECK(cudaMallocAsync(&ptr, bytes, stream_handle()));
  return ptr;
}

void cuda_free(void* ptr) {
  if (ptr) CUDA_CHECK(cudaFreeAsync(ptr, stream_handle()));
}

void* cuda_stream() { return stream_handle(); }

size_t cuda_memory_peak() {
  if (!cuda_available()) return 0;
  uint64_t high = 0;
  CUDA_CHECK(cudaMemPoolGetAttribute(default_pool(), cudaMemPoolAttrUsedMemHigh, &high));
  return size_t(high);
}

void cuda_memory_reset_peak() {
  if (!cuda_available()) return;
  uint64_t zero = 0;  // the only value the attribute may be set to
  CUDA_CHECK(cudaMemPoolSetAttribute(default_pool(), cudaMemPoolAttrUsedMemHigh, &zero));
}

void* cuda_event_create() {
  REMOE_CHECK(cuda_available(), "cuda_event_create: no CUDA device is visible (cudaGetDeviceCount)");
  cudaEvent_t e = nullptr;
  CUDA_CHECK(cudaEventCreate(&e));
  return e;
}

void cuda_event_record(void* event) {
  CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event), stream_handle()));
}

double cuda_event_seconds(void* from, void* to) {
  CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(to)));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(from), static_cast<cudaEvent_t>(to)));
  return double(ms) * 1e-3;
}

void cuda_event_destroy(void* event) {
  if (event) cudaEventDestroy(static_cast<cudaEvent_t>(event));  // NOTE: no throw: destructors call it
}

void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (!bytes) return;
  if (dst_device == Device::cpu && src_device == Device::cpu) {
    std::memcpy(dst, src, bytes);
    return;
  }
  cudaStream_t s = stream_handle();
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, copy_kind(dst_device, src_device), s));
  // NOTE: host memory here is pageable and may be freed right after we return.
  if (dst_device == Device::cpu || src_device == Device::cpu) CUDA_CHECK(cudaStreamSynchronize(s));
}

void zero(void* dst, Device device, size_t bytes) {
  if (!bytes) return;
  if (device == Device::cpu) {
    std::memset(dst, 0, bytes);
    return;
  }
  CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stream_handle()));
}

}  // namespace remoe::device
