// The model's routing state in a checkpoint's state.json (model/routing.h: RouterState): the
// per-layer expert biases of aux-loss-free balancing, as "router_bias": [[b_0, ..., b_E-1], ...]
// per MoE layer (JSON numbers hold f32 and f64 values exactly). Absent when the model has none.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "model/routing.h"

namespace remoe::train {

// An f32 or f64 tensor's values as doubles, read from any device.
std::vector<double> as_doubles(const Tensor& t);

// Adds "router_bias" to `state` when the model has biases.
void save_router_state(nlohmann::json& state, const model::RouterState& router);

// Checks state.json's "router_bias" against the model's biases (layers, experts, finite
// numbers) and only then copies it; `where` names the file in errors. A model without biases
// ignores the field.
void restore_router_state(model::RouterState& router, const nlohmann::json& state,
                          const std::string& where);

}  // namespace remoe::train
