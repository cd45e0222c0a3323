// CPU reference GEMM. Each row of op(A) is first copied to a contiguous buffer, then row i of
// C is built as dot products against rows of B (trans_b, the x · Wᵀ case) or as a sum of
// scaled rows of B (no trans_b). Rows are independent, so OpenMP splits them; the sum order
// inside a row is fixed, so the result does not depend on the thread count.
#include "kernels/matmul.h"

#include <cstddef>
#include <vector>

namespace remoe::cpu {

template <typename T>
void matmul_forward(T* c, const T* a, const T* b, int64_t M, int64_t N, int64_t K, bool trans_a,
                    bool trans_b) {
#pragma omp parallel
  {
    std::vector<T> a_row(static_cast<size_t>(K));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t p = 0; p < K; ++p) a_row[size_t(p)] = trans_a ? a[p * M + i] : a[i * K + p];
      T* c_row = c + i * N;
      if (trans_b) {
        for (int64_t j = 0; j < N; ++j) {
          const T* b_row = b + j * K;
          T acc = 0;
          for (int64_t p = 0; p < K; ++p) acc += a_row[size_t(p)] * b_row[p];
          c_row[j] = acc;
        }
      } else {
        for (int64_t j = 0; j < N; ++j) c_row[j] = 0;
        for (int64_t p = 0; p < K; ++p) {
          const T s = a_row[size_t(p)];
          const T* b_row = b + p * N;
          for (int64_t j = 0; j < N; ++j) c_row[j] += s * b_row[j];
        }
      }
    }
  }
}

// dA = dC · op(B)ᵀ and dB = op(A)ᵀ · dC, each written in its operand's stored layout.
template <typename T>
void matmul_backward(T* da, T* db, const T* dc, const T* a, const T* b, int64_t M, int64_t N,
                     int64_t K, bool trans_a, bool trans_b) {
  if (da) {
    if (!trans_a)
      matmul_forward(da, dc, b, M, K, N, false, !trans_b);  // (M, K)
    else
      matmul_forward(da, b, dc, K, M, N, trans_b, true);  // (K, M) = op(B) · dCᵀ
  }
  if (db) {
    if (!trans_b)
      matmul_forward(db, a, dc, K, N, M, !trans_a, false);  // (K, N)
    else
      matmul_forward(db, dc, a, N, K, M, true, trans_a);  // (N, K) = dCᵀ · op(A)
  }
}

template void matmul_forward<float>(float*, const float*, const float*, int64_t, int64_t, int64_t, bool, bool);
template void matmul_forward<double>(double*, const double*, const double*, int64_t, int64_t, int64_t, bool, bool);
template void matmul_backward<float>(float*, float*, const float*, const float*, const float*, int64_t, int64_t, int64_t, bool, bool);
template void matmul_backward<double>(double*, double*, const double*, const double*, const double*, int64_t, int64_t, int64_t, bool, bool);

}  // namespace remoe::cpu
