#include "model/precision.h"

namespace remoe::model {
namespace {

// The operand as the bf16 kernels take it: a bf16 tensor on the GPU (as is if it is one); on the
// CPU the f32 tensor of its bf16 values.
Tensor to_bf16_operand(const Tensor& x) {
  if (x.dtype() == DType::bf16) return x;
  return x.device() == Device::cuda ? ops::cast(x, DType::bf16) : round_to_bf16(x);
}

// A bf16 GEMM's output back to f32 (on the CPU: the f32 result rounded to bf16).
Tensor from_bf16_result(const Tensor& y) {
  return y.device() == Device::cuda ? ops::cast(y, DType::f32) : round_to_bf16(y);
}

// A bf16 GEMM's output kept for another bf16 op: as is on the GPU, rounded on the CPU.
Tensor bf16_result(const Tensor& y) { return y.device() == Device::cuda ? y : round_to_bf16(y); }

// The FFN with gemm(x, w) standing for the dense or the grouped product (ops' f32 semantics).
template <typename Gemm>
Tensor ffn(const Tensor& x, const Tensor& w1, const Tensor& w3, const Tensor& w2, Precision p,
           const Gemm& gemm) {
  if (p == Precision::f32) return gemm(ops::swiglu(gemm(x, w1), gemm(x, w3)), w2);
  // NOTE: x is cast once per GEMM, not once for both: its two gradients then add in f32 (on
  // x), not in bf16.
  const Tensor a = bf16_result(gemm(to_bf16_operand(x), to_bf16_operand(w1)));
  const Tensor b = bf16_result(gemm(to_bf16_operand(x), to_bf16_operand(w3)));
  const Tensor h = to_bf16_operand(ops::swiglu(a, b));  // GPU: bf16 already; CPU: rounded
  return from_bf16_result(gemm(h, to_bf16_operand(w2)));
}

}  // namespace

Tensor round_to_bf16(const Tensor& x) { return ops::cast(ops::cast(x, DType::bf16), x.dtype()); }

Tensor linear(const Tensor& x, const Tensor& w, Precision p) {
  if (p == Precision::f32) return ops::linear(x, w);
  return from_bf16_result(ops::linear(to_bf16_operand(x), to_bf16_operand(w)));
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, Precision p) {
  if (p == Precision::f32) return ops::attention(q, k, v);
  return ops::attention(to_bf16_operand(q), to_bf16_operand(k), to_bf16_operand(v));
}

Tensor swiglu_ffn(const Tensor& x, const Tensor& w1, const Tensor& w3, const Tensor& w2, Precision p) {
  return ffn(x, w1, w3, w2, p, [](const Tensor& a, const Tensor& w) { return ops::linear(a, w); });
}

Tensor grouped_swiglu_ffn(const Tensor& xs, const Tensor& w1, const Tensor& w3, const Tensor& w2,
                          const ops::Permutation& perm, Precision p) {
  return ffn(xs, w1, w3, w2, p,
             [&](const Tensor& a, const Tensor& w) { return ops::grouped_matmul(a, w, perm); });
}

}  // namespace remoe::model
