#include "dist/communicator.h"

#include <cstring>
#include <limits>
#include <type_traits>

#include "autodiff/device.h"

namespace remoe::dist {

const char* reduce_op_name(ReduceOp op) { return op == ReduceOp::sum ? "sum" : "mean"; }

std::vector<int64_t> Communicator::exchange_counts(const std::vector<int64_t>& send_counts) {
  const int world = world_size();
  REMOE_CHECK(int64_t(send_counts.size()) == world, "exchange_counts: rank ", rank(), " passed ",
              send_counts.size(), " counts, expected one per rank (", world, ")");
  std::vector<int32_t> send32;
  for (int64_t c : send_counts) {
    REMOE_CHECK(c >= 0 && c <= std::numeric_limits<int32_t>::max(), "exchange_counts: rank ",
                rank(), ": count ", c, " is outside [0, 2^31)");
    send32.push_back(int32_t(c));
  }
  Tensor send = Tensor::from_vector<int32_t>({world}, send32);
  if (device() != Device::cpu) send = send.to(device());
  const Tensor recv = Tensor::empty({world}, DType::i32, device());
  const std::vector<int64_t> ones(size_t(world), 1);
  all_to_all(recv, ones, send, ones);
  const std::vector<int32_t> got = recv.to_vector<int32_t>();
  return {got.begin(), got.end()};
}

// --- Single ----------------------------------------------------------------------------

namespace {
void copy_tensor(const Tensor& dst, const Tensor& src) {
  device::copy(dst.raw(), dst.device(), src.raw(), src.device(), src.nbytes());
}
}  // namespace

void Single::all_reduce(const Tensor& t, ReduceOp op) { detail::check_all_reduce(t, op, 0); }

void Single::reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) {
  detail::check_reduce_scatter(out, in, op, 0, 1);
  copy_tensor(out, in);  // a sum or mean over one rank
}

void Single::all_gather(const Tensor& out, const Tensor& in) {
  detail::check_all_gather(out, in, 0, 1);
  copy_tensor(out, in);
}

void Single::all_to_all(const Tensor& out, const std::vector<int64_t>& recv_counts,
                        const Tensor& in, const std::vector<int64_t>& send_counts) {
  detail::check_all_to_all(out, recv_counts, in, send_counts, 0, 1);
  REMOE_CHECK(recv_counts[0] == send_counts[0], "all_to_all: rank 0 sends ", send_counts[0],
              " rows to itself but expects to receive ", recv_counts[0]);
  copy_tensor(out, in);
}

void Single::broadcast(const Tensor& t, int root) { detail::check_broadcast(t, root, 0, 1); }

std::unique_ptr<Communicator> Single::split(int color, int /*key*/) {
  detail::check_split(color, 0);
  return std::make_unique<Single>();
}

// --- argument checks -------------------------------------------------------------------

namespace detail {
namespace {

void check_defined(const char* op, const char* name, const Tensor& t, int rank) {
  REMOE_CHECK(t.defined(), op, ": rank ", rank, ": ", name, " is an undefined tensor");
}

void check_reducible(const char* op, const Tensor& t, ReduceOp reduce, int rank) {
  const DType dt = t.dtype();
  REMOE_CHECK(dt == DType::f32 || dt == DType::f64 || dt == DType::i32, op, ": rank ", rank,
              ": cannot reduce a ", dtype_name(dt), " tensor (f32, f64 or i32; cast bf16 to f32 "
              "first)");
  REMOE_CHECK(!(reduce == ReduceOp::mean && dt == DType::i32), op, ": rank ", rank,
              ": the mean of an i32 tensor is not an integer; reduce with sum");
}

void check_rows(const char* op, const char* name, const Tensor& t, int rank) {
  REMOE_CHECK(t.ndim() >= 1, op, ": rank ", rank, ": ", name,
              " is a scalar; it needs a first dimension to split into rows");
}

void check_not_aliased(const char* op, const Tensor& out, const Tensor& in, int rank) {
  REMOE_CHECK(!out.same_storage(in), op, ": rank ", rank,
              ": out and in share storage; this collective is not in place");
}

Shape trailing(const Tensor& t) { return Shape(t.shape().begin() + 1, t.shape().end()); }

void check_same_row_shape(const char* op, const Tensor& out, const Tensor& in, int rank) {
  REMOE_CHECK(out.dtype() == in.dtype(), op, ": rank ", rank, ": out is ", dtype_name(out.dtype()),
              ", in is ", dtype_name(in.dtype()));
  REMOE_CHECK(trailing(out) == trailing(in), op, ": rank ", rank, ": out ",
              shape_str(out.shape()), " and in ", shape_str(in.shape()),
              " differ beyond the first dimension");
}

int64_t check_counts(const char* op, const char* name, const std::vector<int64_t>& counts,
                     int rank, int world) {
  REMOE_CHECK(int64_t(counts.size()) == world, op, ": rank ", rank, ": ", name, " has ",
              counts.size(), " entries, expected one per rank (", world, ")");
  int64_t total = 0;
  for (size_t p = 0; p < counts.size(); ++p) {
    REMOE_CHECK(counts[p] >= 0, op, ": rank ", rank, ": ", name, "[", p, "] = ", counts[p],
                " is negative");
    total += counts[p];
  }
  return total;
}

// What every collective from `in` rows to separate `out` rows checks first: both defined, both
// with a first dimension, the same trailing shape, no shared storage.
void check_row_pair(const char* name, const Tensor& out, const Tensor& in, int rank) {
  check_defined(name, "out", out, rank);
  check_defined(name, "in", in, rank);
  check_rows(name, "out", out, rank);
  check_rows(name, "in", in, rank);
  check_same_row_shape(name, out, in, rank);
  check_not_aliased(name, out, in, rank);
}

}  // namespace

int64_t row_elements(const Tensor& t) { return shape_numel(trailing(t)); }

void check_device(const char* op, const Tensor& t, Device expected, const char* impl, int rank) {
  REMOE_CHECK(t.device() == expected, op, ": rank ", rank, ": a ", device_name(t.device()),
              " tensor ", shape_str(t.shape()), " given to ", impl, ", which works on ",
              device_name(expected), " tensors");
}

void check_all_reduce(const Tensor& t, ReduceOp op, int rank) {
  check_defined("all_reduce", "t", t, rank);
  check_reducible("all_reduce", t, op, rank);
}

void check_reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op, int rank, int world) {
  const char* name = "reduce_scatter";
  check_row_pair(name, out, in, rank);
  check_reducible(name, in, op, rank);
  REMOE_CHECK(in.dim(0) == world * out.dim(0), name, ": rank ", rank, ": in ",
              shape_str(in.shape()), " should have W·n = ", world, "·", out.dim(0), " = ",
              world * out.dim(0), " rows for out ", shape_str(out.shape()));
}

