// StreamScratch: a launcher's temporary device buffer (CUB temp storage, per-block partial
// sums), allocated with cudaMallocAsync on the launch stream and freed on the same stream when
// the launcher returns, so the free is ordered after the kernels that use it. The kernels
// library sits below autodiff (kernels <- autodiff) and cannot use device::cuda_alloc; both go
// to the device's default memory pool, so a buffer freed here is reused without a cudaMalloc.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "kernels/check.h"

namespace remoe::cuda {

class StreamScratch {
 public:
  StreamScratch(size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes > 0) CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream));
  }
  // NOTE: no CUDA_CHECK in a destructor (it throws); a failed free shows up at the next check.
  ~StreamScratch() {
    if (ptr_) (void)cudaFreeAsync(ptr_, stream_);
  }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;

  template <typename T>
  T* as(size_t byte_offset = 0) const {
    return reinterpret_cast<T*>(static_cast<char*>(ptr_) + byte_offset);
  }
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

// Byte offsets of consecutive sub-buffers, each aligned to 256 bytes (CUB's and the
// widest vector load's alignment).
inline size_t scratch_align(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace remoe::cuda
