#include "autodiff/tape.h"

#include <algorithm>

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
  Node node{op, std::vector<Tensor>(outputs), std::move(backward)};
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

void backward(const Tensor& output, const Tensor& seed) {
  REMOE_CHECK(output.requires_grad(),
              "backward: the output does not require grad (no parameter reached it, or it was "
              "computed under NoGradGuard)");
  std::vector<Node> tape;
  tape.swap(t_tape);  // cleared whatever happens below
  accumulate_grad(output, seed);
  NoGradGuard no_grad;
  for (auto it = tape.rbegin(); it != tape.rend(); ++it) {
    const bool reached = std::any_of(it->outputs.begin(), it->outputs.end(),
                                     [](const Tensor& t) { return t.grad().defined(); });
    if (!reached) continue;
    REMOE_CHECK(it->backward, "backward: op '", it->op, "' has no backward rule");
    it->backward();
  }
}

size_t tape_size() { return t_tape.size(); }
void clear_tape() { t_tape.clear(); }

}  // namespace remoe
