#include "dist/data_parallel.h"

#include <cstring>

#include "autodiff/device.h"

namespace remoe::dist {

GradBuckets::GradBuckets(Communicator& comm, std::vector<Tensor> params, int64_t bucket_bytes)
    : comm_(comm), params_(std::move(params)), bucket_of_(params_.size()),
      is_ready_(params_.size(), false) {
  REMOE_CHECK(bucket_bytes > 0, "GradBuckets: bucket_bytes must be positive, got ", bucket_bytes);
  int64_t bytes = 0;
  for (size_t n = params_.size(); n-- > 0;) {
    const Tensor& p = params_[n];
    REMOE_CHECK(p.defined(), "GradBuckets: parameter ", n, " is undefined");
    const bool fits = !buckets_.empty() && bytes + int64_t(p.nbytes()) <= bucket_bytes &&
                      params_[buckets_.back().front()].dtype() == p.dtype() &&
                      params_[buckets_.back().front()].device() == p.device();
    if (!fits) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().push_back(n);
    bucket_of_[n] = buckets_.size() - 1;
    bytes += int64_t(p.nbytes());
  }
  pending_.resize(buckets_.size());
  for (size_t b = 0; b < buckets_.size(); ++b) {
    pending_[b] = buckets_[b].size();
    // One buffer per bucket for the whole run, where the communicator works (a GPU for NCCL,
    // even for CPU parameters): nothing is allocated on the step's path.
    int64_t numel = 0;
    for (size_t i : buckets_[b]) numel += params_[i].numel();
    flat_.push_back(Tensor::empty({numel}, params_[buckets_[b].front()].dtype(), comm_.device()));
  }
}

void GradBuckets::ready(size_t i) {
  REMOE_CHECK(i < params_.size(), "GradBuckets::ready: index ", i, " of ", params_.size(),
              " parameters");
  if (is_ready_[i]) return;
  is_ready_[i] = true;
  --pending_[bucket_of_[i]];
  while (next_ < buckets_.size() && pending_[next_] == 0) reduce(next_++);
}

void GradBuckets::finish() {
  for (size_t i = 0; i < params_.size(); ++i) ready(i);
  comm_.wait_started();
  for (size_t b = 0; b < buckets_.size(); ++b) copy_back(b);
  // Next step.
  next_ = 0;
  std::fill(is_ready_.begin(), is_ready_.end(), false);
  for (size_t b = 0; b < buckets_.size(); ++b) pending_[b] = buckets_[b].size();
}

void GradBuckets::reduce(size_t b) {
  const std::vector<size_t>& members = buckets_[b];
  const Device comm_dev = comm_.device();
  const Tensor& flat = flat_[b];
  char* base = static_cast<char*>(flat.raw());
  size_t offset = 0;
  for (size_t i : members) {
    const Tensor& p = params_[i];
    if (const Tensor g = p.grad(); g.defined())
      device::copy(base + offset, comm_dev, g.raw(), g.device(), g.nbytes());
    else
      device::zero(base + offset, comm_dev, p.nbytes());  // takes part as zeros
    offset += p.nbytes();
  }
  comm_.start_all_reduce(flat, ReduceOp::sum);
  ++reductions_;
}

void GradBuckets::copy_back(size_t b) {
  const std::vector<size_t>& members = buckets_[b];
  const Device dev = params_[members.front()].device(), comm_dev = comm_.device();
  const char* base = static_cast<const char*>(flat_[b].raw());
  size_t offset = 0;
  for (size_t i : members) {
    const Tensor& p = params_[i];
    Tensor g = p.grad();
    // NOTE: a fresh tensor when the gradient is missing or shared (accumulate_grad may have
    // adopted a tensor another op still sees): never write through someone else's storage.
    if (!g.defined() || g.impl()->storage.use_count() != 1) {
      g = Tensor::empty(p.shape(), p.dtype(), dev);
      p.set_grad(g);
    }
    device::copy(g.raw(), dev, base + offset, comm_dev, p.nbytes());
    offset += p.nbytes();
  }
}

}  // namespace remoe::dist
