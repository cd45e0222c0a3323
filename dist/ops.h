// Differentiable collectives: communication recorded on the tape like any op, so that a model
// can move activations between ranks and still call backward() on each rank.
//
// all_to_all_rows: x (Σ_p send_counts[p], ...) → (Σ_p recv_counts[p], ...), the exchange of
// Communicator::all_to_all (rows [Σ_{q<p} send_counts[q], + send_counts[p]) of x go to rank p;
// the rows from p land at Σ_{q<p} recv_counts[q]). Its backward is the reverse exchange of the
// output's gradient: send and receive counts swap, so each row's gradient returns to the rank
// and the place it came from. Nothing is added up: the exchange only moves rows, so forward and
// backward are exact in every dtype.
//
// NOTE: a collective in backward is a contract between ranks. Every rank must run the same
// collective nodes in the same order, or its peers wait for it (until the communicator's
// timeout fails the job). The tape runs a node only when its output got a gradient, so the
// graph around an all_to_all_rows must have the same structure on every rank: the same ops
// consume its output and reach the loss, whatever the data (zero rows included: an empty
// tensor still gets an empty gradient). The MoE layer satisfies this (model/moe.cpp); a caller
// that might leave the output unused on one rank must not use this op. The communicator must
// outlive the backward pass.
#pragma once

#include <cstdint>
#include <vector>

#include "autodiff/tensor.h"
#include "dist/communicator.h"

namespace remoe::dist {

// recv_counts is what comm.exchange_counts(send_counts) returns (or a caller's equivalent).
Tensor all_to_all_rows(Communicator& comm, const Tensor& x, const std::vector<int64_t>& send_counts,
                       const std::vector<int64_t>& recv_counts);

}  // namespace remoe::dist
