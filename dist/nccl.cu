// NcclCommunicator: the Communicator over NCCL (see nccl.h for the contract).
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "autodiff/device.h"
#include "dist/nccl.h"

namespace remoe::dist {

bool nccl_built() { return true; }

namespace {

using Clock = std::chrono::steady_clock;

std::string nccl_error(ncclResult_t result, ncclComm_t comm) {
  std::string s = ncclGetErrorString(result);
  const char* last = ncclGetLastError(comm);
  if (last && *last) s += str_cat(" (", last, ")");
  return s;
}

// NCCL_CHECK with NCCL's last error message for this communicator.
#define COMM_CHECK(call)                                                                 \
  do {                                                                                   \
    const ncclResult_t remoe_r_ = (call);                                                \
    if (remoe_r_ != ncclSuccess) [[unlikely]]                                            \
      ::remoe::fail_call("NCCL", #call, nccl_error(remoe_r_, comm_).c_str(), __FILE__, __LINE__); \
  } while (0)

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::bf16: return ncclBfloat16;
    case DType::i32: return ncclInt32;
  }
  return ncclFloat32;
}

cudaStream_t stream() { return static_cast<cudaStream_t>(device::cuda_stream()); }

char* at(const Tensor& t, int64_t elements) {
  return static_cast<char*>(t.raw()) + size_t(elements) * dtype_size(t.dtype());
}

// --- the rank-order reduction kernel ----------------------------------------------------

template <typename T>
__device__ T add(T a, T b) {
  return a + b;
}
template <>
__device__ int32_t add(int32_t a, int32_t b) {  // wraps, like reduce_blocks_cpu
  return int32_t(uint32_t(a) + uint32_t(b));
}

// out[i] = ((blocks[0·n+i] + blocks[1·n+i]) + ...) / W: the order and the operations of
// reduce_blocks_cpu, so the two agree bit for bit (no multiply, so nothing to contract into
// an FMA; nvcc's default division is IEEE round-to-nearest, as the CPU's).
template <typename T>
__global__ void reduce_blocks_kernel(T* out, const T* blocks, int64_t world, int64_t n,
                                     bool mean) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    T acc = blocks[i];
    for (int64_t p = 1; p < world; ++p) acc = add(acc, blocks[p * n + i]);
    if (mean) acc = acc / T(world);
    out[i] = acc;
  }
}

template <typename T>
void launch_reduce_blocks(void* out, const void* blocks, int64_t world, int64_t n, bool mean,
                          cudaStream_t s) {
  constexpr int kThreads = 256;
  const int64_t grid = std::min<int64_t>((n + kThreads - 1) / kThreads, 4096);
  reduce_blocks_kernel<T><<<unsigned(grid), kThreads, 0, s>>>(
      static_cast<T*>(out), static_cast<const T*>(blocks), world, n, mean);
  CUDA_CHECK(cudaGetLastError());
}

// out: n elements; blocks: W·n elements, both on the GPU.
void reduce_blocks(void* out, const void* blocks, int64_t world, int64_t n, DType dtype,
                   ReduceOp op, cudaStream_t s) {
  if (n == 0) return;
  const bool mean = op == ReduceOp::mean;
  switch (dtype) {
    case DType::f32: launch_reduce_blocks<float>(out, blocks, world, n, mean, s); break;
    case DType::f64: launch_reduce_blocks<double>(out, blocks, world, n, mean, s); break;
    case DType::i32: launch_reduce_blocks<int32_t>(out, blocks, world, n, false, s); break;
    case DType::bf16: REMOE_FAIL("reduce_blocks_cuda: bf16 is not reducible");
  }
}

// --- watchdog ---------------------------------------------------------------------------

// Watches what this rank has in flight: collectives (a CUDA event recorded after each) and
// host-side NCCL calls that may block on peers (init, destroy). A collective that reports an
// NCCL error while no host wait is there to throw it, or anything in flight longer than the
// timeout, aborts the communicator and ends the process: its peers are gone or stuck, and a
// rank blocked in a collective can be freed no other way.
class Watchdog {
 public:
  Watchdog(int rank, int device, std::chrono::milliseconds timeout)
      : rank_(rank), device_(device), timeout_(timeout), thread_([this] { loop(); }) {}

