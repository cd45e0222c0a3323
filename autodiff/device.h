// Device memory: allocation, copies and the stream the CUDA backend runs on.
// CUDA memory is stream-ordered (cudaMallocAsync / cudaFreeAsync on remoe's stream, from the
// device's default pool, which keeps freed memory for reuse instead of returning it).
// In a build without CUDA, or on a machine without a GPU, every CUDA entry point raises
// remoe::Error saying so; cuda_available() tells beforehand.
#pragma once

#include <cstddef>

#include "autodiff/tensor.h"

namespace remoe::device {

bool cuda_built();      // compiled with the CUDA backend
bool cuda_available();  // compiled with it and a GPU is visible
std::string cuda_device_name();  // "" when none

void* cuda_alloc(size_t bytes);
void cuda_free(void* ptr);
void* cuda_stream();  // remoe's cudaStream_t, as void* for code that does not include CUDA
// The most bytes remoe's memory pool has held in use at once since the last reset (the pool's
// cudaMemPoolAttrUsedMemHigh: allocations as queued on the stream), and its reset. 0 and a
// no-op without a GPU.
size_t cuda_memory_peak();
void cuda_memory_reset_peak();

// CUDA events on remoe's stream, for timing spans of GPU work without waiting at each mark:
// create, record (the point the stream has reached when the GPU gets there), the seconds from
// one recorded event to a later one (waits for the later), destroy.
void* cuda_event_create();
void cuda_event_record(void* event);
double cuda_event_seconds(void* from, void* to);
void cuda_event_destroy(void* event);

// Copies bytes between any two devices; returns when the data can be read on the host
// (device-to-host and host-to-device copies synchronise the stream).
void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void zero(void* dst, Device device, size_t bytes);

}  // namespace remoe::device
