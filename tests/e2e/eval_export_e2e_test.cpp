// `remoe eval` and `remoe export` through the binary on a short real run: eval's loss is the
// trainer's final validation loss (the same windows), --dump-logits writes one window, export
// writes the folder and warns for ReLU routing; bad input gives one line and a non-zero exit.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"
#include "train/config.h"
#include "train/trainer.h"

namespace remoe::test {
namespace {

namespace fs = std::filesystem;
const char* const kShakespeare = "../shared/data/tinyshakespeare.txt";

std::string temp_path(const std::string& name) {
  const fs::path p = fs::temp_directory_path() /
                     ("remoe_e2e_evalexport_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p.string();
}

struct Outcome {
  int status;
  std::string out, err;
};

Outcome run_remoe(const std::string& args) {
  const std::string out = temp_path("stdout"), err = temp_path("stderr");
  const int status = std::system(
      (std::string(std::getenv("REMOE_BIN")) + " " + args + " > " + out + " 2> " + err).c_str());
  Outcome r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_file(out), read_file(err)};
  fs::remove(out);
  fs::remove(err);
  return r;
}

class EvalExport : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kShakespeare)) GTEST_SKIP() << kShakespeare << " not found";
    if (!std::getenv("REMOE_BIN")) GTEST_SKIP() << "REMOE_BIN not set (run through meson test)";
  }
};

TEST_F(EvalExport, EvalReproducesTheTrainersValidationLossAndExportWrites) {
  train::TrainConfig c;
  c.model.d_model = 32;
  c.model.n_layers = 2;
  c.model.n_heads = 2;
  c.model.n_kv_heads = 1;
  c.model.d_ffn = 64;
  c.model.n_experts = 4;
  c.model.init_std = 0.02;
  c.data_path = kShakespeare;
  c.steps = 4;
  c.batch_size = 4;
  c.seq_len = 32;
  c.lr = 3e-3;
  c.warmup_steps = 1;
  c.eval_every = 0;
  c.eval_batches = 3;
  c.log_every = 100;
  c.run_dir = temp_path("run");
  const train::RunResult result = train::run_training(c);

  const Outcome json = run_remoe("eval --checkpoint " + c.run_dir + " --json");
  ASSERT_EQ(json.status, 0) << json.err;
  const auto j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j.at("loss").get<double>(), result.final_val_loss) << "same windows, same model";
  EXPECT_EQ(j.at("step"), 4);
  EXPECT_EQ(j.at("batches"), 3);
  EXPECT_EQ(j.at("split"), "validation");

  const std::string logits = temp_path("logits.bin");
  const Outcome line =
      run_remoe("eval --checkpoint " + c.run_dir + " --batches=1 --dump-logits " + logits);
  ASSERT_EQ(line.status, 0) << line.err;
  EXPECT_NE(line.out.find("nats/byte"), std::string::npos) << line.out;
  EXPECT_EQ(fs::file_size(logits), uintmax_t(32 * 256 * 4));
  const auto side = nlohmann::json::parse(read_file(logits + ".json"));
  EXPECT_EQ(side.at("input_ids").size(), 32u);
  EXPECT_EQ(side.at("shape"), nlohmann::json::array({32, 256}));

  const std::string hf = temp_path("hf");
  const Outcome exp = run_remoe("export --checkpoint " + c.run_dir + " --out " + hf);
  ASSERT_EQ(exp.status, 0) << exp.err;
  EXPECT_NE(exp.err.find("warning: model.router = \"relu\""), std::string::npos) << exp.err;
  for (const char* f : {"config.json", "model.safetensors", "README.md"})
    EXPECT_TRUE(fs::exists(fs::path(hf) / f)) << f;

  fs::remove_all(c.run_dir);
  fs::remove_all(hf);
  fs::remove(logits);
  fs::remove(logits + ".json");
}

TEST(EvalExportBadInput, OneLineAndANonZeroExit) {
  if (!std::getenv("REMOE_BIN")) GTEST_SKIP() << "REMOE_BIN not set (run through meson test)";
  const std::string missing = temp_path("missing");
  for (const auto& [args, expected] : std::vector<std::pair<std::string, std::string>>{
           {"eval --checkpoint " + missing, missing},
           {"eval", "--checkpoint DIR is required"},
           {"eval --checkpoint x --batches 0", "--batches expects a positive integer"},
           {"eval --checkpoint x --bogus 1", "unknown option --bogus"},
           {"export --checkpoint " + missing + " --out " + missing + "_hf", missing},
           {"export --checkpoint x", "--out DIR is required"}}) {
    const Outcome r = run_remoe(args);
    EXPECT_NE(r.status, 0) << args;
    EXPECT_NE(r.err.find(expected), std::string::npos) << args << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << ": " << r.err;
  }
}

}  // namespace
}  // namespace remoe::test
