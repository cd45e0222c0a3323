// Row sums run in double whatever T is: mean(x²) in f32 over a wide row loses digits that rstd
// and the backward's dot product both need.
#include "kernels/rmsnorm.h"

#include <algorithm>
#include <cmath>

namespace remoe::cpu {

namespace {
constexpr int64_t kBlock = 64;  // features per dw block
}  // namespace

template <typename T>
void rmsnorm_forward(T* y, T* rstd, const T* x, const T* w, int64_t rows, int64_t dim,
                     double eps) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    T* yr = y + r * dim;
    double sum_sq = 0;
    for (int64_t j = 0; j < dim; ++j) sum_sq += double(xr[j]) * double(xr[j]);
    const double s = 1.0 / std::sqrt(sum_sq / double(dim) + eps);
    for (int64_t j = 0; j < dim; ++j) yr[j] = T(double(xr[j]) * s * double(w[j]));
    if (rstd) rstd[r] = T(s);
  }
}

// With n = x·rstd (the normalised row) and g = dy ⊙ w:
//   dx = rstd · (g − n · mean_j(g ⊙ n)),   dw = Σ_rows dy ⊙ n.
template <typename T>
void rmsnorm_backward(T* dx, T* dw, const T* dy, const T* x, const T* w, const T* rstd,
                      int64_t rows, int64_t dim) {
  if (dx) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * dim;
      const T* dyr = dy + r * dim;
      T* dxr = dx + r * dim;
      const double s = double(rstd[r]);
      double dot = 0;
      for (int64_t j = 0; j < dim; ++j) dot += double(dyr[j]) * double(w[j]) * double(xr[j]) * s;
      const double mean = dot / double(dim);
      for (int64_t j = 0; j < dim; ++j) {
        const double n = double(xr[j]) * s;
        dxr[j] = T(s * (double(dyr[j]) * double(w[j]) - n * mean));
      }
    }
  }
  if (dw) {
    // Features in blocks, rows in order inside each block: every dw[j] sums rows in the same
    // order whatever the thread count, and the row reads stay contiguous.
    const int64_t n_blocks = (dim + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < n_blocks; ++b) {
      const int64_t j0 = b * kBlock, j1 = std::min(dim, j0 + kBlock);
      double acc[kBlock] = {};
      for (int64_t r = 0; r < rows; ++r) {
        const double s = double(rstd[r]);
        for (int64_t j = j0; j < j1; ++j)
          acc[j - j0] += double(dy[r * dim + j]) * double(x[r * dim + j]) * s;
      }
      for (int64_t j = j0; j < j1; ++j) dw[j] = T(acc[j - j0]);
    }
  }
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, int64_t, int64_t, double);
template void rmsnorm_forward<double>(double*, double*, const double*, const double*, int64_t, int64_t, double);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*, const float*, int64_t, int64_t);
template void rmsnorm_backward<double>(double*, double*, const double*, const double*, const double*, const double*, int64_t, int64_t);

}  // namespace remoe::cpu
