// remoe: the command-line entry point. The trainer arrives with the "ReMoE model and remoe
// train end to end on the CPU" issue; until then `remoe train` says so and exits non-zero.
#include <cstdio>
#include <cstring>
#include <string>

#include "autodiff/device.h"

namespace {

constexpr const char* kUsage =
    "usage: remoe <command> [options]\n"
    "\n"
    "commands:\n"
    "  train --config FILE   train a model (not yet: arrives with the trainer)\n"
    "  info                  print the build and the devices remoe sees\n"
    "  --help                this text\n";

int info() {
  std::printf("remoe 0.1.0\n");
  std::printf("CUDA backend: %s\n", remoe::device::cuda_built() ? "built" : "not built");
  if (remoe::device::cuda_built())
    std::printf("GPU: %s\n", remoe::device::cuda_available()
                                 ? remoe::device::cuda_device_name().c_str()
                                 : "none visible");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  if (cmd == "info") return info();
  if (cmd == "train") {
    std::fprintf(stderr,
                 "remoe train: not yet — the model and the training loop are the next issue; "
                 "this build has the tensors, the autodiff and the CPU reference ops "
                 "(run the tests with the README's second command)\n");
    return 2;
  }
  std::fprintf(stderr, "remoe: unknown command '%s'\n%s", cmd.c_str(), kUsage);
  return 2;
}
