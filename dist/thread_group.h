// W ranks as W threads of one process: a Communicator per thread over one shared ThreadGroup,
// on CPU tensors. Tests use it to check parallel logic (data and expert parallelism) on
// machines without GPUs; results are bit-identical to what the rank-order contract of
// communicator.h prescribes, so they can be compared with a 1-process computation exactly.
//
// Each collective is a rendezvous in two phases: every rank posts its arguments and waits
// until all have (barrier 1); each rank checks that the posted arguments agree, reads its
// peers' inputs and computes its own result; all wait until every rank is done reading
// (barrier 2) before an in-place result overwrites an input a peer may still be reading.
//
// A rank must never leave its peers blocked forever: a wait ends with an Error when the group
// is aborted (abort(): run_threads calls it when a rank throws), when a peer has left the
// group (its function returned while others still wait for it), or after `timeout`.
// After any failed collective the group stays aborted. A group made by split() is linked to
// its parent: an abort of the parent aborts it, and a rank that leaves the parent leaves it.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "dist/communicator.h"

namespace remoe::dist {

inline constexpr std::chrono::milliseconds kThreadGroupTimeout{std::chrono::minutes(5)};

namespace detail {
struct GroupState;
}

class ThreadGroup {
 public:
  explicit ThreadGroup(int world_size, std::chrono::milliseconds timeout = kThreadGroupTimeout);

  int world_size() const;
  // Rank `rank`'s communicator; hand each to its own thread. It shares the group's state, so it
  // stays usable if the ThreadGroup object goes away first.
  std::unique_ptr<Communicator> communicator(int rank) const;

  // Every waiting and every later collective fails with an Error that includes `reason`.
  // Thread-safe; the first reason is kept.
  void abort(const std::string& reason) const;
  bool aborted() const;
  // `rank` will call no more collectives: peers that wait for it fail instead of hanging.
  void leave(int rank) const;

 private:
  std::shared_ptr<detail::GroupState> state_;
};

// Runs fn(comm) for ranks 0 .. W-1, each on its own thread with its own communicator of one new
// group, and returns when all have finished. When a rank throws, the group is aborted (so
// peers blocked in a collective fail promptly), every thread is joined, and the first exception
// thrown is rethrown (a peer's "aborted" error comes later and is dropped).
void run_threads(int world_size, const std::function<void(Communicator&)>& fn,
                 std::chrono::milliseconds timeout = kThreadGroupTimeout);

}  // namespace remoe::dist
