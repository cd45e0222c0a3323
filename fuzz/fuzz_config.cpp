// parse_config on arbitrary text with arbitrary overrides. The input is split at NUL bytes (which
// TOML text cannot hold): the first part is the config file, up to kMaxOverrides more parts are
// command-line overrides. A config that parses must be usable: the quantities the trainer derives
// from it compute without overflow, and to_toml writes it back as text that parses to the same
// config (a checkpoint's state.json stores it that way and `remoe sample` parses it again).
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "kernels/check.h"
#include "train/config.h"

namespace {

constexpr size_t kMaxOverrides = 4;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace remoe;
  const auto parts = fuzz::split_at_nul(fuzz::as_text(data, size), 1 + kMaxOverrides);
  const std::vector<std::string> overrides(parts.begin() + 1, parts.end());
  train::TrainConfig config;
  try {
    config = train::parse_config(parts[0], "fuzz.toml", overrides);
  } catch (const Error&) {
    return 0;  // refused, as hostile input should be
  }

  // What the trainer and the model compute from any valid config before allocating anything
  // (UBSan reports a signed overflow here).
  const model::ModelConfig& m = config.model;
  volatile double derived = m.target_sparsity() + double(m.experts()) +
                            double(m.active_experts()) + double(m.expert_d_ffn()) +
                            double(m.head_dim());
  (void)derived;

  const std::string text = train::to_toml(config);
  train::TrainConfig back;
  try {
    back = train::parse_config(text, "to_toml output", {});
  } catch (const Error& e) {
    fuzz::finding(std::string("to_toml wrote a config that does not parse back: ") + e.what() +
                  "\n" + text);
  }
  if (train::to_toml(back) != text)
    fuzz::finding("to_toml output parses to another config:\n" + text + "\nthen\n" +
                  train::to_toml(back));
  return 0;
}
