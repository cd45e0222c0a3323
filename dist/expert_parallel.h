// Expert parallelism's plumbing: which experts a rank holds, and the plan that moves one MoE
// layer's routed rows to the ranks of their experts and back. model/moe.cpp composes it with
// the op layer; the forward of one layer on rank r of W, with E experts, L = E / W per rank:
//
//   local tokens (T, d) ─ router, permute over all E ─▶ xs (N, d), expert-major
//     ─ plan_expert_dispatch: all_to_all of the W·L per-expert counts ─▶ send / recv counts
//     ─ all_to_all_rows ─▶ (R, d): [from rank 0: its rows for my experts, expert by expert]
//                                  [from rank 1: ...] ...
//     ─ gather_rows(·, grouped) ─▶ (R, d) grouped by local expert (rank order inside one)
//     ─ grouped W1, W3, SwiGLU, W2 over the L local experts ─▶ (R, d)
//     ─ gather_rows(·, received) ─▶ back in receive order
//     ─ all_to_all_rows, counts swapped ─▶ (N, d) in xs's order ─ combine with the local gates.
//
// Rank r holds the contiguous block of experts [r·L, (r+1)·L), so the rows xs sends to rank p
// are already contiguous in xs (experts p·L .. p·L + L − 1) and a checkpoint's full expert
// tensor is the all_gather of the ranks' blocks in rank order. W must divide E.
#pragma once

#include <cstdint>
#include <vector>

#include "autodiff/ops.h"
#include "dist/communicator.h"

namespace remoe::dist {

// The expert-parallel group of a model: experts are sharded over comm's ranks. A null comm (or
// a world of one) means no expert parallelism. The communicator must outlive the model and
// every backward pass through it.
struct ExpertParallel {
  Communicator* comm = nullptr;

  int rank() const { return comm ? comm->rank() : 0; }
  int world() const { return comm ? comm->world_size() : 1; }
  bool enabled() const { return world() > 1; }
  // L = E / W: an Error that names E and W when W does not divide E.
  int64_t local_experts(int64_t n_experts) const;
  // The first expert this rank holds: rank · L.
  int64_t first_expert(int64_t n_experts) const { return rank() * local_experts(n_experts); }
};

// Where one layer's routed rows go and how the receiving rank orders them; made on the host
// from the counts, the same on every device.
struct ExpertDispatch {
  std::vector<int64_t> send_counts;  // (W) rows this rank sends to each rank (xs's blocks)
  std::vector<int64_t> recv_counts;  // (W) rows it receives from each rank; R = Σ
  // The L local experts over the R received rows: expert_offsets (L + 1), token_index (R) the
  // received row of each grouped row, row_of (R, L). Inside an expert the rows keep the order
  // in which they arrived: by source rank, then by the source's token order (deterministic).
  ops::Permutation grouped;
  // Its inverse as a permutation of one "expert" over the R grouped rows: gather_rows(o,
  // received) puts grouped rows o (R, d) back in receive order (token_index (R), row_of (R, 1)).
  ops::Permutation received;
  // False when L = 1: the receive order is already grouped and both gathers are skipped.
  bool regroup = true;
};

// expert_offsets: (E + 1) i32 on any device, this rank's routed rows per expert as offsets
// (ops::Permutation::expert_offsets of the local routing); the plan's permutations are made on
// the host and returned on the same device. One collective on every rank, even
// with nothing to send: an all_to_all of L counts per peer (what p sends me for each of my
// experts), from which the row counts and the local grouping follow.
ExpertDispatch plan_expert_dispatch(const ExpertParallel& ep, const Tensor& expert_offsets);

}  // namespace remoe::dist
