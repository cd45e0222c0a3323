#include <cmath>

#include "tests/test_util.h"
#include "train/schedule.h"

namespace remoe::test {
namespace {

TEST(LambdaController, FollowsTheHandComputedTrajectory) {
  // target 0.875 (E = 8, k = 1): dense steps multiply by α, sparse ones (and a tie) divide.
  train::LambdaController c{1e-8, 1.2, 0.875};
  const double sparsity[] = {0.0, 0.5, 0.874, 0.875, 0.9, 0.1};
  const double expected[] = {1.2e-8, 1.44e-8, 1.728e-8, 1.44e-8, 1.2e-8, 1.44e-8};
  for (int i = 0; i < 6; ++i) {
    c.update(sparsity[i]);
    EXPECT_NEAR(c.lambda, expected[i], 1e-22) << "after step " << i + 1;
  }
}

TEST(LearningRate, WarmupThenCosineToMin) {
  train::TrainConfig c;
  c.steps = 110;
  c.warmup_steps = 10;
  c.lr = 1e-3;
  c.min_lr = 1e-4;
  EXPECT_DOUBLE_EQ(train::learning_rate(c, 0), 1e-4);   // 1/10 of the way up
  EXPECT_DOUBLE_EQ(train::learning_rate(c, 9), 1e-3);   // warmup done
  EXPECT_DOUBLE_EQ(train::learning_rate(c, 10), 1e-3);  // cosine starts at the peak
  EXPECT_NEAR(train::learning_rate(c, 109), 1e-4, 1e-18);  // and ends at the floor
  const double mid = train::learning_rate(c, 10 + 99 / 2);
  EXPECT_NEAR(mid, 1e-4 + 0.5 * 9e-4 * (1 + std::cos(M_PI * 49.0 / 99.0)), 1e-15);
  for (int64_t s = 10; s < 109; ++s) EXPECT_GE(train::learning_rate(c, s), train::learning_rate(c, s + 1));
  c.warmup_steps = -1;  // 1% of the steps, at least one
  EXPECT_EQ(train::warmup_steps(c), 1);
  c.steps = 1000;
  EXPECT_EQ(train::warmup_steps(c), 10);
}

}  // namespace
}  // namespace remoe::test
