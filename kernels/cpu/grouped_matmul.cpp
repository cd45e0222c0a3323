// CPU reference grouped GEMM. Forward and dx are row-wise (each row finds its group by a binary
// search in the offsets), dw is per (expert, output feature); all three parallelise over
// independent outputs with a fixed summation order, so results do not depend on the thread
// count. Sums run in double: a group can hold every token, a long f32 sum otherwise.
#include "kernels/grouped_matmul.h"

#include <algorithm>
#include <cstddef>
#include <vector>

namespace remoe::cpu {
namespace {

// The group holding row r: the last e with offsets[e] ≤ r (skips empty groups).
int64_t group_of(const int32_t* offsets, int64_t n_groups, int64_t r) {
  return (std::upper_bound(offsets, offsets + n_groups + 1, int32_t(r)) - offsets) - 1;
}

}  // namespace

template <typename T>
void grouped_matmul_forward(T* y, const T* x, const T* w, const int32_t* offsets,
                            int64_t n_groups, int64_t k_in, int64_t n_out) {
  const int64_t n_rows = offsets[n_groups];
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n_rows; ++r) {
    const T* x_row = x + r * k_in;
    const T* w_e = w + group_of(offsets, n_groups, r) * n_out * k_in;
    T* y_row = y + r * n_out;
    for (int64_t j = 0; j < n_out; ++j) {
      const T* w_row = w_e + j * k_in;
      double acc = 0;
      for (int64_t p = 0; p < k_in; ++p) acc += double(x_row[p]) * double(w_row[p]);
      y_row[j] = T(acc);
    }
  }
}

template <typename T>
void grouped_matmul_backward(T* dx, T* dw, const T* dy, const T* x, const T* w,
                             const int32_t* offsets, int64_t n_groups, int64_t k_in,
                             int64_t n_out) {
  const int64_t n_rows = offsets[n_groups];
  if (dx) {
#pragma omp parallel
    {
      std::vector<double> acc(static_cast<size_t>(k_in));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < n_rows; ++r) {
        const T* w_e = w + group_of(offsets, n_groups, r) * n_out * k_in;
        const T* dy_row = dy + r * n_out;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < n_out; ++j) {
          const double s = dy_row[j];
          const T* w_row = w_e + j * k_in;
          for (int64_t p = 0; p < k_in; ++p) acc[size_t(p)] += s * double(w_row[p]);
        }
        T* dx_row = dx + r * k_in;
        for (int64_t p = 0; p < k_in; ++p) dx_row[p] = T(acc[size_t(p)]);
      }
    }
  }
  if (dw) {
#pragma omp parallel
    {
      std::vector<double> acc(static_cast<size_t>(k_in));
#pragma omp for collapse(2) schedule(static)
      for (int64_t e = 0; e < n_groups; ++e)
        for (int64_t j = 0; j < n_out; ++j) {
          std::fill(acc.begin(), acc.end(), 0.0);
          for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r) {
            const double s = dy[r * n_out + j];
            const T* x_row = x + r * k_in;
            for (int64_t p = 0; p < k_in; ++p) acc[size_t(p)] += s * double(x_row[p]);
          }
          T* dw_row = dw + (e * n_out + j) * k_in;
          for (int64_t p = 0; p < k_in; ++p) dw_row[p] = T(acc[size_t(p)]);
        }
    }
  }
}

template void grouped_matmul_forward<float>(float*, const float*, const float*, const int32_t*, int64_t, int64_t, int64_t);
template void grouped_matmul_forward<double>(double*, const double*, const double*, const int32_t*, int64_t, int64_t, int64_t);
template void grouped_matmul_backward<float>(float*, float*, const float*, const float*, const float*, const int32_t*, int64_t, int64_t, int64_t);
template void grouped_matmul_backward<double>(double*, double*, const double*, const double*, const double*, const int32_t*, int64_t, int64_t, int64_t);

}  // namespace remoe::cpu
