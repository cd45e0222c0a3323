// remoe: the command-line entry point.
//   remoe train --config FILE [--section.key=value ...]
//   remoe eval --checkpoint DIR [--text FILE] [--batches N] [--json] [--dump-logits FILE]
//   remoe export --checkpoint DIR --out DIR2
//   remoe analyze --checkpoint DIR --text NAME=PATH [...] [--train-text FILE] [--compare DIR2]
//                 [--tokens N] [--batch-size B] [--out FILE.json]
//   remoe info
// Errors reach the user as one line on stderr and a non-zero exit status.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "autodiff/device.h"
#include "dist/bootstrap.h"
#include "dist/nccl.h"
#include "train/analyze.h"
#include "train/config.h"
#include "train/estimate.h"
#include "train/eval.h"
#include "train/export.h"
#include "train/sample.h"
#include "train/trainer.h"

namespace {

constexpr const char* kUsage =
    "usage: remoe <command> [options]\n"
    "\n"
    "commands:\n"
    "  train --config FILE [--section.key=value ...]   train a model (on the CPU for now)\n"
    "        [--print-config] [--dry-run]              print the resolved config / what the run\n"
    "                                                  will cost (parameters, FLOPs, memory), then exit\n"
    "  sample --checkpoint DIR [--prompt TEXT] [--length N] [--temperature T] [--top-k K]\n"
    "         [--seed S]                               generate bytes from a checkpoint (or a\n"
    "                                                  run directory: its newest checkpoint)\n"
    "  eval --checkpoint DIR [--text FILE] [--batches N] [--json] [--dump-logits FILE]\n"
    "                                                  mean cross-entropy (nats and bits per\n"
    "                                                  byte) on fixed windows of FILE (default:\n"
    "                                                  the run's validation split)\n"
    "  export --checkpoint DIR --out DIR2              a Hugging Face folder (Llama or Mixtral\n"
    "                                                  layout, safetensors, README)\n"
    "  analyze --checkpoint DIR --text NAME=PATH [--text NAME=PATH ...]\n"
    "          [--train-text FILE] [--compare DIR2] [--tokens N] [--batch-size B] [--out FILE]\n"
    "                                                  routing statistics as JSON: active experts\n"
    "                                                  by token frequency, per-layer sparsity,\n"
    "                                                  expert usage per text, flip rate against\n"
    "                                                  DIR2 (train/README.md, \"Analysis\")\n"
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
  bool print_config = false, dry_run = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--config") {
      REMOE_CHECK(i + 1 < args.size(), "--config needs a file");
      config_path = args[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      config_path = a.substr(9);
    } else if (a == "--print-config") {
      print_config = true;
    } else if (a == "--dry-run") {
      dry_run = true;
    } else if (a.rfind("--", 0) == 0 && a.find('=') == std::string::npos && i + 1 < args.size() &&
               args[i + 1].rfind("--", 0) != 0) {
      overrides.push_back(a + "=" + args[++i]);  // Megatron style: --flag value
    } else {
      overrides.push_back(a);
    }
  }
  REMOE_CHECK(!config_path.empty(), "--config FILE is required (e.g. configs/tiny.toml)");
  const remoe::train::TrainConfig config = remoe::train::load_config(config_path, overrides);
  if (print_config) std::printf("%s", remoe::train::to_toml(config).c_str());
  if (dry_run)
    std::printf("%s", remoe::train::describe_estimate(config, remoe::train::estimate_run(config)).c_str());
  if (print_config || dry_run) return 0;
  // Started by torchrun, mpirun or srun with several ranks: one GPU per process, the ranks
  // joined by NCCL (dist/README.md says how to launch). The communicator comes first: it
  // selects this rank's GPU before anything touches one.
  const remoe::dist::LaunchInfo launch = remoe::dist::launch_info(remoe::dist::process_env());
  config.validate_world(launch.world_size);
  std::unique_ptr<remoe::dist::Communicator> comm;
  if (launch.world_size > 1) {
    REMOE_CHECK(remoe::dist::nccl_built(), "this process is rank ", launch.rank, " of ",
                launch.world_size, " (started by ", launch.launcher, "): training over several ",
                "processes runs on GPUs over NCCL, and this remoe was built without NCCL ",
                "(configure with -Dnccl=enabled where nccl.h and libnccl are found)");
    REMOE_CHECK(config.device != remoe::train::DeviceChoice::cpu, "this process is rank ",
                launch.rank, " of ", launch.world_size, " (started by ", launch.launcher,
                "): several processes train on one GPU each, but train.device = \"cpu\"");
    comm = remoe::dist::nccl_communicator(launch);
  }
  const remoe::train::RunResult result =
      comm ? remoe::train::run_training(config, *comm) : remoe::train::run_training(config);
  // Stopped by SIGINT/SIGTERM with a checkpoint saved (run_training said so): the shell's
  // convention for a signal, 128 + its number (130, 143), so that `remoe train && next` does
  // not go on with an unfinished run.
  if (result.interrupted_by != 0) return 128 + result.interrupted_by;
  if (result.already_complete) return 0;
  std::printf("done: final validation loss %.4f nats/byte\n", result.final_val_loss);
  return 0;
}

// `--name VALUE` or `--name=VALUE` into (name, value); `flags` take no value.
using Options = std::vector<std::pair<std::string, std::string>>;
Options parse_options(const std::vector<std::string>& args, const std::vector<std::string>& flags) {
  Options out;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i], value;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (std::find(flags.begin(), flags.end(), name) == flags.end()) {
      REMOE_CHECK(i + 1 < args.size(), name, " needs a value");
      value = args[++i];
    }
    out.emplace_back(name, value);
  }
  return out;
}

