#include "dist/expert_parallel.h"

#include <limits>

namespace remoe::dist {

int64_t ExpertParallel::local_experts(int64_t n_experts) const {
  const int w = world();
  REMOE_CHECK(n_experts > 0 && n_experts % w == 0, "expert parallelism: ", n_experts,
              " experts (n_experts · granularity) cannot be split evenly over ", w,
              " expert-parallel ranks; use a number of ranks that divides ", n_experts,
              " or change n_experts");
  return n_experts / w;
}

ExpertDispatch plan_expert_dispatch(const ExpertParallel& ep, const Tensor& expert_offsets) {
  REMOE_CHECK(ep.comm != nullptr, "plan_expert_dispatch: no communicator");
  Communicator& comm = *ep.comm;
  REMOE_CHECK(expert_offsets.defined() && expert_offsets.ndim() == 1 &&
                  expert_offsets.dtype() == DType::i32,
              "plan_expert_dispatch: expert_offsets must be (E + 1) i32, got ",
              expert_offsets.defined() ? shape_str(expert_offsets.shape()) : "undefined");
  const int W = ep.world();
  const int64_t E = expert_offsets.dim(0) - 1, L = ep.local_experts(E);
  const std::vector<int32_t> off = expert_offsets.to_vector<int32_t>();

  ExpertDispatch plan;
  // Per-expert counts of my rows, rank p's block of L first: what p learns from me.
  std::vector<int32_t> send_expert(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) send_expert[size_t(e)] = off[size_t(e + 1)] - off[size_t(e)];
  for (int p = 0; p < W; ++p) plan.send_counts.push_back(off[size_t((p + 1) * L)] - off[size_t(p * L)]);

  // The count exchange: L counts to every peer (zeros included: every rank calls it).
  Tensor send = Tensor::from_vector<int32_t>({E}, send_expert);
  if (comm.device() != Device::cpu) send = send.to(comm.device());
  const Tensor recv = Tensor::empty({E}, DType::i32, comm.device());
  const std::vector<int64_t> per_peer(size_t(W), L);
  comm.all_to_all(recv, per_peer, send, per_peer);
  const std::vector<int32_t> from = recv.to_vector<int32_t>();  // from[p·L + j]: p's rows for my j

  int64_t R = 0;
  std::vector<int64_t> src_start(size_t(W * L));  // where p's rows for j start in receive order
  for (int p = 0; p < W; ++p) {
    int64_t n = 0;
    for (int64_t j = 0; j < L; ++j) {
      src_start[size_t(p * L + j)] = R + n;
      n += from[size_t(p * L + j)];
    }
    plan.recv_counts.push_back(n);
    R += n;
  }
  REMOE_CHECK(R <= std::numeric_limits<int32_t>::max(), "expert parallelism: rank ", ep.rank(),
              " receives ", R, " routed rows, more than the i32 row indices hold");

  // grouped: expert-major over my L experts, rank order inside each.
  plan.grouped.expert_offsets = Tensor::empty({L + 1}, DType::i32);
  plan.grouped.token_index = Tensor::empty({R}, DType::i32);
  plan.grouped.row_of = Tensor::full({R, L}, -1, DType::i32);
  plan.grouped.n_rows = R;
  int32_t* g_off = plan.grouped.expert_offsets.data<int32_t>();
  int32_t* g_tok = plan.grouped.token_index.data<int32_t>();
  int32_t* g_row = plan.grouped.row_of.data<int32_t>();
  int32_t n = 0;
  for (int64_t j = 0; j < L; ++j) {
    g_off[j] = n;
    for (int p = 0; p < W; ++p)
      for (int32_t i = 0; i < from[size_t(p * L + j)]; ++i, ++n) {
        const int64_t r = src_start[size_t(p * L + j)] + i;
        g_tok[n] = int32_t(r);
        g_row[r * L + j] = n;
      }
  }
  g_off[L] = n;

  // received: the inverse, one "expert" whose token_index maps receive order to grouped rows.
  plan.received.expert_offsets = Tensor::from_vector<int32_t>({2}, {0, int32_t(R)});
  plan.received.token_index = Tensor::empty({R}, DType::i32);
  plan.received.row_of = Tensor::empty({R, 1}, DType::i32);
  plan.received.n_rows = R;
  int32_t* r_tok = plan.received.token_index.data<int32_t>();
  int32_t* r_row = plan.received.row_of.data<int32_t>();
  for (int64_t g = 0; g < R; ++g) {
    r_tok[g_tok[g]] = int32_t(g);
    r_row[g] = g_tok[g];
  }
  plan.regroup = L > 1;
  // Planned on the host; the permutations go where the rows are (the GPU with NCCL).
  if (const Device dev = expert_offsets.device(); dev != Device::cpu)
    for (ops::Permutation* p : {&plan.grouped, &plan.received})
      for (Tensor* t : {&p->expert_offsets, &p->token_index, &p->row_of}) *t = t->to(dev);
  return plan;
}

}  // namespace remoe::dist
