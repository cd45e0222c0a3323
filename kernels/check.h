// The one error-check family (after ggml): every failed check goes through one
// [[noreturn]] reporter that throws remoe::Error, so the CLI can print one line and
// exit non-zero and tests can assert on the message.
//
//   REMOE_CHECK(cond, parts...)  user-reachable errors: shapes, dtypes, config, files.
//                                The message is the parts streamed together; name the
//                                op or file, the offending values and what is expected.
//   REMOE_FAIL(parts...)         the same without a condition.
//   CUDA_CHECK(call)             a CUDA runtime call failed (statement, file, line).
//   NCCL_CHECK(call)             the same for an NCCL call.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace remoe {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Parts>
std::string str_cat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

[[noreturn]] void fail(const std::string& message);
[[noreturn]] void fail_call(const char* library, const char* statement, const char* detail,
                            const char* file, int line);

}  // namespace remoe

#define REMOE_CHECK(cond, ...)                                   \
  do {                                                           \
    if (!(cond)) [[unlikely]]                                    \
      ::remoe::fail(::remoe::str_cat(__VA_ARGS__));              \
  } while (0)

#define REMOE_FAIL(...) ::remoe::fail(::remoe::str_cat(__VA_ARGS__))

// Expands only where cuda_runtime.h is included (kernels/cuda, autodiff/cuda).
#define CUDA_CHECK(call)                                                               \
  do {                                                                                 \
    const cudaError_t remoe_err_ = (call);                                             \
    if (remoe_err_ != cudaSuccess) [[unlikely]]                                        \
      ::remoe::fail_call("CUDA", #call, cudaGetErrorString(remoe_err_), __FILE__, __LINE__); \
  } while (0)

// Expands only where nccl.h is included (dist/nccl.cu).
#define NCCL_CHECK(call)                                                               \
  do {                                                                                 \
    const ncclResult_t remoe_nccl_err_ = (call);                                       \
    if (remoe_nccl_err_ != ncclSuccess) [[unlikely]]                                   \
      ::remoe::fail_call("NCCL", #call, ncclGetErrorString(remoe_nccl_err_), __FILE__, __LINE__); \
  } while (0)
