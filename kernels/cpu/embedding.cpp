#include "kernels/embedding.h"

#include <cstring>

namespace remoe::cpu {

template <typename T>
void embedding_forward(T* out, const int32_t* ids, const T* table, int64_t n_tokens,
                       int64_t vocab, int64_t dim) {
  (void)vocab;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n_tokens; ++t)
    std::memcpy(out + t * dim, table + int64_t(ids[t]) * dim, size_t(dim) * sizeof(T));
}

// Serial over tokens: rows shared by several tokens must add up in token order.
template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* ids, int64_t n_tokens,
                        int64_t vocab, int64_t dim) {
  for (int64_t i = 0; i < vocab * dim; ++i) dtable[i] = T(0);
  for (int64_t t = 0; t < n_tokens; ++t) {
    T* row = dtable + int64_t(ids[t]) * dim;
    const T* g = dout + t * dim;
    for (int64_t j = 0; j < dim; ++j) row[j] += g[j];
  }
}

template void embedding_forward<float>(float*, const int32_t*, const float*, int64_t, int64_t, int64_t);
template void embedding_forward<double>(double*, const int32_t*, const double*, int64_t, int64_t, int64_t);
template void embedding_backward<float>(float*, const float*, const int32_t*, int64_t, int64_t, int64_t);
template void embedding_backward<double>(double*, const double*, const int32_t*, int64_t, int64_t, int64_t);

}  // namespace remoe::cpu
