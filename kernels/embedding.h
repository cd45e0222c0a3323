// embedding: out[t] = table[ids[t]].
//   ids: (T) i32 in [0, V) (the op layer validates the range), table: (V, d), out: (T, d).
// Backward writes dtable (V, d) = Σ_{t: ids[t] = v} dout[t], summed in token order
// (deterministic; rows no token used are zero).
#pragma once

#include <cstdint>

namespace remoe::cpu {

template <typename T>
void embedding_forward(T* out, const int32_t* ids, const T* table, int64_t n_tokens, int64_t vocab,
                       int64_t dim);

template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* ids, int64_t n_tokens,
                        int64_t vocab, int64_t dim);

}  // namespace remoe::cpu
