#include "dist/thread_group.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace remoe::dist {
namespace detail {

// One rank's arguments to the collective in progress.
struct Call {
  Call() = default;
  Call(const char* name, Tensor o, Tensor i) : op(name), out(std::move(o)), in(std::move(i)) {}

  const char* op = "";
  Tensor out, in;  // in-place collectives post their tensor as both
  std::vector<int64_t> send_counts, recv_counts;
  int root = 0;
  ReduceOp reduce = ReduceOp::sum;
  int color = 0, key = 0;  // split
};

struct GroupState {
  GroupState(int world_size, std::chrono::milliseconds wait_limit)
      : world(world_size), timeout(wait_limit), here(size_t(world_size), 0),
        left(size_t(world_size), 0), calls(size_t(world_size)) {}

  const int world;
  const std::chrono::milliseconds timeout;
  std::mutex mu;
  std::condition_variable cv;
  uint64_t generation = 0;  // barriers completed
  int arrived = 0;          // at the current barrier
  std::vector<char> here;   // who has arrived at the current barrier
  std::vector<char> left;   // who will call no more collectives
  bool aborted = false;
  std::string reason;
  std::vector<Call> calls;  // written by each rank before barrier 1, read by all until barrier 2

  // The groups split from this one. A rank that leaves this group leaves them, and an abort
  // here aborts them: a rank blocked in a subgroup must not outwait a peer that threw in
  // another. (Locks go parent, then child; a child never locks its parent.)
  struct Child {
    std::shared_ptr<GroupState> state;
    std::vector<int> members;  // their ranks here, in the child's rank order
    uint64_t made_at;          // the generation of the split that made it
    int color;
  };
  std::vector<Child> children;

  void abort_locked(const std::string& why) {
    if (!aborted) {
      aborted = true;
      reason = why;
    }
    cv.notify_all();
    for (const Child& c : children) {
      std::lock_guard lock(c.state->mu);
      c.state->abort_locked(why);
    }
  }

  void leave_locked(int rank) {
    left[size_t(rank)] = 1;
    cv.notify_all();
    for (const Child& c : children) {
      const auto at = std::find(c.members.begin(), c.members.end(), rank);
      if (at == c.members.end()) continue;
      std::lock_guard lock(c.state->mu);
      c.state->leave_locked(int(at - c.members.begin()));
    }
  }

  // The group of `members` made by the split in progress (every member asks; the first makes
  // it). Called between the split's two barriers, where `generation` names the split.
  std::shared_ptr<GroupState> child(int color, const std::vector<int>& members) {
    std::lock_guard lock(mu);
    for (const Child& c : children)
      if (c.made_at == generation && c.color == color) return c.state;
    auto state = std::make_shared<GroupState>(int(members.size()), timeout);
    if (aborted) state->abort_locked(reason);
    children.push_back({state, members, generation, color});
    return state;
  }

  [[noreturn]] void fail_aborted(int rank, const char* op) const {
    REMOE_FAIL("ThreadGroup: rank ", rank, ": ", op, " failed: the group was aborted (", reason,
               ")");
  }

  void post(int rank, Call call) {
    std::lock_guard lock(mu);
    if (aborted) fail_aborted(rank, call.op);
    calls[size_t(rank)] = std::move(call);
  }

