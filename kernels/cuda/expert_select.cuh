// Per-expert selection on the GPU, shared by capacity.cu (capacity dropping) and
// expert_choice.cu (expert-choice routing): for every expert e, keep at most `capacity` of the
// tokens routed to it, in the CPU's order. Included only by .cu files.
//
//   scores, gates, gates_out: (T, E) T-typed; mask, kept: (T, E) i32 (mask null: every pair is
//   routed, the expert-choice case); expert_counts (E), token_counts (T), nonzero (1) i32.
//
// select_per_expert_kernel: one block per expert (grid E), kSelectThreads threads walking the
// column t = tid, tid + kSelectThreads, … (strided reads, E elements apart):
//   1. n = the routed pairs of the column. n ≤ capacity: keep them all; capacity 0: keep none.
//   2. by score: a most-significant-digit radix select finds K, the key of the capacity-th
//      largest score, in 8-bit digits (4 passes over the column for f32, 8 for f64): each pass
//      histograms the digit of the keys that agree with K on the digits found so far (shared
//      int atomics: counts, so the order cannot matter) and one thread walks the 256 bins from
//      the top. It leaves `need`, how many of the pairs with key K are still to keep.
//      The key is the score's bits mapped so that unsigned order is float order, with −0 folded
//      onto +0 (the CPU's `>` sees them equal).
//   3. one ordered pass in token order, kSelectThreads tokens at a time: keep a pair if its key
//      is above K, or equal to K and fewer than `need` equal ones came before it (a block
//      exclusive scan: ballot within the warp, then the warps in order, plus the running carry).
//      By position is step 3 alone with every routed pair "equal" and need = capacity.
//   The kept pair's value is the mask's (1 for a null mask), gates_out = kept ? gates : 0, and
//   expert_counts[e] = Σ kept, as the CPU writes them.
// Then token_counts (one warp per token, Σ_e kept) and nonzero (one block, Σ_e expert_counts).
// Integer sums only: nothing here depends on an order of floating-point additions.
//
// NOTE: one block per expert is the clear first version. With few experts (E = 8) and long
// columns (T = 64K) only E SMs work, each reading its column six times (f32); a split of the
// column over several blocks per expert (global histograms) is the next step if it shows up.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launch.cuh"

