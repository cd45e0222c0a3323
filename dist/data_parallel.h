// Data parallelism's gradient reduction: after the backward pass every rank holds the sum over
// ranks of its gradients. Parameters are grouped into buckets of about `bucket_bytes`, in
// reverse order (the order a backward pass finishes them: the output layer's first), and a
// bucket's all-reduce is started as soon as its last gradient is final — tape.h's
// backward(loss, watched, on_ready) says when — so reduction overlaps the rest of the backward
// where the communicator runs asynchronously (NCCL: on a stream of its own,
// Communicator::start_all_reduce; the thread group reduces on the spot). finish() joins them
// and copies the sums back into the gradients.
//
// Buckets are reduced strictly in order, so every rank issues the same collectives in the same
// order even if its gradients became final in another one. A gradient that never became
// defined on a rank (no node used the parameter) takes part as zeros. Each bucket is one
// contiguous buffer of one dtype: the gradients are copied in, reduced (rank-order sum,
// communicator.h) and copied back.
#pragma once

#include <cstdint>
#include <vector>

#include "dist/communicator.h"

namespace remoe::dist {

inline constexpr int64_t kDefaultBucketBytes = int64_t(25) << 20;  // PyTorch DDP's default

class GradBuckets {
 public:
  // params: the replicated parameters (every rank the same shapes, in the same order).
  GradBuckets(Communicator& comm, std::vector<Tensor> params, int64_t bucket_bytes = kDefaultBucketBytes);

  // params[i]'s gradient is final for this step; reduces every bucket that is now complete and
  // whose predecessors have been reduced.
  void ready(size_t i);
  // Reduces whatever is left (parameters never reported count as ready), waits for every
  // reduction (on a GPU: remoe's stream waits) and starts the next step's bookkeeping. After
  // it, every gradient is the sum over ranks; before it, none is.
  void finish();

  // The buckets as indices into params, in reduction order (for tests and the docs).
  const std::vector<std::vector<size_t>>& buckets() const { return buckets_; }
  int64_t reductions() const { return reductions_; }  // buckets reduced so far, over all steps

 private:
  void reduce(size_t b);     // copies bucket b's gradients into its buffer, starts the reduction
  void copy_back(size_t b);  // the reduced buffer into the gradients

  Communicator& comm_;
  std::vector<Tensor> params_;
  std::vector<std::vector<size_t>> buckets_;
  std::vector<size_t> bucket_of_;       // param index → bucket
  std::vector<size_t> pending_;         // per bucket: gradients not final yet
  std::vector<bool> is_ready_;          // per param, this step
  std::vector<Tensor> flat_;            // per bucket: its gradients, contiguous
  size_t next_ = 0;                     // the next bucket to reduce
  int64_t reductions_ = 0;
};

}  // namespace remoe::dist
