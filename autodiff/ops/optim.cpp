#include <cmath>

#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/adamw.h"
#include "kernels/grad_norm.h"

namespace remoe::ops {
using namespace detail;

namespace {

// The parameter's gradient, after checking the four tensors agree.
Tensor checked_grad(const char* op, const Tensor& param, const Tensor& m, const Tensor& v,
                    int64_t step) {
  const Tensor grad = param.grad();
  REMOE_CHECK(grad.defined(), op, ": parameter '", param.name(), "' ", shape_str(param.shape()),
              " has no gradient (did backward reach it?)");
  check_same(op, {{"param", param}, {"grad", grad}, {"m", m}, {"v", v}});
  REMOE_CHECK(m.shape() == param.shape() && v.shape() == param.shape(), op, ": moments ",
              shape_str(m.shape()), " and ", shape_str(v.shape()), " do not match parameter ",
              shape_str(param.shape()));
  REMOE_CHECK(step >= 1, op, ": step is 1-based, got ", step);
  return grad;
}

}  // namespace

void adamw_step(const Tensor& param, const Tensor& m, const Tensor& v,
                const cpu::AdamWHyper& hyper, int64_t step) {
  constexpr const char* op = "adamw_step";
  const Tensor grad = checked_grad(op, param, m, v, step);
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

void adamw_step(const std::vector<Tensor>& params, const std::vector<Tensor>& m,
                const std::vector<Tensor>& v, const std::vector<bool>& decay,
                const cpu::AdamWHyper& hyper, int64_t step) {
  constexpr const char* op = "adamw_step";
  REMOE_CHECK(m.size() == params.size() && v.size() == params.size() &&
                  decay.size() == params.size(),
              op, ": ", params.size(), " parameters, ", m.size(), " and ", v.size(),
              " moments, ", decay.size(), " decay flags");
  if (params.empty()) return;
  const auto hyper_of = [&](size_t i) {
    cpu::AdamWHyper h = hyper;
    if (!decay[i]) h.weight_decay = 0;
    return h;
  };
  if (!on_gpu(params.front())) {
    for (size_t i = 0; i < params.size(); ++i) adamw_step(params[i], m[i], v[i], hyper_of(i), step);
    return;
  }
  std::vector<cuda::AdamWTensor> list;
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor grad = checked_grad(op, params[i], m[i], v[i], step);
    REMOE_CHECK(on_gpu(params[i]), op, ": parameter '", params[i].name(),
                "' is on the CPU, the others on the GPU");
    REMOE_CHECK(params[i].dtype() == DType::f32, op, ": parameter '", params[i].name(), "' is ",
                dtype_name(params[i].dtype()), "; the CUDA kernel updates f32 master weights");
    list.push_back({params[i].cuda_data<float>(), m[i].cuda_data<float>(), v[i].cuda_data<float>(),
                    grad.cuda_data<float>(), params[i].numel(), hyper_of(i).weight_decay});
  }
  run_cuda(op, [&](auto) {
    cuda::adamw_step(list.data(), int64_t(list.size()), hyper, step, stream());
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
