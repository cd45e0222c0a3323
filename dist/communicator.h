// Collective communication between ranks. Training code talks to this interface; the NCCL
// implementation and the in-process multi-thread one for tests arrive with the multi-GPU issue.
// Single is the world of one process: every collective is the identity.
#pragma once

#include "autodiff/tensor.h"

namespace remoe::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // In place: every rank ends with the elementwise sum over ranks.
  virtual void all_reduce_sum(const Tensor& t) = 0;
  virtual void barrier() = 0;
};

class Single final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  void all_reduce_sum(const Tensor&) override {}
  void barrier() override {}
};

}  // namespace remoe::dist
