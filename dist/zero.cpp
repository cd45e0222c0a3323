#include "dist/zero.h"

#include <algorithm>
#include <cstring>

namespace remoe::dist {

ShardedAdamW::ShardedAdamW(Communicator& comm, std::vector<Tensor> params, std::vector<bool> decay)
    : comm_(comm), params_(std::move(params)), decay_(std::move(decay)) {
  REMOE_CHECK(decay_.size() == params_.size(), "ShardedAdamW: ", decay_.size(),
              " weight-decay flags for ", params_.size(), " parameters");
  for (const Tensor& p : params_) {
    REMOE_CHECK(p.dtype() == DType::f32 && p.device() == Device::cpu, "ShardedAdamW: parameter '",
                p.name(), "' is ", dtype_name(p.dtype()), " on ", device_name(p.device()),
                ", expected f32 on the CPU");
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
    const int64_t at = lo - offset_[i];
    cpu::adamw_step(p.data<float>() + at, m_.data<float>() + (lo - begin_),
                    v_.data<float>() + (lo - begin_), g.data<float>() + at, hi - lo, h, step);
  });
  // Every rank's slice to every rank: (W·S) values, the flat vector padded.
  for_owned([&](size_t i, int64_t lo, int64_t hi) {
    std::memcpy(mine_.data<float>() + (lo - begin_), params_[i].data<float>() + (lo - offset_[i]),
                size_t(hi - lo) * sizeof(float));
  });
  comm_.all_gather(all_, mine_);
  for (size_t i = 0; i < params_.size(); ++i)
    std::memcpy(params_[i].data<float>(), all_.data<float>() + offset_[i],
                size_t(params_[i].numel()) * sizeof(float));
}

std::vector<Tensor> ShardedAdamW::unflatten(const Tensor& flat, const char* suffix) const {
  std::vector<Tensor> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor t = Tensor::empty(params_[i].shape(), DType::f32);
    std::memcpy(t.data<float>(), flat.data<float>() + offset_[i], t.nbytes());
    out.push_back(t.set_name(params_[i].name() + suffix));
  }
  return out;
}

std::vector<Tensor> ShardedAdamW::gather_state() const {
  const int64_t world = comm_.world_size();
  const Tensor m = Tensor::empty({shard_ * world}, DType::f32);
  const Tensor v = Tensor::empty({shard_ * world}, DType::f32);
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
    const size_t bytes = size_t(hi - lo) * sizeof(float);
    const int64_t at = lo - offset_[i];
    std::memcpy(m_.data<float>() + (lo - begin_), state[i].data<float>() + at, bytes);
    std::memcpy(v_.data<float>() + (lo - begin_), state[params_.size() + i].data<float>() + at, bytes);
  });
}

}  // namespace remoe::dist