namespace remoe::cuda::detail {
// NOTE: an unnamed namespace: each including .cu file gets its own copy of these kernels, so two
// files can include this header without clashing host stubs at link time.
namespace {

constexpr int kSelectThreads = 512;
constexpr int kSelectWarps = kSelectThreads / 32;
constexpr int kRadixBits = 8;
constexpr int kRadixBins = 1 << kRadixBits;
constexpr unsigned kSelectFullMask = 0xffffffffu;
static_assert(kSelectThreads >= kRadixBins, "one thread clears each histogram bin");

template <typename T>
struct SelectKey;
template <>
struct SelectKey<float> {
  using type = uint32_t;
};
template <>
struct SelectKey<double> {
  using type = uint64_t;
};

// Unsigned keys in the order of the scores: negative values have every bit flipped, others the
// sign bit set. −0 is folded onto +0 first.
__device__ __forceinline__ uint32_t select_key(float s) {
  uint32_t b = __float_as_uint(s);
  if ((b & 0x7fffffffu) == 0) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ uint64_t select_key(double s) {
  uint64_t b = static_cast<uint64_t>(__double_as_longlong(s));
  if ((b & 0x7fffffffffffffffull) == 0) b = 0;
  return (b & 0x8000000000000000ull) ? ~b : (b | 0x8000000000000000ull);
}

// The block's total of one int per thread, in every thread. Starts and ends with a barrier, so
// s_warp may be reused right before and after.
__device__ int64_t select_block_total(int64_t value, int64_t* s_warp) {
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  for (int m = 16; m > 0; m >>= 1) value += __shfl_xor_sync(kSelectFullMask, value, m);
  __syncthreads();
  if (lane == 0) s_warp[warp] = value;
  __syncthreads();
  int64_t total = 0;
  for (int w = 0; w < kSelectWarps; ++w) total += s_warp[w];
  __syncthreads();
  return total;
}

template <typename T>
__global__ void __launch_bounds__(kSelectThreads)
    select_per_expert_kernel(int32_t* kept, T* gates_out, int32_t* expert_counts, const T* gates,
                             const int32_t* mask, const T* scores, int64_t n_tokens,
                             int64_t n_experts, int64_t capacity, bool by_position) {
  using Key = typename SelectKey<T>::type;
  constexpr int kKeyBits = 8 * int(sizeof(Key));
  __shared__ int32_t s_hist[kRadixBins];
  __shared__ int64_t s_warp[kSelectWarps];
  __shared__ Key s_prefix;
  __shared__ int64_t s_need;

  const int tid = int(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const int64_t e = blockIdx.x;
  const auto routed = [&](int64_t t) { return mask ? mask[t * n_experts + e] != 0 : true; };

  // 1. How many pairs the column routes (the same in every thread, so every branch below on
  //    `mode` is uniform over the block and every barrier is reached by all threads).
  int64_t local = 0;
  for (int64_t t = tid; t < n_tokens; t += kSelectThreads) local += routed(t) ? 1 : 0;
  const int64_t n_routed = select_block_total(local, s_warp);

  enum Mode { kKeepAll, kKeepNone, kFirstByPosition, kByScore };
  const Mode mode = n_routed <= capacity ? kKeepAll
                    : capacity == 0      ? kKeepNone
                    : by_position        ? kFirstByPosition
                                         : kByScore;

  // 2. K = prefix after the last digit; `need` ∈ [1, count of key K] stays true at every digit
  //    (it starts as capacity ∈ [1, n_routed − 1]).
  Key prefix = 0, decided = 0;  // the digits found so far, and the bits they cover
  int64_t need = capacity;
  if (mode == kByScore) {
    for (int shift = kKeyBits - kRadixBits; shift >= 0; shift -= kRadixBits) {
      if (tid < kRadixBins) s_hist[tid] = 0;
      __syncthreads();
      for (int64_t t = tid; t < n_tokens; t += kSelectThreads) {
        if (!routed(t)) continue;
        const Key key = select_key(scores[t * n_experts + e]);
        if ((key & decided) == prefix) atomicAdd(&s_hist[int(key >> shift) & (kRadixBins - 1)], 1);
      }
      __syncthreads();
      if (tid == 0) {
        // The digit whose bin holds the need-th largest of the candidates, from the top.
        int64_t above = 0;
        int b = kRadixBins - 1;
        for (; b > 0; --b) {
          if (above + s_hist[b] >= need) break;
          above += s_hist[b];
        }
        s_prefix = prefix | (Key(b) << shift);
        s_need = need - above;
      }
      __syncthreads();
      prefix = s_prefix;
      need = s_need;
      decided |= Key(kRadixBins - 1) << shift;
      // NOTE: no barrier here: s_hist and s_prefix are written again only after the next
      // iteration's first barrier, which every thread reaches after reading them.
    }
  }

  // 3. One pass in token order.
  int64_t carry = 0;  // pairs equal to K (routed pairs, by position) in earlier chunks
  int64_t count = 0;
  for (int64_t base = 0; base < n_tokens; base += kSelectThreads) {
    const int64_t t = base + tid;
    const int64_t i = t * n_experts + e;
    int32_t m = 0;
    bool above = false, tie = false;
    if (t < n_tokens) {
      m = mask ? mask[i] : 1;
      if (m != 0) {
        if (mode == kKeepAll) {
          above = true;
        } else if (mode == kFirstByPosition) {
          tie = true;
        } else if (mode == kByScore) {
          const Key key = select_key(scores[i]);
          above = key > prefix;
          tie = key == prefix;
        }
      }
    }
    const unsigned ties = __ballot_sync(kSelectFullMask, tie);
    if (lane == 0) s_warp[warp] = __popc(ties);
    __syncthreads();
    int64_t before = carry + __popc(ties & ((1u << lane) - 1u)), total = 0;
    for (int w = 0; w < kSelectWarps; ++w) {
      if (w < warp) before += s_warp[w];
      total += s_warp[w];
    }
    __syncthreads();  // s_warp is rewritten by the next chunk
    carry += total;
    if (t < n_tokens) {
      const int32_t k = (above || (tie && before < need)) ? m : 0;
      kept[i] = k;
      gates_out[i] = k != 0 ? gates[i] : T(0);
      count += k;
    }
  }
  const int64_t kept_total = select_block_total(count, s_warp);
  if (tid == 0) expert_counts[e] = int32_t(kept_total);
}

// token_counts[t] = Σ_e kept[t, e]: one warp per token, grid-stride over tokens.
__global__ void kept_token_counts_kernel(int32_t* token_counts, const int32_t* kept,
                                         int64_t n_tokens, int64_t n_experts) {
  const int lane = int(threadIdx.x) % 32;
  const int64_t first = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t t = first; t < n_tokens; t += stride) {  // warp-uniform
    int64_t s = 0;
    for (int64_t e = lane; e < n_experts; e += 32) s += kept[t * n_experts + e];
    for (int m = 16; m > 0; m >>= 1) s += __shfl_xor_sync(kSelectFullMask, s, m);
    if (lane == 0) token_counts[t] = int32_t(s);
  }
}

// nonzero = Σ_e expert_counts[e]: one block of kSelectThreads.
__global__ void __launch_bounds__(kSelectThreads)
    kept_nonzero_kernel(int32_t* nonzero, const int32_t* expert_counts, int64_t n_experts) {
  __shared__ int64_t s_warp[kSelectWarps];
  int64_t s = 0;
  for (int64_t e = threadIdx.x; e < n_experts; e += kSelectThreads) s += expert_counts[e];
  const int64_t total = select_block_total(s, s_warp);
  if (threadIdx.x == 0) *nonzero = int32_t(total);
}

// The whole selection: kept, gates_out and the three counts. Every output is written, also for
// T = 0 (counts 0); E = 0 writes nonzero only.
template <typename T>
void select_per_expert(int32_t* kept, T* gates_out, int32_t* expert_counts, int32_t* token_counts,
                       int32_t* nonzero, const T* gates, const int32_t* mask, const T* scores,
                       int64_t n_tokens, int64_t n_experts, int64_t capacity, bool by_position,
                       cudaStream_t stream) {
  if (n_experts > 0) {
    select_per_expert_kernel<T><<<unsigned(n_experts), kSelectThreads, 0, stream>>>(
        kept, gates_out, expert_counts, gates, mask, scores, n_tokens, n_experts, capacity,
        by_position);
    CUDA_CHECK(cudaGetLastError());
  }
  if (n_tokens > 0) {
    if (n_experts > 0) {
      constexpr int kThreads = 256;
      kept_token_counts_kernel<<<grid_for(n_tokens, kThreads / 32), kThreads, 0, stream>>>(
          token_counts, kept, n_tokens, n_experts);
      CUDA_CHECK(cudaGetLastError());
    } else {
      CUDA_CHECK(cudaMemsetAsync(token_counts, 0, size_t(n_tokens) * sizeof(int32_t), stream));
    }
  }
  kept_nonzero_kernel<<<1, kSelectThreads, 0, stream>>>(nonzero, expert_counts, n_experts);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace
}  // namespace remoe::cuda::detail
