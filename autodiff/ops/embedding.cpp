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
  REMOE_CHECK(ids.device() == table.device(), op, ": ids on ", device_name(ids.device()),
              ", table on ", device_name(table.device()));
  const int64_t n_tokens = ids.dim(0), vocab = table.dim(0), dim = table.dim(1);
  // NOTE: on the GPU this reads the ids back (T int32, one synchronisation).
  check_ids(op, "id", ids, vocab, /*allow_ignore=*/false);

  Tensor out = Tensor::empty({n_tokens, dim}, table.dtype(), table.device());
  if (on_gpu(table))
    dispatch_cuda(op, table.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cuda::embedding_forward(out.cuda_data<T>(), ids.cuda_data<int32_t>(), table.cuda_data<T>(),
                              n_tokens, vocab, dim, stream());
    });
  else
    dispatch_float(op, table.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::embedding_forward(out.data<T>(), ids.data<int32_t>(), table.data<T>(), n_tokens, vocab,
                             dim);
    });
  record(op, {table}, {out}, [=] {
    Tensor dtable = Tensor::empty(table.shape(), table.dtype(), table.device());
    if (on_gpu(table))
      dispatch_cuda(op, table.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cuda::embedding_backward(dtable.cuda_data<T>(), out.grad().cuda_data<T>(),
                                 ids.cuda_data<int32_t>(), n_tokens, vocab, dim, stream());
      });
    else
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