  ~Watchdog() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    for (const Pending& p : pending_) cudaEventDestroy(p.event);
    for (cudaEvent_t e : free_events_) cudaEventDestroy(e);
  }

  void set_comm(ncclComm_t comm) {
    std::lock_guard lock(mu_);
    comm_ = comm;
  }

  // The host is about to abort the communicator itself: stop watching it.
  void forget_comm() {
    std::lock_guard lock(mu_);
    comm_ = nullptr;
    for (const Pending& p : pending_) free_events_.push_back(p.event);
    pending_.clear();
  }

  void begin_host(const char* op) {
    std::lock_guard lock(mu_);
    host_op_ = op;
    host_start_ = Clock::now();
  }
  void end_host() {
    std::lock_guard lock(mu_);
    host_op_ = nullptr;
  }

  // While a host wait polls, it reports NCCL errors itself (by throwing).
  void host_waiting(bool waiting) {
    std::lock_guard lock(mu_);
    host_waits_ += waiting ? 1 : -1;
  }

  cudaEvent_t take_event() {
    {
      std::lock_guard lock(mu_);
      if (!free_events_.empty()) {
        const cudaEvent_t e = free_events_.back();
        free_events_.pop_back();
        return e;
      }
    }
    cudaEvent_t e = nullptr;
    CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }
  void give_event(cudaEvent_t e) {
    std::lock_guard lock(mu_);
    free_events_.push_back(e);
  }

  // `op` was enqueued on the stream, followed by `event`.
  void watch(const char* op, cudaEvent_t event) {
    std::lock_guard lock(mu_);
    pending_.push_back({op, event, Clock::now()});
  }

 private:
  struct Pending {
    const char* op;
    cudaEvent_t event;
    Clock::time_point start;
  };

  void loop() {
    cudaSetDevice(device_);  // events and the communicator live on this rank's GPU
    const auto poll = std::clamp(timeout_ / 20, std::chrono::milliseconds(10),
                                 std::chrono::milliseconds(500));
    std::unique_lock lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, poll);
      if (stop_) break;
      while (!pending_.empty()) {
        const cudaError_t q = cudaEventQuery(pending_.front().event);
        if (q == cudaErrorNotReady) break;
        if (q != cudaSuccess)
          die(str_cat(pending_.front().op, " failed on the GPU: ", cudaGetErrorString(q)));
        free_events_.push_back(pending_.front().event);
        pending_.pop_front();
      }
      if (comm_ && host_waits_ == 0) {
        ncclResult_t async = ncclSuccess;
        const ncclResult_t r = ncclCommGetAsyncError(comm_, &async);
        if (r != ncclSuccess || (async != ncclSuccess && async != ncclInProgress))
          die(str_cat("NCCL reports an error: ", nccl_error(r != ncclSuccess ? r : async, comm_),
                      pending_.empty() ? std::string()
                                       : str_cat(" (in flight: ", pending_.front().op, ")")));
      }
      const auto now = Clock::now();
      if (!pending_.empty() && now - pending_.front().start > timeout_)
        die(str_cat(pending_.front().op, " did not finish within ", timeout_.count(),
                    " ms (a peer died, or is stuck, or called other collectives)"));
      if (host_op_ && now - host_start_ > timeout_)
        die(str_cat(host_op_, " did not return within ", timeout_.count(),
                    " ms (a peer died or never called it)"));
    }
  }

  [[noreturn]] void die(const std::string& why) {
    std::fprintf(stderr,
                 "remoe: NCCL watchdog: rank %d: %s; aborting the communicator and exiting\n",
                 rank_, why.c_str());
    std::fflush(stderr);
    if (comm_) ncclCommAbort(comm_);
    std::_Exit(1);  // NOTE: not exit(): other threads are blocked in CUDA or NCCL calls
  }

  const int rank_, device_;
  const std::chrono::milliseconds timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  ncclComm_t comm_ = nullptr;
  std::deque<Pending> pending_;
  std::vector<cudaEvent_t> free_events_;
  const char* host_op_ = nullptr;
  Clock::time_point host_start_;
  int host_waits_ = 0;
  std::thread thread_;  // last: starts once everything above exists
};

