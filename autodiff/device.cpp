// The CPU side of device.h; with REMOE_CUDA the CUDA entry points live in cuda/device.cu.
#include "autodiff/device.h"

#include <cstring>

namespace remoe::device {

#ifndef REMOE_CUDA
namespace {
[[noreturn]] void no_cuda(const char* what) {
  REMOE_FAIL(what, ": remoe was built without the CUDA backend (configure with -Dcuda=enabled "
                   "on a machine with nvcc)");
}
}  // namespace

bool cuda_built() { return false; }
bool cuda_available() { return false; }
std::string cuda_device_name() { return ""; }
void* cuda_alloc(size_t) { no_cuda("cuda_alloc"); }
void cuda_free(void*) {}
void* cuda_stream() { no_cuda("cuda_stream"); }
size_t cuda_memory_peak() { return 0; }
void cuda_memory_reset_peak() {}
void* cuda_event_create() { no_cuda("cuda_event_create"); }
void cuda_event_record(void*) { no_cuda("cuda_event_record"); }
double cuda_event_seconds(void*, void*) { no_cuda("cuda_event_seconds"); }
void cuda_event_destroy(void*) {}

void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (dst_device != Device::cpu || src_device != Device::cpu) no_cuda("copy to or from the GPU");
  if (bytes) std::memcpy(dst, src, bytes);
}

void zero(void* dst, Device device, size_t bytes) {
  if (device != Device::cpu) no_cuda("zeroing GPU memory");
  if (bytes) std::memset(dst, 0, bytes);
}
#endif

}  // namespace remoe::device
