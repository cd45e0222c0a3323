#include "dist/ops.h"

#include <numeric>

#include "autodiff/tape.h"

namespace remoe::dist {

Tensor all_to_all_rows(Communicator& comm, const Tensor& x, const std::vector<int64_t>& send_counts,
                       const std::vector<int64_t>& recv_counts) {
  REMOE_CHECK(x.defined() && x.ndim() >= 1, "all_to_all_rows: x must have at least one dimension "
              "(rows), got ", x.defined() ? shape_str(x.shape()) : "an undefined tensor");
  REMOE_CHECK(int64_t(recv_counts.size()) == comm.world_size(), "all_to_all_rows: rank ",
              comm.rank(), " passed ", recv_counts.size(), " receive counts for ",
              comm.world_size(), " ranks");
  Shape out_shape = x.shape();
  out_shape[0] = std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0});
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  comm.all_to_all(out, recv_counts, x, send_counts);  // checks the counts against the shapes

  Communicator* c = &comm;
  record("all_to_all_rows", {x}, {out}, [=] {
    // The node runs only when out has a gradient (tape.h); it is defined here.
    const Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    c->all_to_all(dx, send_counts, out.grad(), recv_counts);
    accumulate_grad(x, dx);
  });
  return out;
}

}  // namespace remoe::dist
