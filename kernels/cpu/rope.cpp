// The (S, Dh/2) table of cos and sin is built once per call in double, then every
// (batch, position, head) row is rotated from it; rows are independent.
#include "kernels/rope.h"

#include <cmath>
#include <vector>

namespace remoe::cpu {
namespace {

struct RopeTable {
  std::vector<double> cos, sin;  // (S, Dh/2)
};

RopeTable make_table(int64_t seq, int64_t head_dim, double base) {
  const int64_t half = head_dim / 2;
  RopeTable tab;
  tab.cos.resize(size_t(seq * half));
  tab.sin.resize(size_t(seq * half));
  for (int64_t i = 0; i < half; ++i) {
    const double freq = std::pow(base, -2.0 * double(i) / double(head_dim));
    for (int64_t s = 0; s < seq; ++s) {
      const double angle = double(s) * freq;
      tab.cos[size_t(s * half + i)] = std::cos(angle);
      tab.sin[size_t(s * half + i)] = std::sin(angle);
    }
  }
  return tab;
}

// y = R(sign · angle) x for each pair (x[i], x[i + Dh/2]); sign = −1 is the transpose.
template <typename T>
void rotate(T* y, const T* x, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
            double base, double sign) {
  const RopeTable tab = make_table(seq, head_dim, base);
  const int64_t half = head_dim / 2;
  const int64_t n_rows = batch * seq * heads;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < n_rows; ++row) {
    const int64_t s = (row / heads) % seq;
    const double* c = tab.cos.data() + s * half;
    const double* sn = tab.sin.data() + s * half;
    const T* xr = x + row * head_dim;
    T* yr = y + row * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const double x1 = double(xr[i]), x2 = double(xr[i + half]);
      const double si = sign * sn[i];
      yr[i] = T(x1 * c[i] - x2 * si);
      yr[i + half] = T(x2 * c[i] + x1 * si);
    }
  }
}

}  // namespace

template <typename T>
void rope_forward(T* y, const T* x, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                  double base) {
  rotate(y, x, batch, seq, heads, head_dim, base, 1.0);
}

template <typename T>
void rope_backward(T* dx, const T* dy, int64_t batch, int64_t seq, int64_t heads,
                   int64_t head_dim, double base) {
  rotate(dx, dy, batch, seq, heads, head_dim, base, -1.0);
}

template void rope_forward<float>(float*, const float*, int64_t, int64_t, int64_t, int64_t, double);
template void rope_forward<double>(double*, const double*, int64_t, int64_t, int64_t, int64_t, double);
template void rope_backward<float>(float*, const float*, int64_t, int64_t, int64_t, int64_t, double);
template void rope_backward<double>(double*, const double*, int64_t, int64_t, int64_t, int64_t, double);

}  // namespace remoe::cpu
