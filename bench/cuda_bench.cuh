// Shared by the CUDA benchmark programs (bench/*_bench.cu): device detection and the JSON
// context, device buffers, random fills, timing with CUDA events, and the two baselines that
// every ratio is taken against, measured in the same process:
//   cuBLAS GEMM (cublasGemmEx, bf16 or f32 in, CUBLAS_COMPUTE_32F) for the matrix kernels;
//   cudaMemcpyAsync device to device of the same bytes for the memory-bound kernels.
//
// Timing. Every launch goes on one stream, back to back, between two CUDA events: a batch of
// `reps` launches (sized to about kBatchSeconds) is one KeepRunningBatch(reps) step of Google
// Benchmark with its measured time (UseManualTime), so the reported time is per launch and the
// warm-up (first launch, module load, cuBLAS handle) is outside it. Host launch cost is part of
// the number where a kernel is shorter than its launch: the step is not a CUDA graph yet.
//
// Caches. A memory-bound kernel run over and over on one small buffer measures the 60 MB L2,
// not HBM: such benchmarks allocate `rotation_sets(bytes)` copies of their buffers (together at
// least kRotateBytes) and launch i uses copy i % sets. The copy baseline rotates the same way.
// GEMMs do not rotate (they are compute-bound; cuBLAS gets the same buffers).
//
// cuBLAS is loaded with dlopen (libcublas.so.13, else .so.12): this toolkit has no static
// cuBLAS, libcublasLt is 540 MB (too large to carry), and the GPU machines have it only in the
// Python environment. Where none loads, the remoe kernels still run and the baselines say why
// they are missing.
#pragma once

#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/bf16.h"
#include "kernels/check.h"

#define REMOE_BENCH_STR2(x) #x
#define REMOE_BENCH_STR(x) REMOE_BENCH_STR2(x)

namespace remoe::bench {

inline constexpr double kBatchSeconds = 2e-3;       // one timed batch of launches
inline constexpr double kBaselineSeconds = 0.05;    // time spent timing each baseline
inline constexpr size_t kRotateBytes = size_t(256) << 20;  // ≥ 4× the H200's 60 MB L2
inline constexpr int kMaxSets = 1024;

// --- the device ----------------------------------------------------------------------------

inline bool device_present() {
  static const bool present = [] {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  }();
  return present;
}

// false (and the benchmark is skipped with the reason) when no CUDA device is visible.
inline bool require_device(benchmark::State& state) {
  if (device_present()) return true;
  state.SkipWithError("no CUDA device");
  return false;
}

inline cudaStream_t stream() {
  static cudaStream_t s = [] {
    cudaStream_t t = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&t, cudaStreamNonBlocking));
    return t;
  }();
  return s;
}

// --- device buffers ------------------------------------------------------------------------

template <typename T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t n) : n_(n) {
    if (n > 0) CUDA_CHECK(cudaMalloc(&p_, n * sizeof(T)));
  }
  ~Buffer() {
    if (p_) cudaFree(p_);  // NOTE: no CUDA_CHECK: a destructor must not throw
  }
  Buffer(Buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* get() const { return p_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// How many copies of a working set of `bytes` together reach kRotateBytes (1 for large sets).
inline int rotation_sets(double bytes) {
  if (bytes <= 0) return 1;
  return int(std::clamp(std::ceil(double(kRotateBytes) / bytes), 1.0, double(kMaxSets)));
}

// `sets` copies of an n-element buffer in one allocation, each starting on a 256-byte boundary.
template <typename T>
class Rotating {
 public:
  Rotating() = default;
  Rotating(size_t n, int sets)
      : n_(n), stride_((n * sizeof(T) + 255) / 256 * 256 / sizeof(T)), sets_(sets),
        all_(stride_ * size_t(sets)) {}
  T* operator[](int64_t set) const { return all_.get() + size_t(set % sets_) * stride_; }
  size_t size() const { return n_; }
  int sets() const { return sets_; }
  // Copies `src` (n elements on the device) into every set.
  void fill_from(const T* src) const {
    for (int s = 0; s < sets_; ++s)
      CUDA_CHECK(cudaMemcpyAsync((*this)[s], src, n_ * sizeof(T), cudaMemcpyDeviceToDevice, stream()));
  }

 private:
  size_t n_ = 0, stride_ = 0;
  int sets_ = 1;
  Buffer<T> all_;
};

// --- random fills (never zeros: they hide unwritten outputs and run faster than real data) --

__host__ __device__ inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

__device__ inline float uniform01(uint64_t seed, uint64_t i) {  // in (0, 1]
  return (float((splitmix64(seed * 0x100000001B3ull + i) >> 40) + 1)) * (1.0f / 16777216.0f);
}

__device__ inline float normal01(uint64_t seed, uint64_t i) {  // Box–Muller
  const float u1 = uniform01(seed, 2 * i), u2 = uniform01(seed, 2 * i + 1);
  return sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
}

__device__ inline void store_value(float* p, float v) { *p = v; }
__device__ inline void store_value(remoe::bf16* p, float v) {
  *reinterpret_cast<__nv_bfloat16*>(p) = __float2bfloat16_rn(v);
}

// x[i] = mean + std · N(0, 1) + (col_bias ? col_bias[i % cols] : 0)
template <typename T>
__global__ void fill_normal_kernel(T* x, size_t n, uint64_t seed, float mean, float std,
                                   const float* col_bias, size_t cols) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    float v = mean + std * normal01(seed, i);
    if (col_bias) v += col_bias[i % cols];
    store_value(x + i, v);
  }
}

