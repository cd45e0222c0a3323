// remoe: the command-line entry point.
//   remoe train --config FILE [--section.key=value ...]
//   remoe info
// Errors reach the user as one line on stderr and a non-zero exit status.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "autodiff/device.h"
#include "train/config.h"
#include "train/trainer.h"

namespace {

constexpr const char* kUsage =
    "usage: remoe <command> [options]\n"
    "\n"
    "commands:\n"
    "  train --config FILE [--section.key=value ...]   train a model (on the CPU for now)\n"
    "  info                                            the build and the GPU remoe sees\n"
    "  --help                                          this text and every config key\n";

int info() {
  std::printf("remoe 0.1.0\n");
  std::printf("CUDA backend: %s\n", remoe::device::cuda_built() ? "built" : "not built");
  if (remoe::device::cuda_built())
    std::printf("GPU: %s\n", remoe::device::cuda_available()
                                 ? remoe::device::cuda_device_name().c_str()
                                 : "none visible");
  return 0;
}

int train(const std::vector<std::string>& args) {
  std::string config_path;
  std::vector<std::string> overrides;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config") {
      REMOE_CHECK(i + 1 < args.size(), "remoe train: --config needs a file");
      config_path = args[++i];
    } else if (args[i].rfind("--config=", 0) == 0) {
      config_path = args[i].substr(9);
    } else {
      overrides.push_back(args[i]);
    }
  }
  REMOE_CHECK(!config_path.empty(), "remoe train: --config FILE is required (e.g. configs/tiny.toml)");
  const remoe::train::TrainConfig config = remoe::train::load_config(config_path, overrides);
  const remoe::train::RunResult result = remoe::train::run_training(config);
  std::printf("done: final validation loss %.4f nats/byte\n", result.final_val_loss);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    if (argc >= 2) std::printf("\nconfig keys (TOML [section] key = value, or --section.key=value):\n%s",
                               remoe::train::options_help().c_str());
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  const std::vector<std::string> rest(argv + 2, argv + argc);
  try {
    if (cmd == "info") return info();
    if (cmd == "train") return train(rest);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "remoe %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
  std::fprintf(stderr, "remoe: unknown command '%s'\n%s", cmd.c_str(), kUsage);
  return 2;
}
