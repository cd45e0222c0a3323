// Where the model computes in bf16: the one place that decides (DESIGN.md, "precision is a
// per-tensor decision written in one place").
//
//   Precision::f32   every tensor f32: the CPU reference, and the GPU's exact check.
//   Precision::bf16  the GEMMs' operands — activations and weights of every linear layer and
//                    expert GEMM but the router — are rounded to bf16 and the products summed
//                    in f32; the GEMM's output is rounded to bf16, and so is the gradient that
//                    reaches it. Everything else stays f32: master weights and AdamW's moments,
//                    the residual stream, RMSNorm, RoPE, the router's logits,
//                    softmax and gates, the combine, every loss and reduction. SwiGLU sits
//                    between two GEMMs: it reads their bf16 outputs, computes in f32 and its
//                    result is rounded to bf16 for the next GEMM (swiglu_ffn). Attention
//                    reads q, k, v rounded to bf16 and gives its output in bf16, the softmax
//                    in f32 (on the GPU its probabilities are rounded to bf16 for the P·V
//                    product, as in FlashAttention; the CPU emulation keeps them f32).
//
// This is what PyTorch's bf16 autocast does around a matmul (bf16 in, bf16 out, the weight's
// gradient cast back to f32), so the two agree to rounding. On the GPU the casts are real
// (f32 → bf16 tensors into the bf16 tensor-core kernels, and back); on the CPU, which has no
// bf16 kernels, the same roundings are emulated around the f32 kernels (round to bf16 and back),
// so the bf16 policy runs, and is tested, on both.
#pragma once

#include "autodiff/ops.h"

namespace remoe::model {

enum class Precision { f32, bf16 };

// x (T, d_in) · w (d_out, d_in)ᵀ → (T, d_out) f32, under the policy.
Tensor linear(const Tensor& x, const Tensor& w, Precision p);
// The SwiGLU FFN W2 · (silu(W1 x) ⊙ W3 x): x (T, d) → (T, d) f32, dense (w1, w3 (d_ffn, d),
// w2 (d, d_ffn)) or grouped by perm (the same with a leading E). Under bf16 the GPU keeps
// W1 x, W3 x and the gate in bf16 (the gate's math in f32, one rounding of its result): the
// numbers of the f32 round trips they replace, at a third of the memory the backward holds.
Tensor swiglu_ffn(const Tensor& x, const Tensor& w1, const Tensor& w3, const Tensor& w2, Precision p);
Tensor grouped_swiglu_ffn(const Tensor& xs, const Tensor& w1, const Tensor& w3, const Tensor& w2,
                          const ops::Permutation& perm, Precision p);
// Causal attention (ops::attention's shapes) under the policy: f32, or bf16 in and out (on the
// CPU, f32 tensors of bf16 values in, f32 out).
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, Precision p);
// x rounded to bf16 and back to f32 (differentiable: the gradient is rounded the same way).
Tensor round_to_bf16(const Tensor& x);

}  // namespace remoe::model
