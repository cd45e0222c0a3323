#include "autodiff/device.h"
#include "tests/test_util.h"

namespace remoe::test {
namespace {

TEST(Tensor, ShapeDtypeAndSizes) {
  const Tensor t = Tensor::zeros({2, 3, 4}, DType::f32);
  EXPECT_EQ(t.ndim(), 3);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.dim(-1), 4);
  EXPECT_EQ(t.dim(0), 2);
  EXPECT_EQ(t.nbytes(), 96u);
  EXPECT_EQ(shape_str(t.shape()), "(2, 3, 4)");
  EXPECT_EQ(shape_str(Tensor::zeros({}, DType::f64).shape()), "()");
  EXPECT_EQ(Tensor::zeros({}, DType::f64).numel(), 1);
  EXPECT_EQ(dtype_size(DType::bf16), 2u);
  EXPECT_EQ(dtype_size(DType::f64), 8u);
  for (double v : values(t)) EXPECT_EQ(v, 0.0);
  EXPECT_NE(error_of([&] { t.dim(3); }).find("(2, 3, 4)"), std::string::npos);
}

TEST(Tensor, FromVectorRoundTripAndItem) {
  const Tensor t = Tensor::from_vector<int32_t>({2, 2}, {1, -2, 3, 4});
  EXPECT_EQ(t.dtype(), DType::i32);
  EXPECT_EQ(t.to_vector<int32_t>(), (std::vector<int32_t>{1, -2, 3, 4}));
  EXPECT_EQ(Tensor::full({}, 2.5, DType::f64).item(), 2.5);
  EXPECT_EQ(Tensor::full({1}, 7, DType::i32).item(), 7.0);
  EXPECT_NE(error_of([&] { t.item(); }).find("4 elements"), std::string::npos);
  EXPECT_NE(error_of([] { Tensor::from_vector<float>({3}, {1.f, 2.f}); }).find("2 values"),
            std::string::npos);
  EXPECT_NE(error_of([] { Tensor::zeros({2, -1}, DType::f32); }).find("negative"), std::string::npos);
}

TEST(Tensor, TypedAccessChecksDtype) {
  const Tensor t = Tensor::zeros({3}, DType::f32);
  const std::string msg = error_of([&] { t.data<double>(); });
  EXPECT_NE(msg.find("f32"), std::string::npos) << msg;
  EXPECT_NE(msg.find("f64"), std::string::npos) << msg;
  EXPECT_NE(error_of([] { Tensor().shape(); }).find("undefined"), std::string::npos);
}

TEST(Tensor, CopiesShareCloneDoesNot) {
  Tensor a = Tensor::full({4}, 1.0, DType::f64);
  Tensor alias = a;
  const Tensor copy = a.clone();
  a.data<double>()[0] = 5;
  EXPECT_EQ(alias.data<double>()[0], 5);
  EXPECT_EQ(copy.data<double>()[0], 1);
  EXPECT_TRUE(alias.same_storage(a));
  EXPECT_FALSE(copy.same_storage(a));
}

TEST(Tensor, ReshapeIsAViewAndChecksCount) {
  const Tensor a = Tensor::from_vector<double>({2, 3}, {0, 1, 2, 3, 4, 5});
  const Tensor v = ops::reshape(a, {3, 2});
  EXPECT_TRUE(v.same_storage(a));
  EXPECT_EQ(v.shape(), (Shape{3, 2}));
  a.data<double>()[5] = 9;
  EXPECT_EQ(v.data<double>()[5], 9);
  EXPECT_NE(error_of([&] { ops::reshape(a, {4, 2}); }).find("(2, 3)"), std::string::npos);
}

TEST(Tensor, Bf16RoundsToNearestEven) {
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f)), 1.0f);
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 0x1p-8f)), 1.0f);
  // 1 + 3·2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 3 * 0x1p-8f)), 1.0f + 0x1p-6f);
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 0x1p-8f + 0x1p-12f)), 1.0f + 0x1p-7f);
  EXPECT_EQ(bf16_to_float(float_to_bf16(-2.5f)), -2.5f);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
  EXPECT_TRUE(std::isinf(bf16_to_float(float_to_bf16(INFINITY))));
}

