// The op layer: Tensor in, Tensor out. Each op checks shapes and dtypes (errors name the op and
// the offending shapes), dispatches on the device to a kernel (kernels/<op>.h), and records
// its backward on the tape. On the CPU every float op runs in f32 and f64; bf16 tensors must be
// cast first. Shapes below use T tokens, E experts, d features, N routed rows.
//
// One file per stem implements these: autodiff/ops/<stem>.cpp.
#pragma once

#include <cstdint>
#include <vector>

#include "autodiff/tensor.h"
#include "kernels/adamw.h"

namespace remoe::ops {

// --- elementwise and views (ops/elementwise.cpp) -------------------------------------------
Tensor add(const Tensor& a, const Tensor& b);   // same shape and dtype
void add_(const Tensor& y, const Tensor& x);    // y += x in place, not recorded (grad accumulation)
Tensor scale(const Tensor& x, double s);        // s · x
Tensor reshape(const Tensor& x, const Shape& shape);  // a view; its gradient is reshaped back
Tensor cast(const Tensor& x, DType dtype);      // between f32, f64 and bf16; differentiable

// --- dense layers (ops/matmul.cpp) -------------------------------------------------------
// a: (M, K) or (K, M) when trans_a; b: (K, N) or (N, K) when trans_b → (M, N).
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// x (T, d_in) · w (d_out, d_in)ᵀ → (T, d_out): a linear layer without bias.
Tensor linear(const Tensor& x, const Tensor& w);

// --- transformer pieces ------------------------------------------------------------------
// ids (T) i32, table (V, d) → (T, d). An id outside [0, V) is an error naming it. (embedding.cpp)
Tensor embedding(const Tensor& ids, const Tensor& table);
// x (.., d), w (d) → same shape as x. (rmsnorm.cpp)
Tensor rmsnorm(const Tensor& x, const Tensor& w, double eps);
// x (B, S, H, Dh), Dh even → same shape, rotated by position in the sequence. (rope.cpp)
Tensor rope(const Tensor& x, double base);
// q (B, S, Hq, Dh), k and v (B, S, Hkv, Dh), Hq % Hkv == 0 → (B, S, Hq, Dh), causal. (attention.cpp)
// f32 or f64 on the CPU; f32 or bf16 on the GPU (bf16: tensor cores for Dh 64, 96 or 128, else
// the f32 kernels on the inputs' values with the output rounded to bf16).
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v);
// a, b same shape → silu(a) ⊙ b. (swiglu.cpp)
Tensor swiglu(const Tensor& a, const Tensor& b);
// logits (T, V), targets (T) i32 in [0, V) or −1 (ignored) → scalar mean loss, shape ().
// (cross_entropy.cpp)
Tensor cross_entropy(const Tensor& logits, const Tensor& targets);

// --- the MoE layer's pieces (REMOE_SPEC §1-3) ----------------------------------------------
// Gates and statistics of one routing pass (router.cpp). gates is differentiable; probs
// (TopK only; undefined for ReLU) is differentiable for the aux loss; the rest are i32 or
// constants with no gradient.
struct Routing {
  Tensor gates;          // (T, E)  R = max(z, 0), or the top-k probabilities (0 elsewhere)
  Tensor probs;          // (T, E)  TopK: softmax(z); ReLU: undefined
  Tensor mask;           // (T, E)  i32, 1 on active pairs
  Tensor expert_counts;  // (E)     i32, c_e
  Tensor score_sums;     // (E)     Σ_t R[t, e] (ReLU) or Σ_t p[t, e] (TopK)
  Tensor token_counts;   // (T)     i32, active experts per token
  Tensor nonzero;        // ()      i32, Σ mask
};
// logits (T, E) → ReLU routing (ReMoE).
Routing relu_router(const Tensor& logits);
// logits (T, E) → softmax top-k, 1 ≤ k ≤ E; renormalize divides the k gates by their sum
// (which is the softmax over the k selected logits). bias (E), same dtype, when defined, is
// added to p for the selection only (aux-loss-free balancing): the gates stay unbiased.
Routing topk_router(const Tensor& logits, int k, bool renormalize = false,
                    const Tensor& bias = Tensor());
