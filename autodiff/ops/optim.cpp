#include <cmath>

#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/adamw.h"
#include "kernels/grad_norm.h"

namespace remoe::ops {
using namespace detail;

void adamw_step(const Tensor& param, const Tensor& m, const Tensor& v,
                const cpu::AdamWHyper& hyper, int64_t step) {
  constexpr const char* op = "adamw_step";
  const Tensor grad = param.grad();
  REMOE_CHECK(grad.defined(), op, ": parameter '", param.name(), "' ", shape_str(param.shape()),
              " has no gradient (did backward reach it?)");
  check_same(op, {{"param", param}, {"grad", grad}, {"m", m}, {"v", v}});
  check_cpu(op, {{"param", param}});
  REMOE_CHECK(m.shape() == param.shape() && v.shape() == param.shape(), op, ": moments ",
              shape_str(m.shape()), " and ", shape_str(v.shape()), " do not match parameter ",
              shape_str(param.shape()));
  REMOE_CHECK(step >= 1, op, ": step is 1-based, got ", step);
  dispatch_float(op, param.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cpu::adamw_step(param.data<T>(), m.data<T>(), v.data<T>(), grad.data<T>(), param.numel(),
                    hyper, step);
  });
}

double grad_norm(const std::vector<Tensor>& params) {
  double sum = 0;
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    check_cpu("grad_norm", {{"grad", g}});
    dispatch_float("grad_norm", g.dtype(), [&](auto tag) {
      using T = decltype(tag);
      sum += cpu::sum_squares(g.data<T>(), g.numel());
    });
  }
  return std::sqrt(sum);
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  return clip_grads_to_norm(params, grad_norm(params), max_norm);
}

double clip_grads_to_norm(const std::vector<Tensor>& params, double norm, double max_norm) {
  REMOE_CHECK(max_norm > 0, "clip_grad_norm: max_norm must be positive, got ", max_norm);
  const double coef = max_norm / (norm + 1e-6);
  if (coef >= 1.0) return norm;
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    dispatch_float("clip_grad_norm", g.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::scale_inplace(g.data<T>(), coef, g.numel());
    });
  }
  return norm;
}

}  // namespace remoe::ops
