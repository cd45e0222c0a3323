#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/embedding.h"

namespace remoe::ops {
using namespace detail;

Tensor embedding(const Tensor& ids, const Tensor& table) {
  constexpr const char* op = "embedding";
  check_ndim(op, {"ids", ids}, 1);
  check_dtype(op, {"ids", ids}, DType::i32);
  check_ndim(op, {"table", table}, 2);
  check_cpu(op, {{"ids", ids}, {"table", table}});
  const int64_t n_tokens = ids.dim(0), vocab = table.dim(0), dim = table.dim(1);
  const int32_t* id = ids.data<int32_t>();
  for (int64_t t = 0; t < n_tokens; ++t)
    REMOE_CHECK(id[t] >= 0 && id[t] < vocab, op, ": id ", id[t], " at position ", t,
                " is outside [0, ", vocab, ") (table ", shape_str(table.shape()), ")");

  Tensor out = Tensor::empty({n_tokens, dim}, table.dtype());
  dispatch_float(op, table.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cpu::embedding_forward(out.data<T>(), id, table.data<T>(), n_tokens, vocab, dim);
  });
  record(op, {table}, {out}, [=] {
    Tensor dtable = Tensor::empty(table.shape(), table.dtype());
    dispatch_float(op, table.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::embedding_backward(dtable.data<T>(), out.grad().data<T>(), ids.data<int32_t>(),
                              n_tokens, vocab, dim);
    });
    accumulate_grad(table, dtable);
  });
  return out;
}

}  // namespace remoe::ops
