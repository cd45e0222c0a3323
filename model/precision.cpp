#include "model/precision.h"

namespace remoe::model {
namespace {

// The operand as the bf16 kernels take it: a bf16 tensor on the GPU; on the CPU the f32 tensor
// of its bf16 values.
Tensor to_bf16_operand(const Tensor& x) {
  return x.device() == Device::cuda ? ops::cast(x, DType::bf16) : round_to_bf16(x);
}

// A bf16 GEMM's output back to f32 (on the CPU: the f32 result rounded to bf16).
Tensor from_bf16_result(const Tensor& y) {
  return y.device() == Device::cuda ? ops::cast(y, DType::f32) : round_to_bf16(y);
}

}  // namespace

Tensor round_to_bf16(const Tensor& x) { return ops::cast(ops::cast(x, DType::bf16), x.dtype()); }

Tensor linear(const Tensor& x, const Tensor& w, Precision p) {
  if (p == Precision::f32) return ops::linear(x, w);
  return from_bf16_result(ops::linear(to_bf16_operand(x), to_bf16_operand(w)));
}

Tensor grouped_linear(const Tensor& xs, const Tensor& w, const ops::Permutation& perm,
                      Precision p) {
  if (p == Precision::f32) return ops::grouped_matmul(xs, w, perm);
  return from_bf16_result(ops::grouped_matmul(to_bf16_operand(xs), to_bf16_operand(w), perm));
}

}  // namespace remoe::model