  // Returns once every rank has arrived; an Error when the group is aborted, a peer left, or
  // `timeout` passed (the last two abort the group).
  void arrive_and_wait(int rank, const char* op) {
    std::unique_lock lock(mu);
    if (aborted) fail_aborted(rank, op);
    const uint64_t gen = generation;
    here[size_t(rank)] = 1;
    if (++arrived == world) {
      arrived = 0;
      std::fill(here.begin(), here.end(), 0);
      ++generation;
      cv.notify_all();
      return;
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (generation == gen) {
      if (aborted) fail_aborted(rank, op);
      for (int p = 0; p < world; ++p)
        if (left[size_t(p)]) {
          abort_locked(str_cat("rank ", p, " returned from its function while rank ", rank,
                               " waits for it in ", op));
          fail_aborted(rank, op);
        }
      if (cv.wait_until(lock, deadline) == std::cv_status::timeout && generation == gen) {
        std::string missing;
        for (int p = 0; p < world; ++p)
          if (!here[size_t(p)]) missing += (missing.empty() ? "" : ", ") + std::to_string(p);
        abort_locked(str_cat("rank ", rank, " waited more than ", timeout.count(), " ms in ", op,
                             " for rank(s) ", missing));
        fail_aborted(rank, op);
      }
    }
  }
};

}  // namespace detail

namespace {

using detail::Call;
using detail::GroupState;

// Cross-rank agreement of the posted calls. Every rank evaluates the same calls, so every rank
// reaches the same verdict and throws the same message.
void check_agreement(const std::vector<Call>& calls) {
  const Call& c0 = calls[0];
  const int world = int(calls.size());
  for (int p = 1; p < world; ++p)
    if (std::strcmp(calls[size_t(p)].op, c0.op) != 0) {
      std::string list;
      for (int q = 0; q < world; ++q)
        list += str_cat(q ? ", " : "", "rank ", q, ": ", calls[size_t(q)].op);
      REMOE_FAIL("ThreadGroup: ranks called different collectives (", list, ")");
    }
  const std::string op = c0.op;
  if (op == "barrier" || op == "split") return;  // nothing to agree on
  for (int p = 1; p < world; ++p) {
    const Call& c = calls[size_t(p)];
    REMOE_CHECK(c.in.dtype() == c0.in.dtype(), op, ": rank 0 passes ", dtype_name(c0.in.dtype()),
                ", rank ", p, " passes ", dtype_name(c.in.dtype()));
    REMOE_CHECK(c.reduce == c0.reduce, op, ": rank 0 reduces with ", reduce_op_name(c0.reduce),
                ", rank ", p, " with ", reduce_op_name(c.reduce));
    if (op == "all_to_all") {
      const Shape& s = c.in.shape();
      const Shape& s0 = c0.in.shape();
      REMOE_CHECK(std::equal(s.begin() + 1, s.end(), s0.begin() + 1, s0.end()), op,
                  ": rank 0 sends rows of ", shape_str(s0), ", rank ", p, " rows of ",
                  shape_str(s), " (the shapes beyond the first dimension must agree)");
    } else {
      REMOE_CHECK(c.in.shape() == c0.in.shape(), op, ": rank 0 passes ",
                  shape_str(c0.in.shape()), ", rank ", p, " passes ", shape_str(c.in.shape()));
    }
    REMOE_CHECK(c.root == c0.root, op, ": rank 0 names root ", c0.root, ", rank ", p,
                " names root ", c.root);
  }
  if (op == "all_to_all") {
    for (int r = 0; r < world; ++r)
      for (int p = 0; p < world; ++p) {
        const int64_t sent = calls[size_t(p)].send_counts[size_t(r)];
        const int64_t expected = calls[size_t(r)].recv_counts[size_t(p)];
        REMOE_CHECK(sent == expected, "all_to_all: rank ", p, " sends ", sent, " rows to rank ",
                    r, ", which expects ", expected, " (recv_counts[", p, "] on rank ", r, ")");
      }
  }
}

char* bytes(const Tensor& t) { return static_cast<char*>(t.raw()); }

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(std::shared_ptr<GroupState> state, int rank)
      : state_(std::move(state)), rank_(rank) {}

  int rank() const override { return rank_; }
  int world_size() const override { return state_->world; }
  Device device() const override { return Device::cpu; }

  void all_reduce(const Tensor& t, ReduceOp op) override {
    detail::check_all_reduce(t, op, rank_);
    on_cpu("all_reduce", t);
    std::vector<char> sum(t.nbytes());
    Call call("all_reduce", t, t);
    call.reduce = op;
    run(std::move(call), [&](const std::vector<Call>& calls) {
      std::vector<const void*> blocks;
      for (const Call& c : calls) blocks.push_back(c.in.raw());
      detail::reduce_blocks_cpu(sum.data(), blocks, t.numel(), t.dtype(), op);
    });
    // After barrier 2 no peer reads t any more.
    if (!sum.empty()) std::memcpy(t.raw(), sum.data(), sum.size());
  }

  void reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) override {
    detail::check_reduce_scatter(out, in, op, rank_, world_size());
    on_cpu("reduce_scatter", out);
    on_cpu("reduce_scatter", in);
    Call call("reduce_scatter", out, in);
    call.reduce = op;
    run(std::move(call), [&](const std::vector<Call>& calls) {
      std::vector<const void*> blocks;
      for (const Call& c : calls)
        blocks.push_back(bytes(c.in) + size_t(rank_) * out.nbytes());
      detail::reduce_blocks_cpu(out.raw(), blocks, out.numel(), out.dtype(), op);
    });
  }

  void all_gather(const Tensor& out, const Tensor& in) override {
    detail::check_all_gather(out, in, rank_, world_size());
    on_cpu("all_gather", out);
    on_cpu("all_gather", in);
    run(Call("all_gather", out, in), [&](const std::vector<Call>& calls) {
      for (size_t p = 0; p < calls.size(); ++p)
        if (in.nbytes()) std::memcpy(bytes(out) + p * in.nbytes(), calls[p].in.raw(), in.nbytes());
    });
  }