void check_all_gather(const Tensor& out, const Tensor& in, int rank, int world) {
  const char* name = "all_gather";
  check_row_pair(name, out, in, rank);
  REMOE_CHECK(out.dim(0) == world * in.dim(0), name, ": rank ", rank, ": out ",
              shape_str(out.shape()), " should have W·n = ", world, "·", in.dim(0), " = ",
              world * in.dim(0), " rows for in ", shape_str(in.shape()));
}

void check_all_to_all(const Tensor& out, const std::vector<int64_t>& recv_counts, const Tensor& in,
                      const std::vector<int64_t>& send_counts, int rank, int world) {
  const char* name = "all_to_all";
  check_row_pair(name, out, in, rank);
  const int64_t sent = check_counts(name, "send_counts", send_counts, rank, world);
  const int64_t received = check_counts(name, "recv_counts", recv_counts, rank, world);
  REMOE_CHECK(in.dim(0) == sent, name, ": rank ", rank, ": in ", shape_str(in.shape()), " has ",
              in.dim(0), " rows but send_counts add up to ", sent);
  REMOE_CHECK(out.dim(0) == received, name, ": rank ", rank, ": out ", shape_str(out.shape()),
              " has ", out.dim(0), " rows but recv_counts add up to ", received);
}

void check_broadcast(const Tensor& t, int root, int rank, int world) {
  check_defined("broadcast", "t", t, rank);
  REMOE_CHECK(root >= 0 && root < world, "broadcast: rank ", rank, ": root ", root,
              " is not a rank of this group of ", world);
}

void check_split(int color, int rank) {
  // NCCL reserves negative colours (NCCL_SPLIT_NOCOLOR); every rank here joins some group.
  REMOE_CHECK(color >= 0, "split: rank ", rank, ": color ", color, " is negative (every rank ",
              "joins the group of its color, which must be >= 0)");
}

namespace {
template <typename T>
void reduce_blocks(T* out, const std::vector<const void*>& blocks, int64_t n, ReduceOp op) {
  const int64_t world = int64_t(blocks.size());
  for (int64_t i = 0; i < n; ++i) {
    T acc = static_cast<const T*>(blocks[0])[i];
    for (int64_t p = 1; p < world; ++p) {
      const T x = static_cast<const T*>(blocks[size_t(p)])[i];
      if constexpr (std::is_same_v<T, int32_t>)
        acc = int32_t(uint32_t(acc) + uint32_t(x));  // wraps, as a GPU's integer add does
      else
        acc = acc + x;
    }
    if constexpr (!std::is_same_v<T, int32_t>)
      if (op == ReduceOp::mean) acc = acc / T(world);
    out[i] = acc;
  }
}
}  // namespace

void reduce_blocks_cpu(void* out, const std::vector<const void*>& blocks, int64_t n, DType dtype,
                       ReduceOp op) {
  REMOE_CHECK(!blocks.empty(), "reduce_blocks_cpu: no blocks");
  switch (dtype) {
    case DType::f32: reduce_blocks(static_cast<float*>(out), blocks, n, op); break;
    case DType::f64: reduce_blocks(static_cast<double*>(out), blocks, n, op); break;
    case DType::i32: reduce_blocks(static_cast<int32_t*>(out), blocks, n, op); break;
    case DType::bf16: REMOE_FAIL("reduce_blocks_cpu: bf16 is not reducible");
  }
}

}  // namespace detail
}  // namespace remoe::dist
