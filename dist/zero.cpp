#include "dist/zero.h"

#include <algorithm>

#include "autodiff/device.h"
#include "autodiff/op_util.h"

namespace remoe::dist {

ShardedAdamW::ShardedAdamW(Communicator& comm, std::vector<Tensor> params, std::vector<bool> decay)
    : comm_(comm), params_(std::move(params)), decay_(std::move(decay)) {
  REMOE_CHECK(decay_.size() == params_.size(), "ShardedAdamW: ", decay_.size(),
              " weight-decay flags for ", params_.size(), " parameters");
  for (const Tensor& p : params_) {
    REMOE_CHECK(p.dtype() == DType::f32 && p.device() == Device::cpu, "ShardedAdamW: parameter '",
                p.name(), "' is ", dtype_name(p.dtype()), " on ", device_name(p.device()),
                ", expected f32 on the CPU (build on the CPU, then move_to the run's device)");
    offset_.push_back(total_);
    total_ += p.numel();
  }
  const int64_t world = comm_.world_size(), rank = comm_.rank();
  shard_ = (total_ + world - 1) / world;
  begin_ = std::min(total_, rank * shard_);
  end_ = std::min(total_, begin_ + shard_);
  m_ = Tensor::zeros({shard_}, DType::f32);
  v_ = Tensor::zeros({shard_}, DType::f32);
  mine_ = Tensor::zeros({shard_}, DType::f32);  // zero past N stays zero
  all_ = Tensor::empty({shard_ * world}, DType::f32);
}

void ShardedAdamW::move_to(Device device) {
  if (device == device_) return;
  // Single (a world of one) copies between any devices; the others gather where they work.
  REMOE_CHECK(device == comm_.device() || dynamic_cast<const Single*>(&comm_) != nullptr,
              "ShardedAdamW: the parameters go to the ",
              device_name(device), ", but the communicator gathers ", device_name(comm_.device()),
              " tensors (ZeRO-1 on GPUs needs the NCCL communicator)");
  for (Tensor* t : {&m_, &v_, &mine_, &all_}) t->move_to(device);
  device_ = device;
}

namespace {
// `count` floats from src + src_at to dst + dst_at (any devices).
void copy_floats(const Tensor& dst, int64_t dst_at, const Tensor& src, int64_t src_at,
                 int64_t count) {
  device::copy(static_cast<float*>(dst.raw()) + dst_at, dst.device(),
               static_cast<const float*>(src.raw()) + src_at, src.device(),
               size_t(count) * sizeof(float));
}
}  // namespace

template <typename Fn>
void ShardedAdamW::for_owned(Fn&& fn) const {
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t lo = std::max(begin_, offset_[i]);
    const int64_t hi = std::min(end_, offset_[i] + params_[i].numel());
    if (lo < hi) fn(i, lo, hi);
  }
}

void ShardedAdamW::step(const cpu::AdamWHyper& hyper, int64_t step) {
  for_owned([&](size_t i, int64_t lo, int64_t hi) {
    const Tensor& p = params_[i];
    const Tensor g = p.grad();
    REMOE_CHECK(g.defined(), "ShardedAdamW: parameter '", p.name(), "' has no gradient");
    cpu::AdamWHyper h = hyper;
    if (!decay_[i]) h.weight_decay = 0;
    const int64_t at = lo - offset_[i], mine = lo - begin_;
    float* const param = static_cast<float*>(p.raw()) + at;
    float* const m = static_cast<float*>(m_.raw()) + mine;
    float* const v = static_cast<float*>(v_.raw()) + mine;
    const float* const grad = static_cast<const float*>(g.raw()) + at;
    REMOE_CHECK(p.device() == device_ && g.device() == device_, "ShardedAdamW: parameter '",
                p.name(), "' or its gradient is not on the ", device_name(device_));
    if (device_ == Device::cuda)
      ops::detail::run_cuda("ShardedAdamW", [&](auto) {
        cuda::adamw_step(param, m, v, grad, hi - lo, h, step, ops::detail::stream());
      });
    else
      cpu::adamw_step(param, m, v, grad, hi - lo, h, step);
  });
  // Every rank's slice to every rank: (W·S) values, the flat vector padded.
  for_owned([&](size_t i, int64_t lo, int64_t hi) {
    copy_floats(mine_, lo - begin_, params_[i], lo - offset_[i], hi - lo);
  });
  comm_.all_gather(all_, mine_);
  for (size_t i = 0; i < params_.size(); ++i)
    copy_floats(params_[i], 0, all_, offset_[i], params_[i].numel());
}

std::vector<Tensor> ShardedAdamW::unflatten(const Tensor& flat, const char* suffix) const {
  std::vector<Tensor> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor t = Tensor::empty(params_[i].shape(), DType::f32);
    copy_floats(t, 0, flat, offset_[i], t.numel());
    out.push_back(t.set_name(params_[i].name() + suffix));
  }
  return out;
}

std::vector<Tensor> ShardedAdamW::gather_state() const {
  const int64_t world = comm_.world_size();
  const Tensor m = Tensor::empty({shard_ * world}, DType::f32, device_);
  const Tensor v = Tensor::empty({shard_ * world}, DType::f32, device_);
  comm_.all_gather(m, m_);
  comm_.all_gather(v, v_);
  std::vector<Tensor> out = unflatten(m, ".m");
  for (Tensor& t : unflatten(v, ".v")) out.push_back(t);
  return out;
}

std::vector<Tensor> ShardedAdamW::empty_state() const {
  std::vector<Tensor> out;
  for (const char* suffix : {".m", ".v"})
    for (const Tensor& p : params_)
      out.push_back(Tensor::zeros(p.shape(), DType::f32).set_name(p.name() + suffix));
  return out;
}

void ShardedAdamW::load_state(const std::vector<Tensor>& state) {
  REMOE_CHECK(state.size() == 2 * params_.size(), "ShardedAdamW::load_state: ", state.size(),
              " tensors, expected m and v of ", params_.size(), " parameters");
  for_owned([&](size_t i, int64_t lo, int64_t hi) {
    const int64_t at = lo - offset_[i];
    copy_floats(m_, lo - begin_, state[i], at, hi - lo);
    copy_floats(v_, lo - begin_, state[params_.size() + i], at, hi - lo);
  });
}

}  // namespace remoe::dist
