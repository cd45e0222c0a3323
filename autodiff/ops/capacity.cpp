#include <cmath>

#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/capacity.h"

namespace remoe::ops {
using namespace detail;

int64_t expert_capacity(int64_t n_tokens, int64_t k, int64_t n_experts, double factor) {
  REMOE_CHECK(n_tokens >= 0 && k >= 1 && n_experts >= 1 && std::isfinite(factor) && factor > 0,
              "expert_capacity: needs T >= 0, k >= 1, E >= 1 and a positive factor, got T = ",
              n_tokens, ", k = ", k, ", E = ", n_experts, ", factor = ", factor);
  const double exact = double(n_tokens) * double(k) / double(n_experts) * factor;
  // NOTE: 1e-9 below a whole number counts as that number (0.1-style factors are inexact).
  const int64_t c = int64_t(std::ceil(exact - 1e-9 * std::max(1.0, exact)));
  return std::min(std::max<int64_t>(c, 0), n_tokens);
}

Routing drop_over_capacity(const Routing& routing, const Tensor& scores, int64_t capacity,
                           bool by_position) {
  constexpr const char* op = "drop_over_capacity";
  const Tensor& gates = routing.gates;
  check_ndim(op, {"routing.gates", gates}, 2);
  REMOE_CHECK(gates.dtype() == DType::f32 || gates.dtype() == DType::f64, op,
              ": gates must be f32 or f64, got ", describe({"routing.gates", gates}));
  check_same(op, {{"routing.gates", gates}, {"scores", scores}});
  check_dtype(op, {"routing.mask", routing.mask}, DType::i32);
  REMOE_CHECK(scores.shape() == gates.shape() && routing.mask.shape() == gates.shape(), op,
              ": scores ", shape_str(scores.shape()), " and mask ",
              shape_str(routing.mask.shape()), " must have the shape of gates ",
              shape_str(gates.shape()));
  REMOE_CHECK(routing.mask.device() == gates.device(), op, ": routing.mask and routing.gates ",
              "live on different devices");
  REMOE_CHECK(capacity >= 0, op, ": capacity must be >= 0, got ", capacity);
  const int64_t n_tokens = gates.dim(0), n_experts = gates.dim(1);

  const Device dev = gates.device();
  Routing r = routing;
  r.gates = Tensor::empty(gates.shape(), gates.dtype(), dev);
  r.mask = Tensor::empty(gates.shape(), DType::i32, dev);
  r.expert_counts = Tensor::empty({n_experts}, DType::i32, dev);
  r.token_counts = Tensor::empty({n_tokens}, DType::i32, dev);
  r.nonzero = Tensor::empty({}, DType::i32, dev);
  if (on_gpu(gates))
    dispatch_cuda_f32(op, gates.dtype(), [&](auto) {
      cuda::capacity_drop_forward(r.gates.cuda_data<float>(), r.mask.cuda_data<int32_t>(),
                                  r.expert_counts.cuda_data<int32_t>(),
                                  r.token_counts.cuda_data<int32_t>(),
                                  r.nonzero.cuda_data<int32_t>(), gates.cuda_data<float>(),
                                  routing.mask.cuda_data<int32_t>(), scores.cuda_data<float>(),
                                  n_tokens, n_experts, capacity, by_position, stream());
    });
  else
    dispatch_float(op, gates.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::capacity_drop_forward(r.gates.data<T>(), r.mask.data<int32_t>(),
                                 r.expert_counts.data<int32_t>(), r.token_counts.data<int32_t>(),
                                 r.nonzero.data<int32_t>(), gates.data<T>(),
                                 routing.mask.data<int32_t>(), scores.data<T>(), n_tokens,
                                 n_experts, capacity, by_position);
    });
  const Tensor out = r.gates, kept = r.mask;
  record(op, {gates}, {out}, [=] {
    const Tensor dout = out.grad();
    if (!dout.defined()) return;
    Tensor dgates = Tensor::empty(gates.shape(), gates.dtype(), dev);
    if (on_gpu(gates))
      dispatch_cuda_f32(op, gates.dtype(), [&](auto) {
        cuda::capacity_drop_backward(dgates.cuda_data<float>(), dout.cuda_data<float>(),
                                     kept.cuda_data<int32_t>(), gates.numel(), stream());
      });
    else
      dispatch_float(op, gates.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::capacity_drop_backward(dgates.data<T>(), dout.data<T>(), kept.data<int32_t>(),
                                    gates.numel());
      });
    accumulate_grad(gates, dgates);
  });
  return r;
}

}  // namespace remoe::ops
