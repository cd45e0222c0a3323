#include "autodiff/op_util.h"

#include "autodiff/device.h"

namespace remoe::ops::detail {

std::string describe(const Arg& a) {
  return str_cat(a.name, " ", shape_str(a.t.shape()), " ", dtype_name(a.t.dtype()));
}

void check_defined(const char* op, const Arg& a) {
  REMOE_CHECK(a.t.defined(), op, ": argument ", a.name, " is an undefined tensor");
}

void check_ndim(const char* op, const Arg& a, int64_t ndim) {
  check_defined(op, a);
  REMOE_CHECK(a.t.ndim() == ndim, op, ": ", a.name, " must be ", ndim, "-D, got ",
              shape_str(a.t.shape()));
}

void check_dtype(const char* op, const Arg& a, DType dtype) {
  check_defined(op, a);
  REMOE_CHECK(a.t.dtype() == dtype, op, ": ", a.name, " must be ", dtype_name(dtype), ", got ",
              describe(a));
}

void check_same(const char* op, std::initializer_list<Arg> args) {
  const Arg& first = *args.begin();
  for (const Arg& a : args) {
    check_defined(op, a);
    REMOE_CHECK(a.t.dtype() == first.t.dtype(), op, ": dtypes differ: ", describe(first), " vs ",
                describe(a));
    REMOE_CHECK(a.t.device() == first.t.device(), op, ": devices differ: ", first.name, " on ",
                device_name(first.t.device()), ", ", a.name, " on ", device_name(a.t.device()));
  }
}

void check_dim(const char* op, const Arg& a, int64_t i, int64_t expected, const char* what) {
  REMOE_CHECK(a.t.dim(i) == expected, op, ": ", a.name, " ", shape_str(a.t.shape()), " has ",
              a.t.dim(i), " at dim ", i, ", expected ", expected, " (", what, ")");
}

cudaStream_t stream() { return static_cast<cudaStream_t>(device::cuda_stream()); }

void fail_no_cuda(const char* op) {
  REMOE_FAIL(op, ": remoe was built without the CUDA backend, so no tensor can be on the GPU");
}

void check_ids(const char* op, const char* what, const Tensor& ids, int64_t n, bool allow_ignore) {
  const std::vector<int32_t> host = ids.to_vector<int32_t>();
  for (size_t t = 0; t < host.size(); ++t)
    REMOE_CHECK((host[t] >= 0 && host[t] < n) || (allow_ignore && host[t] == -1), op, ": ", what,
                " ", host[t], " at position ", t, " is outside [0, ", n, ")",
                allow_ignore ? " and is not -1 (ignore)" : "");
}

}  // namespace remoe::ops::detail
