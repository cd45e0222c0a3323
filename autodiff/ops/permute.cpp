#include "autodiff/ops/permutation.h"

#include "autodiff/device.h"
#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/permute.h"

namespace remoe::ops {
using namespace detail;

namespace detail {

void check_permutation(const char* op, const Permutation& perm) {
  const Arg offsets{"perm.expert_offsets", perm.expert_offsets};
  const Arg tokens{"perm.token_index", perm.token_index};
  const Arg rows{"perm.row_of", perm.row_of};
  check_ndim(op, offsets, 1);
  check_ndim(op, tokens, 1);
  check_ndim(op, rows, 2);
  for (const Arg& a : {offsets, tokens, rows}) check_dtype(op, a, DType::i32);
  const Device dev = perm.row_of.device();
  REMOE_CHECK(perm.expert_offsets.device() == dev && perm.token_index.device() == dev, op,
              ": the permutation's tensors live on different devices");
  const int64_t T = perm.row_of.dim(0), E = perm.row_of.dim(1), N = perm.n_rows;
  check_dim(op, offsets, 0, E + 1, "experts of perm.row_of, plus one");
  check_dim(op, tokens, 0, N, "perm.n_rows");
  if (dev != Device::cpu) return;

  const int32_t* off = perm.expert_offsets.data<int32_t>();
  REMOE_CHECK(off[0] == 0 && off[E] == N, op, ": perm.expert_offsets must run from 0 to n_rows = ",
              N, ", got ", off[0], " .. ", off[E]);
  for (int64_t e = 0; e < E; ++e)
    REMOE_CHECK(off[e] <= off[e + 1], op, ": perm.expert_offsets decreases at expert ", e, " (",
                off[e], " > ", off[e + 1], ")");
  const int32_t* tok = perm.token_index.data<int32_t>();
  for (int64_t r = 0; r < N; ++r)
    REMOE_CHECK(tok[r] >= 0 && tok[r] < T, op, ": perm.token_index[", r, "] = ", tok[r],
                " is outside [0, ", T, ")");
  const int32_t* row = perm.row_of.data<int32_t>();
  for (int64_t i = 0; i < T * E; ++i)
    REMOE_CHECK(row[i] >= -1 && row[i] < N, op, ": perm.row_of[", i / E, ", ", i % E, "] = ",
                row[i], " is outside [-1, ", N, ")");
}

}  // namespace detail

namespace {

// The mask came from a router kernel (0 or 1 by construction); N is known only after the scan,
// so token_index is allocated for every pair and cut to the N rows read back with the offsets.
Permutation permute_cuda(const Tensor& mask) {
  const int64_t T = mask.dim(0), E = mask.dim(1);
  Permutation perm;
  perm.expert_offsets = Tensor::empty({E + 1}, DType::i32, Device::cuda);
  const Tensor token_index = Tensor::empty({T * E}, DType::i32, Device::cuda);
  perm.row_of = Tensor::empty({T, E}, DType::i32, Device::cuda);
  run_cuda("permute", [&](auto) {
    cuda::permute_indices(perm.expert_offsets.cuda_data<int32_t>(),
                          token_index.cuda_data<int32_t>(), perm.row_of.cuda_data<int32_t>(),
                          mask.cuda_data<int32_t>(), T, E, stream());
  });
  // NOTE: the MoE layer waits here: N sizes the routed buffers (and model/moe.cpp reads the
  // layer's statistics right after, while the GPU is idle anyway).
  int32_t n_rows = 0;
  device::copy(&n_rows, Device::cpu,
               static_cast<const int32_t*>(perm.expert_offsets.raw()) + E, Device::cuda,
               sizeof n_rows);
  perm.n_rows = n_rows;
  perm.token_index = prefix_view(token_index, {perm.n_rows});
  return perm;
}

}  // namespace

Permutation permute(const Tensor& mask) {
  constexpr const char* op = "permute";
  check_ndim(op, {"mask", mask}, 2);
  check_dtype(op, {"mask", mask}, DType::i32);
  const int64_t T = mask.dim(0), E = mask.dim(1);
  if (on_gpu(mask)) return permute_cuda(mask);

  // The values are read here anyway, so the count of active pairs sizes token_index up front.
  const int32_t* m = mask.data<int32_t>();
  int64_t n_active = 0;
  for (int64_t i = 0; i < T * E; ++i) {
    REMOE_CHECK(m[i] == 0 || m[i] == 1, op, ": mask ", shape_str(mask.shape()),
                " must hold 0 or 1, got ", m[i], " at (", i / E, ", ", i % E, ")");
    n_active += m[i];
  }

  Permutation perm;
  perm.expert_offsets = Tensor::empty({E + 1}, DType::i32);
  perm.token_index = Tensor::empty({n_active}, DType::i32);
  perm.row_of = Tensor::empty({T, E}, DType::i32);
  cpu::permute_indices(perm.expert_offsets.data<int32_t>(), perm.token_index.data<int32_t>(),
                       perm.row_of.data<int32_t>(), m, T, E);
  perm.n_rows = perm.expert_offsets.data<int32_t>()[E];
  return perm;
}

Tensor gather_rows(const Tensor& x, const Permutation& perm) {
  constexpr const char* op = "gather_rows";
  check_ndim(op, {"x", x}, 2);
  check_permutation(op, perm);
  REMOE_CHECK(x.device() == perm.row_of.device(), op, ": x on ", device_name(x.device()),
              ", the permutation on ", device_name(perm.row_of.device()));
  const int64_t n_tokens = perm.row_of.dim(0), n_experts = perm.row_of.dim(1);
  const int64_t n_rows = perm.n_rows;
  check_dim(op, {"x", x}, 0, n_tokens, "tokens of perm.row_of");
  const int64_t d = x.dim(1);

  Tensor out = Tensor::empty({n_rows, d}, x.dtype(), x.device());
  if (on_gpu(x))
    dispatch_cuda(op, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cuda::gather_rows_forward(out.cuda_data<T>(), x.cuda_data<T>(),
                                perm.token_index.cuda_data<int32_t>(), n_rows, d, stream());
    });
  else
    dispatch_float(op, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::gather_rows_forward(out.data<T>(), x.data<T>(), perm.token_index.data<int32_t>(),
                               n_rows, d);
    });
  const Tensor row_of = perm.row_of;
  record(op, {x}, {out}, [=] {
    Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (on_gpu(x))
      dispatch_cuda(op, x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cuda::gather_rows_backward(dx.cuda_data<T>(), out.grad().cuda_data<T>(),
                                   row_of.cuda_data<int32_t>(), n_tokens, n_experts, d, stream());
      });
    else
      dispatch_float(op, x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::gather_rows_backward(dx.data<T>(), out.grad().data<T>(), row_of.data<int32_t>(),
                                  n_tokens, n_experts, d);
      });
    accumulate_grad(x, dx);
  });
  return out;
}

}  // namespace remoe::ops
