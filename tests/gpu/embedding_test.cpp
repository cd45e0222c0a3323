// CUDA embedding against the CPU reference, f32 and bf16. The lookup is a copy and the backward
// sums each id's rows in token order in f32 like the CPU, so f32 agrees bit for bit.
// Skips without a visible GPU.
#include <ostream>

#include "kernels/embedding.h"
#include "tests/gpu/inputs.h"

namespace remoe::test {
namespace {

struct EmbShape {
  int64_t tokens, vocab, dim;
  bool one_id;  // every token has the same id: one long run
};
void PrintTo(const EmbShape& s, std::ostream* os) {
  *os << "T" << s.tokens << "_V" << s.vocab << "_d" << s.dim << (s.one_id ? "_one_id" : "");
}

using GpuEmbedding = GpuTestWithParam<EmbShape>;

template <typename T>
void check_embedding(const EmbShape& shape) {
  const auto [n_tokens, vocab, dim, one_id] = shape;
  Rng rng{uint64_t(n_tokens * 7 + vocab)};
  std::vector<int32_t> id_values(static_cast<size_t>(n_tokens));
  for (auto& id : id_values) id = one_id ? int32_t(vocab - 1) : int32_t(rng.below(vocab));
  const Tensor ids = Tensor::from_vector<int32_t>({n_tokens}, id_values);
  const Tensor ids_d = on_gpu(ids);
  const GpuInput table = gpu_input<T>(randn({vocab, dim}, DType::f32, rng));
  const GpuInput dout = gpu_input<T>(randn({n_tokens, dim}, DType::f32, rng));

  Tensor out = cpu_empty({n_tokens, dim}), dtable = cpu_empty({vocab, dim});
  cpu::embedding_forward(out.data<float>(), ids.data<int32_t>(), table.ref.data<float>(), n_tokens, vocab, dim);
  cpu::embedding_backward(dtable.data<float>(), dout.ref.data<float>(), ids.data<int32_t>(), n_tokens, vocab, dim);

  Tensor out_d = gpu_empty<T>({n_tokens, dim});
  // Garbage in dtable first: the kernel must zero the rows no token uses.
  Tensor dtable_d = on_gpu(ops::cast(Tensor::full({vocab, dim}, 3.0, DType::f32), dtype_of<T>()));
  cuda::embedding_forward(dev<T>(out_d), dev<int32_t>(ids_d), dev<T>(table.gpu), n_tokens, vocab, dim, gpu_stream());
  cuda::embedding_backward(dev<T>(dtable_d), dev<T>(dout.gpu), dev<int32_t>(ids_d), n_tokens, vocab, dim,
                           gpu_stream());

  EXPECT_TRUE(all_close(on_cpu(out_d), out, 0, 0)) << "out";  // a copy of (rounded) rows
  // Same f32 sums in the same order; bf16 adds only the final rounding.
  const double rtol = std::is_same_v<T, float> ? 0.0 : kGpuBf16Rtol;
  EXPECT_TRUE(all_close(on_cpu(dtable_d), dtable, 0, rtol)) << "dtable";
}

TEST_P(GpuEmbedding, F32MatchesCpu) { check_embedding<float>(GetParam()); }
TEST_P(GpuEmbedding, Bf16MatchesCpu) { check_embedding<bf16>(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Shapes, GpuEmbedding,
                         ::testing::Values(EmbShape{1, 1, 1, false}, EmbShape{1, 256, 7, false},
                                           EmbShape{100, 5, 33, false},     // many repeats per id
                                           EmbShape{300, 17, 129, true},    // one run of 300 rows
                                           EmbShape{1000, 256, 64, false},  // byte vocabulary
                                           EmbShape{513, 50257, 16, false}));  // most rows unused

}  // namespace
}  // namespace remoe::test
