// Collective communication between the W ranks of one job. Training code talks to this
// interface; the implementations are
//   Single            (here)               the world of one process: every collective is the
//                                          identity (a copy where an output is separate);
//   ThreadCommunicator (thread_group.h)     W ranks as W threads of one process, on CPU tensors,
//                                          for tests of parallel logic on machines without GPUs;
//   NcclCommunicator  (nccl.h, nccl.cu)    one process per GPU, on GPU tensors, over NCCL.
//
// Every rank calls the same collectives in the same order with matching arguments (the same
// dtype, trailing shape, root and reduction; counts that pair up). Every rank's result of a
// reduction is bit-identical and the same from run to run: the sum is taken in rank order,
// ((x_0 + x_1) + x_2) + ... + x_{W-1}, in the tensor's dtype (i32 wraps modulo 2^32), and a mean
// divides that sum by W. Reductions take f32, f64 and i32 tensors (mean: f32 and f64); the
// collectives that only move data (all_gather, all_to_all, broadcast) take any dtype.
//
// "Rows" are slices along the first dimension: a tensor of shape (n, d1, d2, ...) has n rows
// of d1·d2·... elements; collectives that split or join along the first dimension need at
// least one dimension. Empty tensors and zero counts are allowed everywhere. Outputs never
// share storage with inputs (in-place collectives take one tensor).
//
// A collective that fails (mismatched arguments, a peer that died, a timeout) leaves the group
// unusable: later collectives fail too. There is no recovery short of a new group.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "autodiff/tensor.h"

namespace remoe::dist {

enum class ReduceOp : uint8_t { sum, mean };
const char* reduce_op_name(ReduceOp op);

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;        // 0 .. world_size() - 1
  virtual int world_size() const = 0;  // W
  // Where this communicator's tensors live (Single accepts either device).
  virtual Device device() const = 0;

  // t: any shape, the same on every rank. In place: every rank ends with the rank-order sum
  // (or mean) of all ranks' t.
  virtual void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::sum) = 0;

  // in: (W·n, ...) on every rank; out: (n, ...). Rank r receives the reduction over ranks of
  // rows [r·n, (r+1)·n) of each rank's in.
  virtual void reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op = ReduceOp::sum) = 0;

  // in: (n, ...) on every rank; out: (W·n, ...). Rows [p·n, (p+1)·n) of every rank's out are
  // rank p's in.
  virtual void all_gather(const Tensor& out, const Tensor& in) = 0;

  // Exchange of row blocks with per-peer counts (what expert parallelism needs: tokens routed
  // to experts that live on other ranks).
  //   in:  (Σ_p send_counts[p], ...): rows [Σ_{q<p} send_counts[q], + send_counts[p]) go to p;
  //   out: (Σ_p recv_counts[p], ...): the rows from p land at offset Σ_{q<p} recv_counts[q].
  // Both count vectors have W entries ≥ 0, and rank r's recv_counts[p] must equal rank p's
  // send_counts[r] (exchange_counts computes them). The trailing shape is the same everywhere.
  virtual void all_to_all(const Tensor& out, const std::vector<int64_t>& recv_counts,
                          const Tensor& in, const std::vector<int64_t>& send_counts) = 0;

  // t: the same shape on every rank. In place: every rank ends with rank `root`'s t.
  virtual void broadcast(const Tensor& t, int root) = 0;

  // Returns once every rank has called it.
  virtual void barrier() = 0;

  // all_reduce that may overlap later work: starts the reduction of t and may return before it
  // is done; t must not be read or written until wait_started(), which every rank calls after
  // the same starts. On a GPU communicator the reduction runs on a stream of its own, behind
  // everything remoe's stream had enqueued, and wait_started() makes remoe's stream wait for
  // all of them (the host does not wait): gradient buckets reduce while the backward goes on.
  // Elsewhere it is all_reduce, done on the spot.
  virtual void start_all_reduce(const Tensor& t, ReduceOp op = ReduceOp::sum) { all_reduce(t, op); }
  virtual void wait_started() {}

  // Splits the ranks into disjoint groups: the ranks that pass the same `color` (≥ 0) form a
  // new communicator, ranked by `key`, ties by rank here. What hybrid parallelism needs: the
  // expert-parallel group of a rank and the group of its replicas are both splits of the job.
  // A collective of this communicator; the new one is independent of it (its collectives
  // pair only with its members') and the same kind (threads, NCCL). It may outlive this one.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  // The recv_counts of all_to_all: returns c with c[p] = rank p's send_counts[this rank]
  // (an all_to_all of one count per peer; on a GPU communicator, one host readback).
  std::vector<int64_t> exchange_counts(const std::vector<int64_t>& send_counts);
};

class Single final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  Device device() const override { return Device::cpu; }
  void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::sum) override;
  void reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op = ReduceOp::sum) override;
  void all_gather(const Tensor& out, const Tensor& in) override;
  void all_to_all(const Tensor& out, const std::vector<int64_t>& recv_counts, const Tensor& in,
                  const std::vector<int64_t>& send_counts) override;
  void broadcast(const Tensor& t, int root) override;
  void barrier() override {}
  std::unique_ptr<Communicator> split(int color, int key) override;
};

// Argument checks shared by the implementations: each checks what one rank can see alone
// (its own shapes, dtypes and counts) and fails with a message naming the collective, the rank
// and the offending shapes or values. Cross-rank agreement is the implementation's business.
namespace detail {

int64_t row_elements(const Tensor& t);  // elements per first-dimension slice
void check_device(const char* op, const Tensor& t, Device expected, const char* impl, int rank);
void check_all_reduce(const Tensor& t, ReduceOp op, int rank);
void check_reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op, int rank, int world);
void check_all_gather(const Tensor& out, const Tensor& in, int rank, int world);
void check_all_to_all(const Tensor& out, const std::vector<int64_t>& recv_counts, const Tensor& in,
                      const std::vector<int64_t>& send_counts, int rank, int world);
void check_broadcast(const Tensor& t, int root, int rank, int world);
void check_split(int color, int rank);

// out[i] = ((blocks[0][i] + blocks[1][i]) + ...) (/ W for mean), in out's dtype: the rank-order
// reduction every implementation uses. out: (n) elements; blocks: W pointers to n elements.
void reduce_blocks_cpu(void* out, const std::vector<const void*>& blocks, int64_t n, DType dtype,
                       ReduceOp op);

}  // namespace detail
}  // namespace remoe::dist
