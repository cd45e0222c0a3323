#include "train/router_state.h"

#include <cmath>

#include "kernels/check.h"

namespace remoe::train {

std::vector<double> as_doubles(const Tensor& t) {
  if (t.dtype() == DType::f64) return t.to_vector<double>();
  const auto f = t.to_vector<float>();
  return {f.begin(), f.end()};
}

void save_router_state(nlohmann::json& state, const model::RouterState& router) {
  if (router.bias.empty()) return;
  nlohmann::json layers = nlohmann::json::array();
  for (const Tensor& b : router.bias) layers.push_back(as_doubles(b));
  state["router_bias"] = layers;
}

void restore_router_state(model::RouterState& router, const nlohmann::json& state,
                          const std::string& where) {
  if (router.bias.empty()) return;
  REMOE_CHECK(state.contains("router_bias"), where, ": has no \"router_bias\" (model.expert_bias ",
              "= true keeps a bias per MoE layer in the checkpoint)");
  const nlohmann::json& layers = state["router_bias"];
  const size_t n_layers = router.bias.size();
  const size_t n_experts = size_t(router.bias.front().numel());
  bool ok = layers.is_array() && layers.size() == n_layers;
  for (size_t l = 0; ok && l < n_layers; ++l) {
    ok = layers[l].is_array() && layers[l].size() == n_experts;
    for (size_t e = 0; ok && e < n_experts; ++e)
      ok = layers[l][e].is_number() && std::isfinite(layers[l][e].get<double>());
  }
  REMOE_CHECK(ok, where, ": \"router_bias\" must hold ", n_layers, " arrays of ", n_experts,
              " finite numbers (one per MoE layer and expert)");
  for (size_t l = 0; l < n_layers; ++l) {
    Tensor& b = router.bias[l];
    for (size_t e = 0; e < n_experts; ++e) {
      const double v = layers[l][e].get<double>();
      if (b.dtype() == DType::f64) b.data<double>()[e] = v;
      else b.data<float>()[e] = float(v);
    }
  }
}

}  // namespace remoe::train