// --- the communicator -------------------------------------------------------------------

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const ncclUniqueId& id, int rank, int world, int device,
                   const NcclOptions& options)
      : rank_(rank), world_(world), device_(device), options_(options),
        watchdog_(std::make_unique<Watchdog>(rank, device, options.timeout)) {
    watchdog_->begin_host("ncclCommInitRank");
    const ncclResult_t r = ncclCommInitRank(&comm_, world, id, rank);
    watchdog_->end_host();
    if (r != ncclSuccess)
      fail_call("NCCL", "ncclCommInitRank(&comm_, world, id, rank)", nccl_error(r, nullptr).c_str(),
                __FILE__, __LINE__);
    watchdog_->set_comm(comm_);
    make_side_stream();
  }

  // A communicator NCCL has already made (split()); this one owns it, with its own watchdog.
  NcclCommunicator(ncclComm_t comm, int rank, int world, int device, const NcclOptions& options)
      : rank_(rank), world_(world), device_(device), options_(options), comm_(comm),
        watchdog_(std::make_unique<Watchdog>(rank, device, options.timeout)) {
    watchdog_->set_comm(comm_);
    make_side_stream();
  }

  ~NcclCommunicator() override {
    if (!aborted_) {
      try {
        host_wait("shutdown");
        watchdog_->forget_comm();
        watchdog_->begin_host("ncclCommDestroy");
        ncclCommDestroy(comm_);
        watchdog_->end_host();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "remoe: NCCL: rank %d: at shutdown: %s\n", rank_, e.what());
        if (!aborted_) abort_comm();
      }
    }
    watchdog_.reset();
    // NOTE: no CUDA_CHECK: a destructor must not throw.
    cudaEventDestroy(fork_);
    cudaEventDestroy(join_);
    cudaStreamDestroy(side_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  Device device() const override { return Device::cuda; }

  void all_reduce(const Tensor& t, ReduceOp op) override {
    detail::check_all_reduce(t, op, rank_);
    ready("all_reduce", {t});
    // The scratch is freed on remoe's stream, behind the reduction that uses it.
    all_reduce_on(stream(), t, op, all_reduce_scratch(t));
  }

  void start_all_reduce(const Tensor& t, ReduceOp op) override {
    detail::check_all_reduce(t, op, rank_);
    ready("all_reduce", {t});
    // The scratch is allocated on remoe's stream before the fork, so the side stream sees it
    // allocated; it is kept until the join, after which freeing it on remoe's stream is safe.
    Tensor blocks = all_reduce_scratch(t);
    CUDA_CHECK(cudaEventRecord(fork_, stream()));
    CUDA_CHECK(cudaStreamWaitEvent(side_, fork_, 0));
    all_reduce_on(side_, t, op, blocks);
    if (blocks.defined()) started_scratch_.push_back(std::move(blocks));
    started_ = true;
  }

  void wait_started() override {
    if (!started_) return;
    CUDA_CHECK(cudaEventRecord(join_, side_));
    CUDA_CHECK(cudaStreamWaitEvent(stream(), join_, 0));
    started_scratch_.clear();
    started_ = false;
  }

  void reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) override {
    detail::check_reduce_scatter(out, in, op, rank_, world_);
    ready("reduce_scatter", {out, in});
    const int64_t m = out.numel();
    if (m == 0) return;
    const ncclDataType_t type = nccl_type(in.dtype());
    if (!ordered_) {
      COMM_CHECK(ncclReduceScatter(in.raw(), out.raw(), size_t(m), type, nccl_op(op), comm_,
                                   stream()));
      return enqueued("reduce_scatter");
    }
    const Tensor blocks = Tensor::empty({world_, m}, in.dtype(), Device::cuda);  // (W, m)
    COMM_CHECK(ncclGroupStart());
    for (int p = 0; p < world_; ++p) {
      if (p == rank_) continue;
      COMM_CHECK(ncclSend(at(in, p * m), size_t(m), type, p, comm_, stream()));
      COMM_CHECK(ncclRecv(at(blocks, p * m), size_t(m), type, p, comm_, stream()));
    }
    COMM_CHECK(ncclGroupEnd());
    copy_async(at(blocks, rank_ * m), at(in, rank_ * m), m, in.dtype());
    reduce_blocks(out.raw(), blocks.raw(), world_, m, in.dtype(), op, stream());
    enqueued("reduce_scatter");
  }

  void all_gather(const Tensor& out, const Tensor& in) override {
    detail::check_all_gather(out, in, rank_, world_);
    ready("all_gather", {out, in});
    if (in.numel() == 0) return;
    COMM_CHECK(ncclAllGather(in.raw(), out.raw(), size_t(in.numel()), nccl_type(in.dtype()),
                             comm_, stream()));
    enqueued("all_gather");
  }

  void all_to_all(const Tensor& out, const std::vector<int64_t>& recv_counts, const Tensor& in,
                  const std::vector<int64_t>& send_counts) override {
    detail::check_all_to_all(out, recv_counts, in, send_counts, rank_, world_);
    ready("all_to_all", {out, in});
    REMOE_CHECK(send_counts[size_t(rank_)] == recv_counts[size_t(rank_)], "all_to_all: rank ",
                rank_, " sends ", send_counts[size_t(rank_)], " rows to itself but expects ",
                recv_counts[size_t(rank_)]);
    const int64_t row = detail::row_elements(in);
    const ncclDataType_t type = nccl_type(in.dtype());
    int64_t sent = 0, received = 0;  // rows before peer p's block
    COMM_CHECK(ncclGroupStart());
    for (int p = 0; p < world_; ++p) {
      const int64_t s = send_counts[size_t(p)] * row, r = recv_counts[size_t(p)] * row;
      if (p == rank_) {
        copy_async(at(out, received * row), at(in, sent * row), s, in.dtype());
      } else {
        if (s) COMM_CHECK(ncclSend(at(in, sent * row), size_t(s), type, p, comm_, stream()));
        if (r) COMM_CHECK(ncclRecv(at(out, received * row), size_t(r), type, p, comm_, stream()));
      }
      sent += send_counts[size_t(p)];
      received += recv_counts[size_t(p)];
    }
    COMM_CHECK(ncclGroupEnd());
    enqueued("all_to_all");
  }

  void broadcast(const Tensor& t, int root) override {
    detail::check_broadcast(t, root, rank_, world_);
    ready("broadcast", {t});
    if (t.numel() == 0) return;
    COMM_CHECK(ncclBroadcast(t.raw(), t.raw(), size_t(t.numel()), nccl_type(t.dtype()), root,
                             comm_, stream()));
    enqueued("broadcast");
  }

  void barrier() override {
    ready("barrier", {});
    const Tensor token = Tensor::zeros({1}, DType::i32, Device::cuda);
    COMM_CHECK(ncclAllReduce(token.raw(), token.raw(), 1, ncclInt32, ncclSum, comm_, stream()));
    enqueued("barrier");
    host_wait("barrier");
  }

  // ncclCommSplit: the new group's ranks are ordered by key, then by rank here, as the
  // interface says. It blocks until every rank of this communicator has called it (timed by
  // this communicator's watchdog).
  std::unique_ptr<Communicator> split(int color, int key) override {
    detail::check_split(color, rank_);
    ready("split", {});
    ncclComm_t child = nullptr;
    watchdog_->begin_host("ncclCommSplit");
    const ncclResult_t r = ncclCommSplit(comm_, color, key, &child, nullptr);
    watchdog_->end_host();
    if (r != ncclSuccess)
      fail_call("NCCL", "ncclCommSplit(comm_, color, key, &child, nullptr)",
                nccl_error(r, comm_).c_str(), __FILE__, __LINE__);
    int rank = 0, world = 0;
    NCCL_CHECK(ncclCommUserRank(child, &rank));
    NCCL_CHECK(ncclCommCount(child, &world));
    return std::make_unique<NcclCommunicator>(child, rank, world, device_, options_);
  }

 private:
  static ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::sum ? ncclSum : ncclAvg; }

  void ready(const char* op, std::initializer_list<Tensor> tensors) const {
    REMOE_CHECK(!aborted_, "NCCL: rank ", rank_, ": ", op,
                " on an aborted communicator (an earlier collective failed)");
    for (const Tensor& t : tensors) detail::check_device(op, t, Device::cuda, "NCCL", rank_);
  }

  void make_side_stream() {
    CUDA_CHECK(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&join_, cudaEventDisableTiming));
  }

  // The ordered path's receive buffer for this rank's chunk of t: (W, chunk); none otherwise.
  Tensor all_reduce_scratch(const Tensor& t) const {
    const int64_t n = t.numel();
    if (!ordered_ || n == 0) return {};
    const int64_t mine = n * (rank_ + 1) / world_ - n * rank_ / world_;
    return Tensor::empty({world_, mine}, t.dtype(), Device::cuda);
  }

  // The all_reduce, enqueued on s.
  void all_reduce_on(cudaStream_t s, const Tensor& t, ReduceOp op, const Tensor& blocks) {
    const int64_t n = t.numel();
    if (n == 0) return;
    if (!ordered_) {
      COMM_CHECK(ncclAllReduce(t.raw(), t.raw(), size_t(n), nccl_type(t.dtype()), nccl_op(op),
                               comm_, s));
      return enqueued("all_reduce", s);
    }
    // Rank p owns elements [begin(p), begin(p + 1)); it sums its chunk over all ranks, in rank
    // order, then everyone gathers the sums.
    auto begin = [&](int p) { return n * p / world_; };
    const int64_t mine = begin(rank_ + 1) - begin(rank_);
    const ncclDataType_t type = nccl_type(t.dtype());
    COMM_CHECK(ncclGroupStart());
    for (int p = 0; p < world_; ++p) {
      const int64_t theirs = begin(p + 1) - begin(p);
      if (p == rank_) continue;
      if (theirs) COMM_CHECK(ncclSend(at(t, begin(p)), size_t(theirs), type, p, comm_, s));
      if (mine) COMM_CHECK(ncclRecv(at(blocks, p * mine), size_t(mine), type, p, comm_, s));
    }
    COMM_CHECK(ncclGroupEnd());
    copy_async(at(blocks, rank_ * mine), at(t, begin(rank_)), mine, t.dtype(), s);
    reduce_blocks(at(t, begin(rank_)), blocks.raw(), world_, mine, t.dtype(), op, s);
    COMM_CHECK(ncclGroupStart());
    for (int p = 0; p < world_; ++p) {
      const int64_t theirs = begin(p + 1) - begin(p);
      if (p == rank_) continue;
      if (mine) COMM_CHECK(ncclSend(at(t, begin(rank_)), size_t(mine), type, p, comm_, s));
      if (theirs) COMM_CHECK(ncclRecv(at(t, begin(p)), size_t(theirs), type, p, comm_, s));
    }
    COMM_CHECK(ncclGroupEnd());
    enqueued("all_reduce", s);
  }

  void copy_async(void* dst, const void* src, int64_t elements, DType dtype,
                  cudaStream_t s = stream()) {
    if (elements)
      CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(elements) * dtype_size(dtype),
                                 cudaMemcpyDeviceToDevice, s));
  }

  void enqueued(const char* op, cudaStream_t s = stream()) {
    const cudaEvent_t e = watchdog_->take_event();
    CUDA_CHECK(cudaEventRecord(e, s));
    watchdog_->watch(op, e);
  }

  // Waits on the host for everything enqueued so far (started reductions too); an NCCL error
  // aborts the communicator and throws. (Timeouts are the watchdog's.)
  void host_wait(const char* op) {
    wait_started();
    const cudaEvent_t e = watchdog_->take_event();
    CUDA_CHECK(cudaEventRecord(e, stream()));
    watchdog_->host_waiting(true);
    struct Done {
      Watchdog* w;
      cudaEvent_t e;
      ~Done() {
        w->host_waiting(false);
        w->give_event(e);
      }
    } done{watchdog_.get(), e};
    auto pause = std::chrono::microseconds(10);
    for (;;) {
      const cudaError_t q = cudaEventQuery(e);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) CUDA_CHECK(q);
      ncclResult_t async = ncclSuccess;
      COMM_CHECK(ncclCommGetAsyncError(comm_, &async));
      if (async != ncclSuccess && async != ncclInProgress) {
        const std::string why = nccl_error(async, comm_);
        abort_comm();
        REMOE_FAIL("NCCL: rank ", rank_, ": ", op, " failed: ", why,
                   " (a peer died or the network failed); the communicator is aborted");
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
  }

  void abort_comm() {
    watchdog_->forget_comm();
    ncclCommAbort(comm_);
    aborted_ = true;
  }

  const int rank_, world_, device_;
  const NcclOptions options_;  // a split passes them on
  const bool ordered_ = options_.ordered_reductions;
  ncclComm_t comm_ = nullptr;
  bool aborted_ = false;
  std::unique_ptr<Watchdog> watchdog_;
  // start_all_reduce's stream: forked from remoe's stream at each start, joined back by
  // wait_started(); the ordered path's scratch of the started reductions lives until the join.
  cudaStream_t side_ = nullptr;
  cudaEvent_t fork_ = nullptr, join_ = nullptr;
  std::vector<Tensor> started_scratch_;
  bool started_ = false;
};

