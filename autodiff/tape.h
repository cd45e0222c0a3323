// The tape: ops record themselves as they run (eagerly, micrograd's idea at tensor
// granularity); backward() walks the records in reverse and accumulates (+=) gradients.
//
// An op computes its outputs, then calls record() with its inputs, its differentiable outputs
// and a backward closure. record() does nothing unless grad mode is on and some input requires
// grad; otherwise it marks the outputs as requiring grad and appends a Node. The closure
// captures what it saved (tensors are cheap handles), reads its outputs' grads and calls
// accumulate_grad() on its inputs. A node whose outputs got no gradient is skipped; a node with
// no backward rule that a gradient reaches fails, naming its op.
//
// The tape is per thread. backward() clears it; so does clear_tape() (e.g. after an eval
// forward that ran with grad on by mistake). Parameters are leaves: their grads survive the
// tape and keep accumulating until zero_grad().
#pragma once

#include <functional>
#include <initializer_list>
#include <vector>

#include "autodiff/tensor.h"

namespace remoe {

using BackwardFn = std::function<void()>;

struct Node {
  const char* op;
  std::vector<Tensor> outputs;        // the op's differentiable outputs
  BackwardFn backward;                // empty: the op has no backward rule
  std::vector<const void*> inputs;    // identities of the inputs that require grad (never read)
};

bool grad_enabled();

// Grad mode off in a scope: eval, sampling, optimizer updates, and backward itself.
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// Returns true when a node was recorded (the outputs now require grad).
bool record(const char* op, std::initializer_list<Tensor> inputs,
            std::initializer_list<Tensor> outputs, BackwardFn backward);

// t.grad += g when t requires grad (adopting g when t has no gradient yet); a no-op otherwise.
void accumulate_grad(const Tensor& t, const Tensor& g);

// Seeds d(loss) = 1 (loss must have one element) or d(output) = seed, walks the tape in
// reverse, then clears it.
void backward(const Tensor& loss);
void backward(const Tensor& output, const Tensor& seed);

// backward(loss) that also says when gradients are final, so data parallelism can reduce them
// while the rest of the backward runs: on_ready(i) is called once for each watched[i] as soon as
// no node left on the tape takes it as an input (its gradient will not change in this pass),
// and at the end, in index order, for those no node took. Watched tensors are leaves
// (parameters); on_ready runs with grad mode off.
using GradReadyFn = std::function<void(size_t index)>;
void backward(const Tensor& loss, const std::vector<Tensor>& watched, const GradReadyFn& on_ready);

size_t tape_size();
void clear_tape();

}  // namespace remoe