// logits (T, E) → expert choice: each expert takes the `capacity` tokens of largest softmax
// probability (kernels/expert_choice.h; not causal). gates and probs differentiable.
// (expert_choice.cpp)
Routing expert_choice_router(const Tensor& logits, int64_t capacity);
// ids (T) i32 → hash routing into E experts, k per token, gate 1/k, in `dtype` (f32 or f64);
// no gradient, probs undefined (kernels/hash_router.h). (hash_router.cpp)
Routing hash_router(const Tensor& ids, int64_t n_experts, int k, DType dtype);
// C = ceil(T·k/E · factor), at most T, computed so that an exact product is not rounded up by
// a last-bit error. (capacity.cpp)
int64_t expert_capacity(int64_t n_tokens, int64_t k, int64_t n_experts, double factor);
// Capacity dropping (kernels/capacity.h): keeps at most `capacity` pairs per expert, by
// scores (T, E) or by position; returns the routing with gates ⊙ kept (differentiable), the
// kept mask and its counts; probs and score_sums are the input's (the aux loss sees the
// routing before dropping). (capacity.cpp)
Routing drop_over_capacity(const Routing& routing, const Tensor& scores, int64_t capacity,
                           bool by_position);
// Fraction of inactive (token, expert) pairs, 1 − Σ mask / (T·E): the sparsity S of §2.
// Reads one number from the device.
double sparsity(const Routing& routing);

// Expert-major order of the active pairs (permute.cpp); no gradient.
struct Permutation {
  Tensor expert_offsets;  // (E + 1) i32
  Tensor token_index;     // (N) i32
  Tensor row_of;          // (T, E) i32, −1 for inactive pairs
  int64_t n_rows = 0;     // N, read back from the device: sizes the routed buffers
};
Permutation permute(const Tensor& mask);
// x (T, d) → (N, d), row r = x[token_index[r]].
Tensor gather_rows(const Tensor& x, const Permutation& perm);
// x (N, d_in), w (E, d_out, d_in) → (N, d_out), expert e's rows times w[e]ᵀ. (grouped_matmul.cpp)
Tensor grouped_matmul(const Tensor& x, const Tensor& w, const Permutation& perm);
// expert_out (N, d), gates (T, E) → (T, d), y[t] = Σ_e gates[t, e] · expert_out[row_of[t, e]].
// (combine.cpp)
Tensor combine(const Tensor& expert_out, const Tensor& gates, const Permutation& perm);

// Regularisers → scalar, shape () (moe_loss.cpp).
// coeff · E / (k · T²) · Σ_e c_e · Σ_t s[t, e], c_e = expert_counts held constant: ReMoE's
// load-balanced L1 (s = gates, coeff = λ) and the TopK aux loss (s = probs, coeff = 0.01).
Tensor load_balance_loss(const Tensor& scores, const Tensor& expert_counts, double coeff, int k);
// coeff / T · Σ s (ReMoE's plain L1 ablation).
Tensor l1_loss(const Tensor& scores, double coeff);
// ST-MoE router z-loss: coeff / T · Σ_t (logsumexp_e logits[t, e])², logits (T, E). (z_loss.cpp)
Tensor z_loss(const Tensor& logits, double coeff);

// --- optimizer side: not recorded (optim.cpp) ------------------------------------------------
// One AdamW update of param in place from its grad; m and v are its moments (same shape and
// dtype, zero at step 1). step is 1-based.
void adamw_step(const Tensor& param, const Tensor& m, const Tensor& v, const cpu::AdamWHyper& hyper,
                int64_t step);
// The same for every parameter at once, weight decay hyper.weight_decay where decay[i] and 0
// elsewhere; on the GPU in one multi-tensor launch (or a few), on the CPU one after another.
void adamw_step(const std::vector<Tensor>& params, const std::vector<Tensor>& m,
                const std::vector<Tensor>& v, const std::vector<bool>& decay,
                const cpu::AdamWHyper& hyper, int64_t step);
// sqrt(Σ over tensors of Σ g²) over the defined gradients of `params`, in order.
double grad_norm(const std::vector<Tensor>& params);
// Scales the gradients so their global norm is at most max_norm (torch's clip_grad_norm_);
// returns the norm before clipping.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
// The same with the norm given (e.g. summed over the ranks that each hold part of the
// parameters); returns it.
double clip_grads_to_norm(const std::vector<Tensor>& params, double norm, double max_norm);

}  // namespace remoe::ops