// The whole of `value` as a number of out's type, or an error naming the option.
template <typename T>
void parse_number(const std::string& name, const std::string& value, T& out) {
  size_t used = 0;
  try {
    if constexpr (std::is_floating_point_v<T>)
      out = T(std::stod(value, &used));
    else
      out = T(std::stoll(value, &used));
  } catch (const std::exception&) {
    used = 0;
  }
  REMOE_CHECK(used == value.size() && !value.empty(), name, " expects a number, got '", value, "'");
}

int sample(const std::vector<std::string>& args) {
  std::string checkpoint;
  remoe::train::SampleOptions o;
  for (const auto& [name, value] : parse_options(args, {})) {
    if (name == "--checkpoint") checkpoint = value;
    else if (name == "--prompt") o.prompt = value;
    else if (name == "--length") parse_number(name, value, o.length);
    else if (name == "--temperature") parse_number(name, value, o.temperature);
    else if (name == "--top-k") parse_number(name, value, o.top_k);
    else if (name == "--seed") parse_number(name, value, o.seed);
    else REMOE_FAIL("unknown option ", name, " (see remoe --help)");
  }
  REMOE_CHECK(!checkpoint.empty(), "--checkpoint DIR is required (a run directory works)");
  const std::string text = remoe::train::sample_text(checkpoint, o);
  std::printf("%s%s\n", o.prompt.c_str(), text.c_str());
  return 0;
}

int eval(const std::vector<std::string>& args) {
  std::string checkpoint;
  bool json = false;
  remoe::train::EvalOptions o;
  for (const auto& [name, value] : parse_options(args, {"--json"})) {
    if (name == "--checkpoint") checkpoint = value;
    else if (name == "--text") o.text = value;
    else if (name == "--dump-logits") o.dump_logits = value;
    else if (name == "--json") json = true;
    else if (name == "--batches") {
      parse_number(name, value, o.batches);
      REMOE_CHECK(o.batches >= 1, "--batches expects a positive integer, got '", value, "'");
    } else REMOE_FAIL("unknown option ", name, " (see remoe --help)");
  }
  REMOE_CHECK(!checkpoint.empty(), "--checkpoint DIR is required (a run directory works)");
  const remoe::train::EvalResult r = remoe::train::evaluate_checkpoint(checkpoint, o);
  std::printf("%s\n", json ? r.to_json().dump().c_str() : r.line().c_str());
  return 0;
}

int export_hf(const std::vector<std::string>& args) {
  std::string checkpoint, out;
  for (const auto& [name, value] : parse_options(args, {})) {
    if (name == "--checkpoint") checkpoint = value;
    else if (name == "--out") out = value;
    else REMOE_FAIL("unknown option ", name, " (see remoe --help)");
  }
  REMOE_CHECK(!checkpoint.empty(), "--checkpoint DIR is required (a run directory works)");
  REMOE_CHECK(!out.empty(), "--out DIR is required (the Hugging Face folder to write)");
  const remoe::train::ExportResult r = remoe::train::export_hf(checkpoint, out);
  // The warnings go to stderr: the export is written, but transformers will not run remoe's
  // forward as is.
  for (const std::string& w : r.warnings)
    std::fprintf(stderr, "remoe export: warning: %s\n", w.c_str());
  std::printf("exported %s (%lld tensors, %s) to %s\n", r.checkpoint.c_str(),
              (long long)r.n_tensors, r.architecture.c_str(), r.out_dir.c_str());
  return 0;
}

int analyze(const std::vector<std::string>& args) {
  std::string checkpoint, out;
  remoe::train::AnalyzeOptions o;
  for (const auto& [name, value] : parse_options(args, {})) {
    if (name == "--checkpoint") checkpoint = value;
    else if (name == "--text") o.texts.push_back(remoe::train::parse_analyze_text(value));
    else if (name == "--train-text") o.train_text = value;
    else if (name == "--compare") o.compare = value;
    else if (name == "--out") out = value;
    else if (name == "--tokens") {
      parse_number(name, value, o.tokens);
      REMOE_CHECK(o.tokens >= 1, "--tokens expects a positive integer, got '", value, "'");
    } else if (name == "--batch-size") {
      parse_number(name, value, o.batch_size);
      REMOE_CHECK(o.batch_size >= 1, "--batch-size expects a positive integer, got '", value, "'");
    } else REMOE_FAIL("unknown option ", name, " (see remoe --help)");
  }
  REMOE_CHECK(!checkpoint.empty(), "--checkpoint DIR is required (a run directory works)");
  REMOE_CHECK(!o.texts.empty(), "--text NAME=PATH is required (repeat it for several texts)");
  const std::string json = remoe::train::analyze_checkpoint(checkpoint, o).dump(1) + "\n";
  if (out.empty()) {
    std::fputs(json.c_str(), stdout);
    return 0;
  }
  {
    std::ofstream f(out, std::ios::trunc);
    REMOE_CHECK(f, "--out: cannot write ", out);
    f << json;
    f.close();
    REMOE_CHECK(f, "--out: writing ", out, " failed");
  }
  std::printf("analyze: wrote %s\n", out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    if (argc >= 2) std::printf("\n%s", remoe::train::options_help().c_str());
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  const std::vector<std::string> rest(argv + 2, argv + argc);
  try {
    if (cmd == "info") return info();
    if (cmd == "train") return train(rest);
    if (cmd == "sample") return sample(rest);
    if (cmd == "eval") return eval(rest);
    if (cmd == "export") return export_hf(rest);
    if (cmd == "analyze") return analyze(rest);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "remoe %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
  std::fprintf(stderr, "remoe: unknown command '%s'\n%s", cmd.c_str(), kUsage);
  return 2;
}