template <typename T>
void fill_normal(T* x, size_t n, uint64_t seed, float mean = 0.0f, float std = 1.0f,
                 const float* col_bias = nullptr, size_t cols = 1) {
  if (n == 0) return;
  const unsigned blocks = unsigned(std::min<size_t>((n + 255) / 256, 8192));
  fill_normal_kernel<<<blocks, 256, 0, stream()>>>(x, n, seed, mean, std, col_bias, cols);
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void fill_normal(const Rotating<T>& r, uint64_t seed, float mean = 0.0f, float std = 1.0f) {
  for (int s = 0; s < r.sets(); ++s) fill_normal(r[s], r.size(), seed + uint64_t(s), mean, std);
}

template <typename T>
Buffer<T> upload(const std::vector<T>& v) {
  Buffer<T> b(v.size());
  if (!v.empty())
    CUDA_CHECK(cudaMemcpyAsync(b.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice,
                               stream()));
  CUDA_CHECK(cudaStreamSynchronize(stream()));
  return b;
}

template <typename T>
T read_one(const T* device_ptr) {
  T v{};
  CUDA_CHECK(cudaMemcpyAsync(&v, device_ptr, sizeof(T), cudaMemcpyDeviceToHost, stream()));
  CUDA_CHECK(cudaStreamSynchronize(stream()));
  return v;
}

// --- timing ---------------------------------------------------------------------------------

class Events {
 public:
  Events() {
    CUDA_CHECK(cudaEventCreate(&start_));
    CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~Events() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  Events(const Events&) = delete;
  Events& operator=(const Events&) = delete;
  // Seconds for `reps` launches launch(first), launch(first + 1), … on the stream.
  template <typename F>
  double time(F& launch, int reps, int64_t first = 0) {
    CUDA_CHECK(cudaEventRecord(start_, stream()));
    for (int r = 0; r < reps; ++r) launch(first + r);
    CUDA_CHECK(cudaEventRecord(stop_, stream()));
    CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return double(ms) * 1e-3;
  }

 private:
  cudaEvent_t start_{}, stop_{};
};

// Warm-up (one launch and a synchronisation, so module load and lazy set-up stay out), then
// launches per batch so that one batch takes about kBatchSeconds.
template <typename F>
int warm_up(Events& ev, F& launch) {
  launch(0);
  CUDA_CHECK(cudaStreamSynchronize(stream()));
  CUDA_CHECK(cudaGetLastError());
  const double once = ev.time(launch, 2, 1) / 2;
  return int(std::clamp(kBatchSeconds / std::max(once, 1e-7), 1.0, 1000.0));
}

struct Timing {
  double seconds = 0;  // mean per launch
  int64_t launches = 0;
};

// The benchmark loop: batches of launches timed with events, fed to Google Benchmark as
// manual time. launch(i) gets the launch's index (for rotating buffers).
template <typename F>
Timing time_launches(benchmark::State& state, F&& launch) {
  Events ev;
  const int reps = warm_up(ev, launch);
  Timing t;
  int64_t i = 0;
  while (state.KeepRunningBatch(reps)) {
    const double s = ev.time(launch, reps, i);
    i += reps;
    state.SetIterationTime(s);
    t.seconds += s;
    t.launches += reps;
  }
  if (t.launches > 0) t.seconds /= double(t.launches);
  return t;
}

// A baseline outside the benchmark loop: the mean per launch over about kBaselineSeconds.
template <typename F>
double time_baseline(F&& launch) {
  Events ev;
  const int reps = warm_up(ev, launch);
  double total = 0;
  int64_t n = 0;
  while (total < kBaselineSeconds || n < 3 * reps) {
    total += ev.time(launch, reps, n);
    n += reps;
  }
  return total / double(n);
}

// --- the copy baseline ----------------------------------------------------------------------

// GB/s (bytes read + bytes written, 1e9) of cudaMemcpyAsync device to device moving `bytes` in
// all, i.e. copying bytes / 2, rotating over kRotateBytes like the kernels. Cached per size.
inline double copy_gbps(double bytes) {
  static std::map<size_t, double> cache;
  const size_t half = std::max<size_t>(size_t(bytes / 2), 256);
  if (auto it = cache.find(half); it != cache.end()) return it->second;
  const int sets = rotation_sets(2.0 * double(half));
  Rotating<char> src(half, sets), dst(half, sets);
  CUDA_CHECK(cudaMemsetAsync(src[0], 0x5a, half, stream()));
  auto copy = [&](int64_t i) {
    CUDA_CHECK(cudaMemcpyAsync(dst[i], src[i], half, cudaMemcpyDeviceToDevice, stream()));
  };
  const double s = time_baseline(copy);
  return cache[half] = 2.0 * double(half) / s * 1e-9;
}

// --- cuBLAS through dlopen ------------------------------------------------------------------

class Cublas {
 public:
  // nullptr when no libcublas could be loaded or no handle made; why() says which.
  static Cublas* get() { return instance().handle_ ? &instance() : nullptr; }
  static const std::string& why() { return instance().why_; }
  static std::string describe() {
    const Cublas& c = instance();
    if (!c.handle_) return "not loaded: " + c.why_;
    return c.library_ + " " + std::to_string(c.version_);
  }

  // Row-major C (M, N) = op(A) · op(B) with op(A) (M, K), op(B) (K, N), the transposes as in
  // kernels/matmul.h; `type` CUDA_R_16BF or CUDA_R_32F for A, B and C; fp32 accumulation
  // (CUBLAS_COMPUTE_32F: no TF32 for f32). Column-major cuBLAS computes Cᵀ = op(B)ᵀ · op(A)ᵀ.
  void gemm(void* c, const void* a, const void* b, int64_t M, int64_t N, int64_t K, bool trans_a,
            bool trans_b, cudaDataType type) {
    const float one = 1.0f, zero = 0.0f;
    const cublasStatus_t st = gemm_ex_(
        handle_, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, int(N),
        int(M), int(K), &one, b, type, int(trans_b ? K : N), a, type, int(trans_a ? M : K), &zero,
        c, type, int(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) REMOE_FAIL("cublasGemmEx failed with status ", int(st));
  }

 private:
  using CreateFn = cublasStatus_t (*)(cublasHandle_t*);
  using SetStreamFn = cublasStatus_t (*)(cublasHandle_t, cudaStream_t);
  using VersionFn = cublasStatus_t (*)(cublasHandle_t, int*);
  using GemmExFn = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int,
                                      int, int, const void*, const void*, cudaDataType, int,
                                      const void*, cudaDataType, int, const void*, void*,
                                      cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);

  static Cublas& instance() {
    static Cublas c;
    return c;
  }

  Cublas() {
    if (!device_present()) {
      why_ = "no CUDA device";
      return;
    }
    for (const char* name : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"}) {
      lib_ = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (lib_) {
        library_ = name;
        break;
      }
      const char* err = dlerror();
      why_ += std::string(why_.empty() ? "" : "; ") + (err ? err : name);
    }
    if (!lib_) return;
    auto create = reinterpret_cast<CreateFn>(dlsym(lib_, "cublasCreate_v2"));
    auto set_stream = reinterpret_cast<SetStreamFn>(dlsym(lib_, "cublasSetStream_v2"));
    auto version = reinterpret_cast<VersionFn>(dlsym(lib_, "cublasGetVersion_v2"));
    gemm_ex_ = reinterpret_cast<GemmExFn>(dlsym(lib_, "cublasGemmEx"));
    if (!create || !set_stream || !version || !gemm_ex_) {
      why_ = library_ + " lacks cublasCreate_v2, cublasSetStream_v2, cublasGetVersion_v2 or cublasGemmEx";
      return;
    }
    cublasHandle_t h = nullptr;
    if (const cublasStatus_t st = create(&h); st != CUBLAS_STATUS_SUCCESS) {
      why_ = "cublasCreate failed with status " + std::to_string(int(st));
      return;
    }
    set_stream(h, stream());
    version(h, &version_);
    handle_ = h;
    why_.clear();
  }

  void* lib_ = nullptr;
  cublasHandle_t handle_ = nullptr;
  GemmExFn gemm_ex_ = nullptr;
  std::string library_, why_;
  int version_ = 0;
};

// TFLOP/s of cuBLAS on a GEMM of this shape, timed on the given buffers; cached per shape.
// Returns 0 when cuBLAS is not loaded.
inline double cublas_tflops(void* c, const void* a, const void* b, int64_t M, int64_t N,
                            int64_t K, bool trans_a, bool trans_b, cudaDataType type) {
  static std::map<std::tuple<int64_t, int64_t, int64_t, bool, bool, int>, double> cache;
  const auto key = std::make_tuple(M, N, K, trans_a, trans_b, int(type));
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  Cublas* cublas = Cublas::get();
  if (!cublas) return 0.0;
  auto gemm = [&](int64_t) { cublas->gemm(c, a, b, M, N, K, trans_a, trans_b, type); };
  const double s = time_baseline(gemm);
  return cache[key] = 2.0 * double(M) * double(N) * double(K) / s * 1e-12;
}

// --- counters -------------------------------------------------------------------------------

// TFLOP/s of the kernel, of the cuBLAS baseline (0: not measured) and their ratio.
inline void report_flops(benchmark::State& state, double flops, const Timing& t,
                         double baseline_tflops, const char* baseline_name = "cublas_TFLOP/s") {
  if (t.launches == 0) return;
  const double tflops = flops / t.seconds * 1e-12;
  state.counters["TFLOP/s"] = tflops;
  if (baseline_tflops > 0) {
    state.counters[baseline_name] = baseline_tflops;
    state.counters["ratio"] = tflops / baseline_tflops;
  } else {
    state.SetLabel("no cuBLAS baseline: " + Cublas::why());
  }
}

// GB/s (1e9 bytes) of the kernel for the bytes it must move, of the copy of as many bytes,
// and their ratio.
inline void report_bytes(benchmark::State& state, double bytes, const Timing& t) {
  if (t.launches == 0) return;
  const double gbps = bytes / t.seconds * 1e-9, copy = copy_gbps(bytes);
  state.counters["GB/s"] = gbps;
  state.counters["copy_GB/s"] = copy;
  state.counters["ratio"] = gbps / copy;
  state.counters["MB"] = bytes * 1e-6;
}

// --- registration and main --------------------------------------------------------------------

// "op/key:value/key:value…": every benchmark's name states its shape.
inline std::string shape_name(const std::string& op,
                              std::initializer_list<std::pair<const char*, std::string>> parts) {
  std::string s = op;
  for (const auto& [k, v] : parts) s += "/" + std::string(k) + ":" + v;
  return s;
}
inline std::string num(int64_t v) { return std::to_string(v); }

// Registers `body` under `name`, timed manually, with device detection and errors (a failed
// check, a CUDA error) turned into a skipped benchmark with the message, not a crash.
inline benchmark::internal::Benchmark* add(const std::string& name,
                                           std::function<void(benchmark::State&)> body) {
  return benchmark::RegisterBenchmark(name.c_str(),
                                      [body](benchmark::State& state) {
                                        if (!require_device(state)) return;
                                        try {
                                          body(state);
                                        } catch (const std::exception& e) {
                                          state.SkipWithError(e.what());
                                        }
                                      })
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
}

inline std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// The JSON context: the device, the driver, the commit (REMOE_COMMIT, which gpu_check.sh sets
// from the bundle), the architecture built for and cuBLAS.
inline void add_context() {
  benchmark::AddCustomContext("remoe_commit", env_or("REMOE_COMMIT", "unknown (REMOE_COMMIT unset)"));
  benchmark::AddCustomContext("cuda_arch_built", "sm_" REMOE_BENCH_STR(REMOE_CUDA_ARCH));
  int runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  benchmark::AddCustomContext("cuda_runtime", std::to_string(runtime));
  if (!device_present()) {
    benchmark::AddCustomContext("cuda_device", "none");
    return;
  }
  int dev = 0, driver = 0;
  cudaGetDevice(&dev);
  cudaDriverGetVersion(&driver);
  cudaDeviceProp p{};
  cudaGetDeviceProperties(&p, dev);
  benchmark::AddCustomContext("cuda_device", p.name);
  benchmark::AddCustomContext("cuda_cc", std::to_string(p.major) + "." + std::to_string(p.minor));
  benchmark::AddCustomContext("cuda_sm_count", std::to_string(p.multiProcessorCount));
  benchmark::AddCustomContext("cuda_l2_bytes", std::to_string(p.l2CacheSize));
  benchmark::AddCustomContext("cuda_driver_api", std::to_string(driver));
  benchmark::AddCustomContext("nvidia_driver", env_or("REMOE_DRIVER", "unknown (REMOE_DRIVER unset)"));
  benchmark::AddCustomContext("cublas", Cublas::describe());
}

inline int run_main(int argc, char** argv, void (*register_all)()) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_all();
  add_context();
  if (!device_present())
    std::fprintf(stderr, "%s: no CUDA device visible: every benchmark is skipped\n", argv[0]);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace remoe::bench
