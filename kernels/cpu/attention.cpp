// CPU reference attention. Scores, softmax sums and output rows are accumulated in double for
// both dtypes. The forward splits (batch, query head) pairs across threads; the backward splits
// (batch, kv head) pairs, so each thread alone owns the dk and dv rows it accumulates, and the
// sum over a group's query heads runs in head order whatever the thread count.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

namespace remoe::cpu {
namespace {

template <typename T>
double dot(const T* a, const T* b, int64_t n) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += double(a[i]) * double(b[i]);
  return acc;
}

}  // namespace

template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, int64_t batch,
                       int64_t seq, int64_t q_heads, int64_t kv_heads, int64_t head_dim) {
  const int64_t group = q_heads / kv_heads;
  const double scale = 1.0 / std::sqrt(double(head_dim));
  const int64_t q_stride = q_heads * head_dim;  // between positions of one head
  const int64_t kv_stride = kv_heads * head_dim;
#pragma omp parallel
  {
    std::vector<double> scores(static_cast<size_t>(seq));
    std::vector<double> acc(static_cast<size_t>(head_dim));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < batch * q_heads; ++bh) {
      const int64_t b = bh / q_heads, h = bh % q_heads;
      const T* q_bh = q + b * seq * q_stride + h * head_dim;
      const T* k_bg = k + b * seq * kv_stride + (h / group) * head_dim;
      const T* v_bg = v + b * seq * kv_stride + (h / group) * head_dim;
      T* out_bh = out + b * seq * q_stride + h * head_dim;
      for (int64_t s = 0; s < seq; ++s) {
        const T* q_row = q_bh + s * q_stride;
        double max_score = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j <= s; ++j) {
          scores[size_t(j)] = scale * dot(q_row, k_bg + j * kv_stride, head_dim);
          max_score = std::max(max_score, scores[size_t(j)]);
        }
        double sum = 0;
        for (int64_t j = 0; j <= s; ++j) {
          scores[size_t(j)] = std::exp(scores[size_t(j)] - max_score);
          sum += scores[size_t(j)];
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j <= s; ++j) {
          const T* v_row = v_bg + j * kv_stride;
          const double p = scores[size_t(j)] / sum;
          for (int64_t d = 0; d < head_dim; ++d) acc[size_t(d)] += p * double(v_row[d]);
        }
        T* out_row = out_bh + s * q_stride;
        for (int64_t d = 0; d < head_dim; ++d) out_row[d] = T(acc[size_t(d)]);
        if (lse) lse[bh * seq + s] = T(max_score + std::log(sum));
      }
    }
  }
}

// D_i is taken as Σ_j P_ij dP_ij from the recomputed row rather than rowsum(dO ⊙ O): the two
// agree mathematically, and this one, summed in double, keeps Σ_j dS_ij ≈ 0 for f32 too, so
// `out` is not read here (it stays in the signature for kernels that prefer the cheaper form).
template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const T* /*out*/, const T* lse, int64_t batch, int64_t seq,
                        int64_t q_heads, int64_t kv_heads, int64_t head_dim) {
  const int64_t group = q_heads / kv_heads;
  const double scale = 1.0 / std::sqrt(double(head_dim));
  const int64_t q_stride = q_heads * head_dim;
  const int64_t kv_stride = kv_heads * head_dim;
  const bool need_ds = dq || dk;
#pragma omp parallel
  {
    std::vector<double> p(static_cast<size_t>(seq)), ds(static_cast<size_t>(seq));
    std::vector<double> dq_acc(static_cast<size_t>(head_dim));
    // This (batch, kv head)'s dk and dv rows, (seq, head_dim), summed over its query heads.
    std::vector<double> dk_acc(dk ? size_t(seq * head_dim) : 0);
    std::vector<double> dv_acc(dv ? size_t(seq * head_dim) : 0);
#pragma omp for schedule(static)
    for (int64_t bg = 0; bg < batch * kv_heads; ++bg) {
      const int64_t b = bg / kv_heads, g = bg % kv_heads;
      const T* k_bg = k + b * seq * kv_stride + g * head_dim;
      const T* v_bg = v + b * seq * kv_stride + g * head_dim;
      std::fill(dk_acc.begin(), dk_acc.end(), 0.0);
      std::fill(dv_acc.begin(), dv_acc.end(), 0.0);
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        const int64_t q_off = b * seq * q_stride + h * head_dim;
        const T* lse_bh = lse + (b * q_heads + h) * seq;
        for (int64_t s = 0; s < seq; ++s) {
          const T* q_row = q + q_off + s * q_stride;
          const T* do_row = dout + q_off + s * q_stride;
          const double row_lse = double(lse_bh[s]);
          double d_sum = 0;
          for (int64_t j = 0; j <= s; ++j) {
            p[size_t(j)] = std::exp(scale * dot(q_row, k_bg + j * kv_stride, head_dim) - row_lse);
            if (need_ds) {
              ds[size_t(j)] = dot(do_row, v_bg + j * kv_stride, head_dim);  // dP_sj for now
              d_sum += p[size_t(j)] * ds[size_t(j)];
            }
          }
          if (need_ds)
            for (int64_t j = 0; j <= s; ++j) ds[size_t(j)] = p[size_t(j)] * (ds[size_t(j)] - d_sum);

          if (dv)
            for (int64_t j = 0; j <= s; ++j) {
              double* dv_row = dv_acc.data() + j * head_dim;
              for (int64_t d = 0; d < head_dim; ++d) dv_row[d] += p[size_t(j)] * double(do_row[d]);
            }
          if (dk)
            for (int64_t j = 0; j <= s; ++j) {
              double* dk_row = dk_acc.data() + j * head_dim;
              const double c = scale * ds[size_t(j)];
              for (int64_t d = 0; d < head_dim; ++d) dk_row[d] += c * double(q_row[d]);
            }
          if (dq) {
            std::fill(dq_acc.begin(), dq_acc.end(), 0.0);
            for (int64_t j = 0; j <= s; ++j) {
              const T* k_row = k_bg + j * kv_stride;
              for (int64_t d = 0; d < head_dim; ++d) dq_acc[size_t(d)] += ds[size_t(j)] * double(k_row[d]);
            }
            T* dq_row = dq + q_off + s * q_stride;
            for (int64_t d = 0; d < head_dim; ++d) dq_row[d] = T(scale * dq_acc[size_t(d)]);
          }
        }
      }
      const int64_t kv_off = b * seq * kv_stride + g * head_dim;
      for (int64_t j = 0; j < seq; ++j)
        for (int64_t d = 0; d < head_dim; ++d) {
          if (dk) dk[kv_off + j * kv_stride + d] = T(dk_acc[size_t(j * head_dim + d)]);
          if (dv) dv[kv_off + j * kv_stride + d] = T(dv_acc[size_t(j * head_dim + d)]);
        }
    }
  }
}

template void attention_forward<float>(float*, float*, const float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t);
template void attention_forward<double>(double*, double*, const double*, const double*, const double*, int64_t, int64_t, int64_t, int64_t, int64_t);
template void attention_backward<float>(float*, float*, float*, const float*, const float*, const float*, const float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t);
template void attention_backward<double>(double*, double*, double*, const double*, const double*, const double*, const double*, const double*, const double*, int64_t, int64_t, int64_t, int64_t, int64_t);

}  // namespace remoe::cpu
