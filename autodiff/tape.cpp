#include "autodiff/tape.h"

#include <algorithm>
#include <cstdint>
#include <unordered_map>

#include "autodiff/ops.h"

namespace remoe {
namespace {

thread_local bool t_grad_enabled = true;
thread_local std::vector<Node> t_tape;

}  // namespace

bool grad_enabled() { return t_grad_enabled; }

NoGradGuard::NoGradGuard() : previous_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = previous_; }

bool record(const char* op, std::initializer_list<Tensor> inputs,
            std::initializer_list<Tensor> outputs, BackwardFn backward) {
  if (!t_grad_enabled) return false;
  if (std::none_of(inputs.begin(), inputs.end(), [](const Tensor& t) { return t.requires_grad(); }))
    return false;
  Node node{op, std::vector<Tensor>(outputs), std::move(backward), {}};
  for (const Tensor& t : inputs)
    if (t.requires_grad()) node.inputs.push_back(t.impl());
  for (Tensor& out : node.outputs) out.impl()->requires_grad = true;
  t_tape.push_back(std::move(node));
  return true;
}

void accumulate_grad(const Tensor& t, const Tensor& g) {
  if (!t.requires_grad()) return;
  REMOE_CHECK(g.shape() == t.shape() && g.dtype() == t.dtype(), "accumulate_grad: gradient ",
              shape_str(g.shape()), " ", dtype_name(g.dtype()), " for tensor ",
              shape_str(t.shape()), " ", dtype_name(t.dtype()), t.name().empty() ? "" : " '",
              t.name(), t.name().empty() ? "" : "'");
  Tensor current = t.grad();
  if (!current.defined()) {
    t.set_grad(g);
    return;
  }
  // NOTE: add in place only when nothing else sees the gradient's storage: an adopted gradient
  // may be a view of another tensor's (reshape passes its gradient through).
  NoGradGuard no_grad;
  if (current.impl()->storage.use_count() == 1)
    ops::add_(current, g);
  else
    t.set_grad(ops::add(current, g));
}

void backward(const Tensor& loss) {
  REMOE_CHECK(loss.numel() == 1, "backward: the loss must have one element, got shape ",
              shape_str(loss.shape()), " (pass a seed gradient for other outputs)");
  backward(loss, Tensor::full(loss.shape(), 1.0, loss.dtype(), loss.device()));
}

namespace {

// The walk shared by both entry points; ready_after[n] lists the watched indices whose last
// use is node n (fired once node n is done), `unused` those no node takes.
void run_backward(const Tensor& output, const Tensor& seed,
                  const std::vector<std::vector<size_t>>& ready_after,
                  const std::vector<size_t>& unused, const GradReadyFn& on_ready,
                  std::vector<Node>& tape) {
  accumulate_grad(output, seed);
  NoGradGuard no_grad;
  for (size_t n = tape.size(); n-- > 0;) {
    Node& node = tape[n];
    const bool reached = std::any_of(node.outputs.begin(), node.outputs.end(),
                                     [](const Tensor& t) { return t.grad().defined(); });
    if (reached) {
      REMOE_CHECK(node.backward, "backward: op '", node.op, "' has no backward rule");
      node.backward();
    }
    if (on_ready)
      for (size_t i : ready_after[n]) on_ready(i);
  }
  if (on_ready)
    for (size_t i : unused) on_ready(i);
}

std::vector<Node> take_tape(const Tensor& output) {
  REMOE_CHECK(output.requires_grad(),
              "backward: the output does not require grad (no parameter reached it, or it was "
              "computed under NoGradGuard)");
  std::vector<Node> tape;
  tape.swap(t_tape);  // cleared whatever happens below
  return tape;
}

}  // namespace

void backward(const Tensor& output, const Tensor& seed) {
  std::vector<Node> tape = take_tape(output);
  run_backward(output, seed, {}, {}, {}, tape);
}

void backward(const Tensor& loss, const std::vector<Tensor>& watched, const GradReadyFn& on_ready) {
  REMOE_CHECK(loss.numel() == 1, "backward: the loss must have one element, got shape ",
              shape_str(loss.shape()));
  std::vector<Node> tape = take_tape(loss);
  // The reverse walk meets a tensor's first use last: after that node its gradient is final.
  std::unordered_map<const void*, size_t> index;
  for (size_t i = 0; i < watched.size(); ++i) index.emplace(watched[i].impl(), i);
  std::vector<size_t> first_use(watched.size(), SIZE_MAX);
  for (size_t n = 0; n < tape.size(); ++n)
    for (const void* in : tape[n].inputs)
      if (auto it = index.find(in); it != index.end() && first_use[it->second] == SIZE_MAX)
        first_use[it->second] = n;
  std::vector<std::vector<size_t>> ready_after(tape.size());
  std::vector<size_t> unused;
  for (size_t i = 0; i < watched.size(); ++i)
    (first_use[i] == SIZE_MAX ? unused : ready_after[first_use[i]]).push_back(i);
  run_backward(loss, Tensor::full(loss.shape(), 1.0, loss.dtype(), loss.device()), ready_after,
               unused, on_ready, tape);
}

size_t tape_size() { return t_tape.size(); }
void clear_tape() { t_tape.clear(); }

}  // namespace remoe