std::string uuid_of(int device) {
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  std::string s = "GPU-";
  for (int i = 0; i < 16; ++i) {
    char hex[3];
    std::snprintf(hex, sizeof hex, "%02x", static_cast<unsigned char>(prop.uuid.bytes[i]));
    s += hex;
    if (i == 3 || i == 5 || i == 7 || i == 9) s += '-';
  }
  return s;
}

}  // namespace

std::unique_ptr<Communicator> nccl_communicator(const LaunchInfo& launch,
                                                const NcclOptions& options) {
  const int rank = launch.rank;
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  REMOE_CHECK(e == cudaSuccess && count > 0, "NCCL communicator: rank ", rank,
              ": no CUDA device is visible (",
              e == cudaSuccess ? "cudaGetDeviceCount found none" : cudaGetErrorString(e), ")");
  // A launcher that gives each rank its own GPU (srun --gpus-per-task=1) leaves one visible.
  int device = options.device;
  if (device < 0) device = count == 1 ? 0 : launch.local_rank;
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  REMOE_CHECK(device < count, "NCCL communicator: rank ", rank, " should use GPU ", device, " (",
              options.device >= 0 ? "NcclOptions::device" : "its local rank", ") but ", count,
              " GPU(s) are visible (CUDA_VISIBLE_DEVICES=", visible ? visible : "unset", ")");
  CUDA_CHECK(cudaSetDevice(device));
  // remoe's stream is created on the device current at its first use: it must be this one.
  int stream_device = -1;
  CUDA_CHECK(cudaStreamGetDevice(stream(), &stream_device));
  REMOE_CHECK(stream_device == device, "NCCL communicator: rank ", rank, ": remoe's CUDA stream "
              "was created on GPU ", stream_device, " before the communicator chose GPU ", device,
              "; create the communicator before any other CUDA work");

  const PeerInfo self{hostname(), uuid_of(device)};
  ncclUniqueId id{};
  Blob blob;
  if (rank == 0) {
    NCCL_CHECK(ncclGetUniqueId(&id));
    const auto* bytes = reinterpret_cast<const uint8_t*>(&id);
    blob.assign(bytes, bytes + sizeof id);
  }
  blob = exchange_blob(launch, self, blob, options.bootstrap_timeout);
  REMOE_CHECK(blob.size() == sizeof id, "NCCL communicator: rank ", rank, " received ",
              blob.size(), " bytes from rank 0, expected an NCCL unique id of ", sizeof id);
  std::memcpy(&id, blob.data(), sizeof id);
  return std::make_unique<NcclCommunicator>(id, rank, launch.world_size, device, options);
}

namespace detail {
void reduce_blocks_cuda(const Tensor& out, const Tensor& blocks, ReduceOp op) {
  REMOE_CHECK(out.device() == Device::cuda && blocks.device() == Device::cuda,
              "reduce_blocks_cuda: out and blocks must be cuda tensors");
  REMOE_CHECK(blocks.ndim() == 2 && out.ndim() == 1 && blocks.dim(1) == out.dim(0) &&
                  blocks.dtype() == out.dtype(),
              "reduce_blocks_cuda: out ", shape_str(out.shape()), " ", dtype_name(out.dtype()),
              " and blocks ", shape_str(blocks.shape()), " ", dtype_name(blocks.dtype()),
              " should be (n) and (W, n) of one dtype");
  REMOE_CHECK(blocks.dim(0) >= 1, "reduce_blocks_cuda: no blocks");
  REMOE_CHECK(!(op == ReduceOp::mean && out.dtype() == DType::i32),
              "reduce_blocks_cuda: the mean of i32 is not an integer");
  reduce_blocks(out.raw(), blocks.raw(), blocks.dim(0), out.dim(0), out.dtype(), op, stream());
}
}  // namespace detail

}  // namespace remoe::dist
