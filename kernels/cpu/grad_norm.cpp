#include "kernels/grad_norm.h"

namespace remoe::cpu {

template <typename T>
double sum_squares(const T* x, int64_t n) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += double(x[i]) * double(x[i]);
  return acc;
}

template <typename T>
void scale_inplace(T* x, double s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = T(s * x[i]);
}

template double sum_squares<float>(const float*, int64_t);
template double sum_squares<double>(const double*, int64_t);
template void scale_inplace<float>(float*, double, int64_t);
template void scale_inplace<double>(double*, double, int64_t);

}  // namespace remoe::cpu
