// NVTX ranges: every CUDA launcher opens one, so an Nsight Systems timeline names each kernel's
// op, and the model and the trainer open one around each layer and phase (forward, backward,
// optimizer, evaluation), so the timeline reads like the model. Compiled away unless the build
// has the CUDA backend and enables NVTX (meson option `nvtx`).
#pragma once

#ifdef REMOE_NVTX
#include <nvtx3/nvToolsExt.h>
#endif

namespace remoe {

class NvtxRange {
 public:
#ifdef REMOE_NVTX
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
#else
  explicit NvtxRange(const char*) {}
#endif
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace remoe