  void all_to_all(const Tensor& out, const std::vector<int64_t>& recv_counts, const Tensor& in,
                  const std::vector<int64_t>& send_counts) override {
    detail::check_all_to_all(out, recv_counts, in, send_counts, rank_, world_size());
    on_cpu("all_to_all", out);
    on_cpu("all_to_all", in);
    const size_t row_bytes = size_t(detail::row_elements(in)) * dtype_size(in.dtype());
    Call call("all_to_all", out, in);
    call.send_counts = send_counts;
    call.recv_counts = recv_counts;
    run(std::move(call), [&](const std::vector<Call>& calls) {
      size_t dst = 0;
      for (const Call& c : calls) {
        int64_t src_row = 0;  // where p's rows for this rank start in p's in
        for (int q = 0; q < rank_; ++q) src_row += c.send_counts[size_t(q)];
        const size_t n = size_t(c.send_counts[size_t(rank_)]) * row_bytes;
        if (n) std::memcpy(bytes(out) + dst, bytes(c.in) + size_t(src_row) * row_bytes, n);
        dst += n;
      }
    });
  }

  void broadcast(const Tensor& t, int root) override {
    detail::check_broadcast(t, root, rank_, world_size());
    on_cpu("broadcast", t);
    Call call("broadcast", t, t);
    call.root = root;
    run(std::move(call), [&](const std::vector<Call>& calls) {
      // Only non-roots write, and nobody reads a non-root's t: no copy-back needed.
      if (rank_ != root && t.nbytes())
        std::memcpy(t.raw(), calls[size_t(root)].in.raw(), t.nbytes());
    });
  }

  void barrier() override {
    run(Call("barrier", {}, {}), [](const std::vector<Call>&) {});
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    detail::check_split(color, rank_);
    Call call("split", {}, {});
    call.color = color;
    call.key = key;
    std::unique_ptr<Communicator> out;
    run(std::move(call), [&](const std::vector<Call>& calls) {
      std::vector<int> members;  // this color's ranks, ordered by key, then by rank
      for (int p = 0; p < world_size(); ++p)
        if (calls[size_t(p)].color == color) members.push_back(p);
      std::stable_sort(members.begin(), members.end(), [&](int a, int b) {
        return calls[size_t(a)].key < calls[size_t(b)].key;
      });
      const int rank = int(std::find(members.begin(), members.end(), rank_) - members.begin());
      out = std::make_unique<ThreadCommunicator>(state_->child(color, members), rank);
    });
    return out;
  }

 private:
  void on_cpu(const char* op, const Tensor& t) const {
    detail::check_device(op, t, Device::cpu, "ThreadGroup", rank_);
  }

  template <typename Work>
  void run(Call call, Work&& work) {
    const char* op = call.op;
    state_->post(rank_, std::move(call));
    state_->arrive_and_wait(rank_, op);
    try {
      check_agreement(state_->calls);
      work(state_->calls);
    } catch (const std::exception& e) {
      std::lock_guard lock(state_->mu);
      state_->abort_locked(e.what());
      throw;
    }
    state_->arrive_and_wait(rank_, op);
  }

  std::shared_ptr<GroupState> state_;
  int rank_;
};

std::string what_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

}  // namespace

ThreadGroup::ThreadGroup(int world_size, std::chrono::milliseconds timeout) {
  REMOE_CHECK(world_size >= 1 && world_size <= 1024, "ThreadGroup: world size ", world_size,
              " is outside [1, 1024]");
  REMOE_CHECK(timeout.count() > 0, "ThreadGroup: timeout ", timeout.count(),
              " ms must be positive");
  state_ = std::make_shared<GroupState>(world_size, timeout);
}

int ThreadGroup::world_size() const { return state_->world; }

std::unique_ptr<Communicator> ThreadGroup::communicator(int rank) const {
  REMOE_CHECK(rank >= 0 && rank < state_->world, "ThreadGroup::communicator: rank ", rank,
              " is not in [0, ", state_->world, ")");
  return std::make_unique<ThreadCommunicator>(state_, rank);
}

void ThreadGroup::abort(const std::string& reason) const {
  std::lock_guard lock(state_->mu);
  state_->abort_locked(reason);
}

bool ThreadGroup::aborted() const {
  std::lock_guard lock(state_->mu);
  return state_->aborted;
}

void ThreadGroup::leave(int rank) const {
  std::lock_guard lock(state_->mu);
  state_->leave_locked(rank);
}

void run_threads(int world_size, const std::function<void(Communicator&)>& fn,
                 std::chrono::milliseconds timeout) {
  const ThreadGroup group(world_size, timeout);
  std::mutex mu;
  std::exception_ptr first;
  auto body = [&](int rank) {
    try {
      const auto comm = group.communicator(rank);
      fn(*comm);
      group.leave(rank);
    } catch (...) {
      const std::exception_ptr e = std::current_exception();
      {
        std::lock_guard lock(mu);
        if (!first) first = e;
      }
      group.abort(str_cat("rank ", rank, " threw: ", what_of(e)));
    }
  };
  std::vector<std::thread> threads;
  try {
    for (int r = 0; r < world_size; ++r) threads.emplace_back(body, r);
  } catch (...) {  // no thread for some rank: the started ones must not wait for it
    group.abort("run_threads could not start a thread for every rank");
    for (std::thread& t : threads) t.join();
    throw;
  }
  for (std::thread& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

}  // namespace remoe::dist
