#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/attention.h"

namespace remoe::ops {
using namespace detail;

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v) {
  constexpr const char* op = "attention";
  check_defined(op, {"q", q});
  check_defined(op, {"k", k});
  check_defined(op, {"v", v});
  const std::string shapes = str_cat(" (q ", shape_str(q.shape()), ", k ", shape_str(k.shape()),
                                     ", v ", shape_str(v.shape()), ")");
  REMOE_CHECK(q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4, op,
              ": q, k and v must be 4-D (batch, seq, heads, head_dim)", shapes);
  check_same(op, {{"q", q}, {"k", k}, {"v", v}});
  REMOE_CHECK(k.shape() == v.shape(), op, ": k and v must have the same shape", shapes);
  REMOE_CHECK(q.dim(0) == k.dim(0) && q.dim(1) == k.dim(1) && q.dim(3) == k.dim(3), op,
              ": q and k/v must agree in batch, seq and head_dim (dims 0, 1, 3)", shapes);
  const int64_t B = q.dim(0), S = q.dim(1), Hq = q.dim(2), Hkv = k.dim(2), Dh = q.dim(3);
  REMOE_CHECK(Hq > 0 && Hkv > 0 && Dh > 0, op, ": head counts and head_dim must be positive",
              shapes);
  REMOE_CHECK(Hq % Hkv == 0, op, ": query heads (", Hq, ") must be a multiple of kv heads (", Hkv,
              ")", shapes);

  const bool want_grad =
      grad_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  // bf16 on the GPU: the tensor-core kernels where they take head_dim; else the f32 kernels on
  // the inputs' f32 values, the output rounded to bf16 (composed, so autodiff does the rest).
  const bool bf16 = q.dtype() == DType::bf16;
  if (bf16 && on_gpu(q)) {
    bool tensor_cores = false;
    dispatch_cuda(op, q.dtype(), [&](auto) { tensor_cores = cuda::attention_bf16_supported(Dh); });
    if (!tensor_cores)
      return cast(attention(cast(q, DType::f32), cast(k, DType::f32), cast(v, DType::f32)),
                  DType::bf16);
  }
  Tensor out = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor lse = want_grad ? Tensor::empty({B, Hq, S}, bf16 ? DType::f32 : q.dtype(), q.device())
                         : Tensor();
  if (on_gpu(q)) {
    REMOE_CHECK(Dh <= 128, op, ": the CUDA kernel takes head_dim up to 128, got ", Dh, shapes);
    dispatch_cuda(op, q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cuda::attention_forward(out.cuda_data<T>(), data_or_null<float>(lse), q.cuda_data<T>(),
                              k.cuda_data<T>(), v.cuda_data<T>(), B, S, Hq, Hkv, Dh, stream());
    });
  } else {
    dispatch_float(op, q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::attention_forward(out.data<T>(), data_or_null<T>(lse), q.data<T>(), k.data<T>(),
                             v.data<T>(), B, S, Hq, Hkv, Dh);
    });
  }
  if (!want_grad) return out;
  record(op, {q, k, v}, {out}, [=] {
    const Tensor dout = out.grad();
    Tensor dq = grad_buffer(q);
    Tensor dk = grad_buffer(k);
    Tensor dv = grad_buffer(v);
    if (on_gpu(q))
      dispatch_cuda(op, q.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cuda::attention_backward(data_or_null<T>(dq), data_or_null<T>(dk), data_or_null<T>(dv),
                                 dout.cuda_data<T>(), q.cuda_data<T>(), k.cuda_data<T>(),
                                 v.cuda_data<T>(), out.cuda_data<T>(), lse.cuda_data<float>(), B,
                                 S, Hq, Hkv, Dh, stream());
      });
    else
      dispatch_float(op, q.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::attention_backward(data_or_null<T>(dq), data_or_null<T>(dk), data_or_null<T>(dv),
                                dout.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(),
                                out.data<T>(), lse.data<T>(), B, S, Hq, Hkv, Dh);
      });
    if (dq.defined()) accumulate_grad(q, dq);
    if (dk.defined()) accumulate_grad(k, dk);
    if (dv.defined()) accumulate_grad(v, dv);
  });
  return out;
}

}  // namespace remoe::ops
