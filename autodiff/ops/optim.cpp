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
  REMOE_CHECK(m.shape() == param.shape() && v.shape() == param.shape(), op, ": moments ",
              shape_str(m.shape()), " and ", shape_str(v.shape()), " do not match parameter ",
              shape_str(param.shape()));
  REMOE_CHECK(step >= 1, op, ": step is 1-based, got ", step);
  if (on_gpu(param))
    return dispatch_cuda_f32(op, param.dtype(), [&](auto) {
      cuda::adamw_step(param.cuda_data<float>(), m.cuda_data<float>(), v.cuda_data<float>(),
                       grad.cuda_data<float>(), param.numel(), hyper, step, stream());
    });
  dispatch_float(op, param.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cpu::adamw_step(param.data<T>(), m.data<T>(), v.data<T>(), grad.data<T>(), param.numel(),
                    hyper, step);
  });
}

double grad_norm(const std::vector<Tensor>& params) {
  constexpr const char* op = "grad_norm";
  double sum = 0;
  Tensor device_sum;  // (1) f64 on the GPU: Σ g² of the GPU gradients, in parameter order
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    if (on_gpu(g)) {
      const bool first = !device_sum.defined();
      if (first) device_sum = Tensor::empty({1}, DType::f64, Device::cuda);
      dispatch_cuda(op, g.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cuda::sum_squares(device_sum.cuda_data<double>(), g.cuda_data<T>(), g.numel(),
                          /*accumulate=*/!first, stream());
      });
    } else {
      dispatch_float(op, g.dtype(), [&](auto tag) {
        using T = decltype(tag);
        sum += cpu::sum_squares(g.data<T>(), g.numel());
      });
    }
  }
  if (device_sum.defined()) sum += device_sum.item();  // the one readback
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
    if (on_gpu(g))
      dispatch_cuda("clip_grad_norm", g.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cuda::scale_inplace(g.cuda_data<T>(), coef, g.numel(), stream());
      });
    else
      dispatch_float("clip_grad_norm", g.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::scale_inplace(g.data<T>(), coef, g.numel());
      });
  }
  return norm;
}

}  // namespace remoe::ops
