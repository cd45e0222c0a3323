// The NCCL communicator: one process per GPU, collectives on GPU tensors (dist/nccl.cu; built
// with -Dnccl=auto when the CUDA backend, nccl.h and libnccl are found, else every entry point
// here but nccl_built() fails saying so).
//
// Collectives are enqueued on remoe's CUDA stream and return before they finish, like kernels:
// a later host readback waits for them. barrier() and exchange_counts() wait on the host.
// Reductions keep the rank-order contract of communicator.h (ordered_reductions, the default):
// all_reduce is an all-to-all of chunks, a rank-order sum of each chunk on its owner, and an
// all-gather — the same bytes on the wire as NCCL's ring all-reduce, but a sum order NCCL's
// algorithm choice cannot change. ordered_reductions = false maps them to ncclAllReduce and
// ncclReduceScatter (faster for small messages; bit-identical across ranks for a fixed
// NCCL_ALGO/NCCL_PROTO, but not in rank order and not run-to-run stable if NCCL picks another
// algorithm).
//
// A dead or stuck peer must not hang this rank: a watchdog thread polls every collective in
// flight (ncclCommGetAsyncError, and a CUDA event per collective); when one reports an error
// or has not finished after `timeout`, it aborts the communicator (ncclCommAbort), prints the
// collective, rank and reason to stderr and exits the process with status 1. Host waits
// (barrier, exchange_counts, destruction) poll the same way and throw instead.
#pragma once

#include <chrono>
#include <memory>

#include "dist/bootstrap.h"
#include "dist/communicator.h"

namespace remoe::dist {

struct NcclOptions {
  // The GPU for this rank; -1: the launcher's local rank. The communicator calls cudaSetDevice
  // with it, so create it before any other CUDA work of the process.
  int device = -1;
  bool ordered_reductions = true;
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};  // per collective, and for init
  std::chrono::milliseconds bootstrap_timeout = kBootstrapTimeout;
};

bool nccl_built();  // compiled with NCCL

// The communicator of `launch`'s rank: selects the GPU, refuses two ranks on one GPU, passes
// the NCCL unique id from rank 0 over the TCP bootstrap (bootstrap.h) and initialises NCCL.
std::unique_ptr<Communicator> nccl_communicator(const LaunchInfo& launch,
                                                const NcclOptions& options = {});

namespace detail {
// The rank-order reduction of the ordered path, on the GPU: out[i] = Σ_p blocks[p·n + i]
// (/ W for mean) summed left to right in out's dtype, exactly as reduce_blocks_cpu does.
// out: (n) cuda; blocks: (W, n) cuda, same dtype (f32, f64, i32). Exposed for its test.
void reduce_blocks_cuda(const Tensor& out, const Tensor& blocks, ReduceOp op);
}  // namespace detail

}  // namespace remoe::dist
