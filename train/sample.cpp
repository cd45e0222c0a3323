#include "train/sample.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autodiff/tape.h"
#include "train/eval.h"

namespace remoe::train {

std::string sample_text(const std::string& path, const SampleOptions& o) {
  REMOE_CHECK(o.temperature > 0, "sample: temperature must be positive, got ", o.temperature);
  REMOE_CHECK(o.top_k >= 0 && o.top_k <= 256, "sample: top_k must be in [0, 256], got ", o.top_k);
  REMOE_CHECK(o.length >= 0, "sample: length must be non-negative, got ", o.length);
  REMOE_CHECK(!o.prompt.empty(), "sample: the prompt must not be empty");
  const CheckpointModel m = load_checkpoint_model(path);
  const TrainConfig& config = m.config;
  REMOE_CHECK(config.model.vocab_size == 256, "sample: ", m.dir, " holds a model with vocabulary ",
              config.model.vocab_size, "; sampling writes bytes (256)");
  const model::Transformer& model = m.model;

  NoGradGuard no_grad;
  Rng rng(o.seed);
  std::vector<int32_t> context(o.prompt.begin(), o.prompt.end());
  for (int32_t& b : context) b &= 0xff;  // bytes ≥ 128 arrive as negative chars
  std::string out;
  for (int64_t i = 0; i < o.length; ++i) {
    const int64_t n = std::min<int64_t>(int64_t(context.size()), config.seq_len);
    const std::vector<int32_t> window(context.end() - n, context.end());
    const model::ForwardOutput f =
        model.forward(Tensor::from_vector<int32_t>({n}, window).to(model.device()), 1, n, 0.0);
    const std::vector<float> logits = f.logits.to_vector<float>();
    const float* last = logits.data() + (n - 1) * 256;

    std::vector<int> order(256);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return last[a] > last[b]; });
    const int keep = o.top_k > 0 ? int(o.top_k) : 256;
    std::vector<double> p(static_cast<size_t>(keep));
    double sum = 0;
    for (int j = 0; j < keep; ++j) sum += p[size_t(j)] = std::exp((last[order[size_t(j)]] - last[order[0]]) / o.temperature);
    double u = rng.uniform() * sum;
    int pick = keep - 1;
    for (int j = 0; j < keep; ++j)
      if ((u -= p[size_t(j)]) < 0) {
        pick = j;
        break;
      }
    const int32_t byte = order[size_t(pick)];
    context.push_back(byte);
    out.push_back(char(byte));
  }
  return out;
}

}  // namespace remoe::train
