// Gradient check by central differences in f64.
//
// For f(inputs) → out and a fixed random weight w (same shape as out), the scalar
// L = Σ w ⊙ out is differentiated twice: by backward(out, w) (analytic) and by
// (L(x + h) − L(x − h)) / 2h element by element (numeric), for every input that requires grad.
// The error of one input is ‖analytic − numeric‖₂ / max(‖analytic‖₂, ‖numeric‖₂) (0 when both
// vanish). Inputs must be f64 CPU tensors; f must recompute everything from them.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autodiff/tensor.h"

namespace remoe {

struct GradCheckResult {
  std::string input;  // the tensor's name, or "input i"
  double rel_error = 0;
  double analytic_norm = 0;
  double numeric_norm = 0;
};

using GradFn = std::function<Tensor(const std::vector<Tensor>&)>;

std::vector<GradCheckResult> gradcheck(const GradFn& f, const std::vector<Tensor>& inputs,
                                       double h = 1e-6, uint64_t seed = 1234);

// The largest rel_error of a check; a readable report of all inputs for test messages.
double max_rel_error(const std::vector<GradCheckResult>& results);
std::string report(const std::vector<GradCheckResult>& results);

}  // namespace remoe
