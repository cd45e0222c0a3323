// A build without NCCL (no CUDA backend, or no nccl.h / libnccl): the entry points say so.
#include "dist/nccl.h"

namespace remoe::dist {

bool nccl_built() { return false; }

std::unique_ptr<Communicator> nccl_communicator(const LaunchInfo&, const NcclOptions&) {
  REMOE_FAIL("nccl_communicator: remoe was built without NCCL (it needs the CUDA backend, "
             "nccl.h and libnccl; configure with -Dnccl=enabled to see what is missing)");
}

namespace detail {
void reduce_blocks_cuda(const Tensor&, const Tensor&, ReduceOp) {
  REMOE_FAIL("reduce_blocks_cuda: remoe was built without NCCL");
}
}  // namespace detail

}  // namespace remoe::dist
