#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/moe_loss.h"

namespace remoe::ops {
using namespace detail;

namespace {

void check_scores(const char* op, const Tensor& scores) {
  check_ndim(op, {"scores", scores}, 2);
  REMOE_CHECK(scores.dtype() == DType::f32 || scores.dtype() == DType::f64, op,
              ": scores must be f32 or f64, got ", describe({"scores", scores}));
}

}  // namespace

Tensor load_balance_loss(const Tensor& scores, const Tensor& expert_counts, double coeff, int k) {
  constexpr const char* op = "load_balance_loss";
  check_scores(op, scores);
  check_ndim(op, {"expert_counts", expert_counts}, 1);
  check_dtype(op, {"expert_counts", expert_counts}, DType::i32);
  REMOE_CHECK(expert_counts.device() == scores.device(), op, ": scores on ",
              device_name(scores.device()), ", expert_counts on ",
              device_name(expert_counts.device()));
  const int64_t n_tokens = scores.dim(0), n_experts = scores.dim(1);
  REMOE_CHECK(expert_counts.dim(0) == n_experts, op, ": expert_counts ",
              shape_str(expert_counts.shape()), " must have one count per expert, E = ",
              n_experts, " from scores ", shape_str(scores.shape()));
  REMOE_CHECK(k >= 1, op, ": k = ", k, " must be at least 1");

  Tensor loss = Tensor::empty({}, scores.dtype(), scores.device());
  if (on_gpu(scores))
    dispatch_cuda_f32(op, scores.dtype(), [&](auto) {
      cuda::load_balance_loss_forward(loss.cuda_data<float>(), scores.cuda_data<float>(),
                                      expert_counts.cuda_data<int32_t>(), n_tokens, n_experts,
                                      coeff, k, stream());
    });
  else
    dispatch_float(op, scores.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::load_balance_loss_forward(loss.data<T>(), scores.data<T>(),
                                     expert_counts.data<int32_t>(), n_tokens, n_experts, coeff, k);
    });
  record(op, {scores}, {loss}, [=] {
    Tensor dscores = Tensor::empty(scores.shape(), scores.dtype(), scores.device());
    if (on_gpu(scores))
      dispatch_cuda_f32(op, scores.dtype(), [&](auto) {
        cuda::load_balance_loss_backward(dscores.cuda_data<float>(), loss.grad().cuda_data<float>(),
                                         expert_counts.cuda_data<int32_t>(), n_tokens, n_experts,
                                         coeff, k, stream());
      });
    else
      dispatch_float(op, scores.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::load_balance_loss_backward(dscores.data<T>(), loss.grad().data<T>(),
                                        expert_counts.data<int32_t>(), n_tokens, n_experts, coeff,
                                        k);
      });
    accumulate_grad(scores, dscores);
  });
  return loss;
}

Tensor l1_loss(const Tensor& scores, double coeff) {
  constexpr const char* op = "l1_loss";
  check_scores(op, scores);
  const int64_t n_tokens = scores.dim(0), n_experts = scores.dim(1);

  Tensor loss = Tensor::empty({}, scores.dtype(), scores.device());
  if (on_gpu(scores))
    dispatch_cuda_f32(op, scores.dtype(), [&](auto) {
      cuda::l1_loss_forward(loss.cuda_data<float>(), scores.cuda_data<float>(), n_tokens,
                            n_experts, coeff, stream());
    });
  else
    dispatch_float(op, scores.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::l1_loss_forward(loss.data<T>(), scores.data<T>(), n_tokens, n_experts, coeff);
    });
  record(op, {scores}, {loss}, [=] {
    Tensor dscores = Tensor::empty(scores.shape(), scores.dtype(), scores.device());
    if (on_gpu(scores))
      dispatch_cuda_f32(op, scores.dtype(), [&](auto) {
        cuda::l1_loss_backward(dscores.cuda_data<float>(), loss.grad().cuda_data<float>(),
                               n_tokens, n_experts, coeff, stream());
      });
    else
      dispatch_float(op, scores.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::l1_loss_backward(dscores.data<T>(), loss.grad().data<T>(), n_tokens, n_experts,
                              coeff);
      });
    accumulate_grad(scores, dscores);
  });
  return loss;
}

}  // namespace remoe::ops