TEST(Tensor, CastRoundTripsAndCarriesGradient) {
  Rng rng(7);
  const Tensor x = param({5, 3}, rng, "x");
  const Tensor b = ops::cast(x, DType::bf16);
  EXPECT_EQ(b.dtype(), DType::bf16);
  const Tensor back = ops::cast(b, DType::f64);
  EXPECT_TRUE(all_close(back, x, 1e-30, 1.0 / 256));  // bf16 keeps 8 significant bits
  const Tensor seed = randn({5, 3}, DType::f64, rng);
  backward(back, seed);
  // d(cast)/dx is the identity, up to the bf16 rounding of the gradient on the way back.
  EXPECT_TRUE(all_close(x.grad(), seed, 1e-30, 1.0 / 256));
  EXPECT_NE(error_of([&] { ops::cast(Tensor::zeros({2}, DType::i32), DType::f32); }).find("i32"),
            std::string::npos);
}

// prefix_view: the first elements of a buffer sized for the worst case (permute on the GPU).
TEST(Tensor, PrefixViewSharesTheFrontOfTheStorage) {
  const Tensor a = Tensor::from_vector<int32_t>({6}, {0, 1, 2, 3, 4, 5});
  const Tensor p = prefix_view(a, {2, 2});
  EXPECT_TRUE(p.same_storage(a));
  EXPECT_EQ(p.to_vector<int32_t>(), (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(prefix_view(a, {0}).numel(), 0);
  expect_contains(error_of([&] { prefix_view(a, {7}); }), "more than (6) holds");
}

// move_to: in place, so every handle follows (the model's parameters, held twice); refused
// once a gradient exists; a no-op to the device it is on.
TEST(Tensor, MoveToIsInPlaceAndRefusedWithAGradient) {
  Tensor a = Tensor::from_vector<float>({3}, {1, 2, 3});
  const Tensor handle = a;
  a.move_to(Device::cpu);
  EXPECT_TRUE(handle.same_storage(a));
  a.set_requires_grad(true).set_name("w");
  a.set_grad(Tensor::zeros({3}, DType::f32));
  const std::string msg = error_of([&] { a.move_to(Device::cuda); });
  expect_contains(msg, "'w'");
  expect_contains(msg, "has a gradient");
  if (device::cuda_available()) {
    a.zero_grad();
    a.move_to(Device::cuda);
    EXPECT_EQ(handle.device(), Device::cuda);
    EXPECT_EQ(handle.to_vector<float>(), (std::vector<float>{1, 2, 3}));
  }
}

TEST(Tensor, GpuTensorsFailClearlyWithoutADevice) {
  if (device::cuda_available()) GTEST_SKIP() << "a GPU is visible";
  const std::string msg = error_of([] { Tensor::zeros({2}, DType::f32, Device::cuda); });
  EXPECT_FALSE(msg.empty());
  EXPECT_TRUE(msg.find("CUDA") != std::string::npos || msg.find("cuda") != std::string::npos) << msg;
}

TEST(Rng, DeterministicAndRestorable) {
  Rng a(42), b(42), c(43);
  EXPECT_EQ(a.next_u64(), b.next_u64());
  EXPECT_NE(a.next_u64(), c.next_u64());
  const auto saved = a.state();
  const double x = a.normal(), y = a.uniform();
  a.set_state(saved);
  EXPECT_EQ(a.normal(), x);
  EXPECT_EQ(a.uniform(), y);
}

TEST(Rng, NormalHasUnitMomentsAndBelowStaysInRange) {
  Rng rng(5);
  double sum = 0, sum_sq = 0;
  constexpr int kN = 200000;
  for (int i = 0; i < kN; ++i) {
    const double z = rng.normal();
    sum += z;
    sum_sq += z * z;
  }
  EXPECT_NEAR(sum / kN, 0.0, 0.01);  // standard error 1/sqrt(kN) ≈ 0.0022
  EXPECT_NEAR(sum_sq / kN, 1.0, 0.02);
  for (int i = 0; i < 1000; ++i) {
    const int64_t v = rng.below(7);
    EXPECT_GE(v, 0);
    EXPECT_LT(v, 7);
  }
  const Tensor t = rand_uniform({1000}, DType::f32, rng, -2, 3);
  for (double v : values(t)) {
    EXPECT_GE(v, -2);
    EXPECT_LT(v, 3);
  }
}

}  // namespace
}  // namespace remoe::test
