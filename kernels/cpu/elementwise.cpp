#include "kernels/elementwise.h"

#include <type_traits>

namespace remoe::cpu {

template <typename T>
void add_forward(T* y, const T* a, const T* b, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

template <typename T>
void add_inplace(T* y, const T* x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

template <typename T>
void scale_forward(T* y, const T* x, double s, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = T(s * x[i]);
}

template <typename T>
void fill(T* y, T value, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = value;
}

namespace {
template <typename Dst, typename Src>
Dst convert(Src x) {
  if constexpr (std::is_same_v<Dst, bf16>) {
    if constexpr (std::is_same_v<Src, bf16>) return x;
    else return float_to_bf16(float(x));
  } else if constexpr (std::is_same_v<Src, bf16>) {
    return Dst(bf16_to_float(x));
  } else {
    return Dst(x);
  }
}
}  // namespace

template <typename Dst, typename Src>
void cast(Dst* y, const Src* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = convert<Dst>(x[i]);
}

template void add_forward<float>(float*, const float*, const float*, int64_t);
template void add_forward<double>(double*, const double*, const double*, int64_t);
template void add_inplace<float>(float*, const float*, int64_t);
template void add_inplace<double>(double*, const double*, int64_t);
template void scale_forward<float>(float*, const float*, double, int64_t);
template void scale_forward<double>(double*, const double*, double, int64_t);
template void fill<float>(float*, float, int64_t);
template void fill<double>(double*, double, int64_t);
template void fill<bf16>(bf16*, bf16, int64_t);
template void fill<int32_t>(int32_t*, int32_t, int64_t);

#define REMOE_CAST(D, S) template void cast<D, S>(D*, const S*, int64_t);
REMOE_CAST(float, double) REMOE_CAST(float, bf16) REMOE_CAST(float, float)
REMOE_CAST(double, float) REMOE_CAST(double, bf16) REMOE_CAST(double, double)
REMOE_CAST(bf16, float) REMOE_CAST(bf16, double) REMOE_CAST(bf16, bf16)
#undef REMOE_CAST

}  // namespace remoe::cpu
