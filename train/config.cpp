#include "train/config.h"

#include "autodiff/device.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <sstream>
#include <type_traits>
#include <variant>

#include <toml++/toml.h>

#include "kernels/check.h"

namespace remoe::train {
namespace {

using model::FfnKind;
using model::L1Kind;
using model::ModelConfig;
using model::DropPolicy;
using model::RouterKind;

// Names of each enum's values, in declaration order (the index is the enum's value).
constexpr std::array<std::string_view, 2> kFfnNames{"dense", "moe"};
constexpr std::array<std::string_view, 4> kRouterNames{"relu", "topk", "expert_choice", "hash"};
constexpr std::array<std::string_view, 2> kDropPolicyNames{"probs", "position"};
constexpr std::array<std::string_view, 2> kL1Names{"load_balanced", "plain"};
constexpr std::array<std::string_view, 3> kDataFormatNames{"text", "llmc", "megatron"};
constexpr std::array<std::string_view, 3> kDeviceNames{"auto", "cpu", "cuda"};
constexpr std::array<std::string_view, 3> kPrecisionNames{"auto", "f32", "bf16"};

std::span<const std::string_view> names(FfnKind) { return kFfnNames; }
std::span<const std::string_view> names(RouterKind) { return kRouterNames; }
std::span<const std::string_view> names(L1Kind) { return kL1Names; }
std::span<const std::string_view> names(DropPolicy) { return kDropPolicyNames; }
std::span<const std::string_view> names(DataFormat) { return kDataFormatNames; }
std::span<const std::string_view> names(DeviceChoice) { return kDeviceNames; }
std::span<const std::string_view> names(PrecisionChoice) { return kPrecisionNames; }

enum class Type { integer, unsigned_integer, floating, boolean, string, choice };

// An option's value on its way in or out of a TrainConfig; a choice travels as its name.
using Value = std::variant<int64_t, double, bool, std::string>;

struct Option {
  std::string_view key;  // "section.name"
  Type type;
  std::span<const std::string_view> choices;  // Type::choice only
  std::string_view description;
  Value (*get)(const TrainConfig&);
  void (*set)(TrainConfig&, const Value&);  // the value already has the option's type

  std::string_view section() const { return key.substr(0, key.find('.')); }
  std::string_view name() const { return key.substr(key.find('.') + 1); }
};

// The field a chain of member pointers reaches: field<&TrainConfig::model, &ModelConfig::d_model>.
template <auto... Path, typename Config>
auto& field(Config& config) {
  return (config .* ... .* Path);
}

template <auto... Path>
Option option(std::string_view key, std::string_view description) {
  using T = std::remove_cvref_t<decltype(field<Path...>(std::declval<TrainConfig&>()))>;
  Option o{key, Type::string, {}, description, nullptr, nullptr};
  if constexpr (std::is_enum_v<T>) {
    o.type = Type::choice;
    o.choices = names(T{});
  } else if constexpr (std::is_same_v<T, bool>) {
    o.type = Type::boolean;
  } else if constexpr (std::is_integral_v<T>) {
    static_assert(sizeof(T) == 8);
    o.type = std::is_unsigned_v<T> ? Type::unsigned_integer : Type::integer;
  } else if constexpr (std::is_same_v<T, double>) {
    o.type = Type::floating;
  } else {
    static_assert(std::is_same_v<T, std::string>);
  }
  o.get = [](const TrainConfig& c) -> Value {
    const T& f = field<Path...>(c);
    if constexpr (std::is_enum_v<T>)
      return std::string(names(T{})[static_cast<size_t>(f)]);
    else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
      return static_cast<int64_t>(f);
    else
      return f;
  };
  o.set = [](TrainConfig& c, const Value& v) {
    T& f = field<Path...>(c);
    if constexpr (std::is_enum_v<T>) {
      const auto all = names(T{});
      const auto it = std::find(all.begin(), all.end(), std::get<std::string>(v));
      f = static_cast<T>(it - all.begin());
    } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      f = static_cast<T>(std::get<int64_t>(v));
    } else {
      f = std::get<T>(v);
    }
  };
  return o;
}

using C = TrainConfig;
using M = ModelConfig;

// The one option table. Parsing, overrides, to_toml and options_help are all generated from it;
// each section's keys are contiguous.
const std::vector<Option>& options() {
  static const std::vector<Option> table = {
      option<&C::model, &M::vocab_size>("model.vocab_size", "vocabulary size (bytes: 256)"),
      option<&C::model, &M::d_model>("model.d_model", "width of the residual stream"),
      option<&C::model, &M::n_layers>("model.n_layers", "number of decoder blocks"),
      option<&C::model, &M::n_heads>("model.n_heads", "query heads per attention layer"),
      option<&C::model, &M::n_kv_heads>("model.n_kv_heads",
                                        "key/value heads (grouped-query attention)"),
      option<&C::model, &M::d_ffn>("model.d_ffn", "SwiGLU intermediate size of the dense FFN"),
      option<&C::model, &M::norm_eps>("model.norm_eps", "RMSNorm epsilon"),
      option<&C::model, &M::rope_base>("model.rope_base", "RoPE base frequency"),
      option<&C::model, &M::init_std>("model.init_std", "std of the normal weight init"),
      option<&C::model, &M::ffn>("model.ffn", "feed-forward kind: dense or mixture of experts"),
      option<&C::model, &M::router>("model.router",
                                    "MoE router: ReLU (ReMoE), TopK softmax, expert choice "
                                    "(not causal), hash of the token id"),
      option<&C::model, &M::n_experts>("model.n_experts", "experts E before granularity"),
      option<&C::model, &M::top_k>("model.top_k", "active experts k before granularity"),
      option<&C::model, &M::granularity>("model.granularity",
                                         "G: E <- E*G, k <- k*G, expert d_ffn <- d_ffn/G"),
      option<&C::model, &M::l1>("model.l1", "ReLU routing's L1 regulariser"),
      option<&C::model, &M::aux_coeff>("model.aux_coeff", "TopK load-balancing loss coefficient"),
      option<&C::model, &M::renormalize>(
          "model.renormalize", "TopK: divide the k gates by their sum (= softmax after top-k)"),
      option<&C::model, &M::capacity_factor>(
          "model.capacity_factor",
          "TopK: experts keep ceil(T*k/E*factor) tokens, the rest dropped; 0: dropless. "
          "expert_choice: its C (0: factor 1)"),
      option<&C::model, &M::drop_policy>("model.drop_policy",
                                         "which tokens an over-full expert keeps (capacity_factor)"),
      option<&C::model, &M::z_loss_coeff>("model.z_loss_coeff",
                                          "router z-loss coefficient (ST-MoE); 0: off"),
      option<&C::model, &M::expert_bias>(
          "model.expert_bias", "TopK: aux-loss-free balancing bias on the selection (DeepSeek-V3)"),
      option<&C::model, &M::bias_update_rate>("model.bias_update_rate",
                                              "step of the expert bias update per optimizer step"),
      option<&C::model, &M::k_warm>("model.k_warm",
                                    "TopK: experts per token during the warm-up; 0: no warm-up"),
      option<&C::model, &M::warm_steps>("model.warm_steps",
                                        "TopK: steps routed with k_warm experts"),

      option<&C::data_path>("data.path",
                            "training data: text file, llm.c shards (glob), Megatron prefix"),
      option<&C::val_fraction>("data.val_fraction",
                               "last fraction of the tokens for validation (without val_path)"),
      option<&C::data_format>("data.format",
                              "text (bytes), llmc (llm.c shards, path may be a glob) or megatron"),
      option<&C::val_path>("data.val_path",
                           "validation data in the same format (optional; else val_fraction)"),
      option<&C::within_documents>("data.within_documents",
                                   "windows never cross a document boundary (megatron only)"),

      option<&C::seed>("train.seed", "random seed (init and data sampling)"),
      option<&C::steps>("train.steps", "optimizer steps"),
      option<&C::batch_size>("train.batch_size", "sequences per micro-batch"),
      option<&C::seq_len>("train.seq_len", "tokens per sequence"),
      option<&C::grad_accum>("train.grad_accum", "micro-batches per optimizer step"),
      option<&C::device>("train.device",
                         "where to compute: auto (the GPU when there is one), cpu or cuda"),
      option<&C::precision>("train.precision",
                            "bf16 GEMMs (f32 master weights and the rest) or all f32; auto: "
                            "bf16 on the GPU, f32 on the CPU"),
      option<&C::max_skips>("train.max_skips",
                            "non-finite steps in a row (skipped) before the run stops"),

      option<&C::lr>("optim.lr", "peak learning rate (AdamW)"),
      option<&C::min_lr>("optim.min_lr", "learning rate at the end of the cosine decay"),
      option<&C::warmup_steps>("optim.warmup_steps", "linear warmup steps; -1: 1% of steps"),
      option<&C::weight_decay>("optim.weight_decay", "AdamW weight decay (not on 1-D params)"),
      option<&C::beta1>("optim.beta1", "AdamW beta1"),
      option<&C::beta2>("optim.beta2", "AdamW beta2"),
      option<&C::eps>("optim.eps", "AdamW epsilon"),
      option<&C::grad_clip>("optim.grad_clip", "max global gradient norm; 0 disables clipping"),

      option<&C::lambda0>("remoe.lambda0", "initial L1 coefficient lambda"),
      option<&C::alpha>("remoe.alpha", "lambda's multiplicative step (> 1)"),

      option<&C::eval_every>("eval.every", "steps between validation passes; 0: only at the end"),
      option<&C::eval_batches>("eval.batches", "micro-batches per validation pass"),

      option<&C::checkpoint_every>("checkpoint.every",
                                   "steps between checkpoints; 0: only at the end"),
      option<&C::keep_last>("checkpoint.keep_last", "newest complete checkpoints kept (>= 1)"),
      option<&C::keep_every>("checkpoint.keep_every",
                             "also keep checkpoints of steps that are multiples of it; 0: none"),

      option<&C::expert_parallel>("dist.expert_parallel",
                                  "ranks sharing one copy of the experts (E / it experts each)"),
      option<&C::bucket_mb>("dist.bucket_mb", "MiB of gradients all-reduced at once (data parallel)"),
      option<&C::zero1>("dist.zero1", "shard AdamW's moments over the ranks that share their parameters (ZeRO-1)"),

      option<&C::run_dir>("log.run_dir", "output directory (metrics, config, checkpoints)"),
      option<&C::log_every>("log.every", "steps between console lines"),
      option<&C::tensorboard>("log.tensorboard",
                              "also write each step's scalars as TensorBoard events to run_dir/tb"),
  };
  return table;
}

const Option* find_option(std::string_view key) {
  for (const Option& o : options())
    if (o.key == key) return &o;
  return nullptr;
}

bool known_section(std::string_view section) {
  return std::any_of(options().begin(), options().end(),
                     [&](const Option& o) { return o.section() == section; });
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diag = up;
    }
  }
  return row[b.size()];
}

bool close_enough(size_t distance, std::string_view name) {
  return distance <= std::max<size_t>(2, name.size() / 3);
}

// "unknown section [x]" followed by the nearest section, or else the list of sections.
std::string unknown_section(std::string_view section) {
  std::string_view best;
  size_t best_d = std::numeric_limits<size_t>::max();
  std::string sections;
  for (const Option& o : options()) {
    if (sections.find(str_cat("[", o.section(), "]")) != std::string::npos) continue;
    sections += str_cat(sections.empty() ? "" : " ", "[", o.section(), "]");
    const size_t d = edit_distance(section, o.section());
    if (d < best_d) best_d = d, best = o.section();
  }
  if (section.empty()) return str_cat("options belong to a section (", sections, ")");
  const std::string msg = str_cat("unknown section [", section, "]");
  if (close_enough(best_d, section)) return str_cat(msg, " (did you mean [", best, "]?)");
  return str_cat(msg, " (sections: ", sections, ")");
}

// "unknown key 'x'" followed by the nearest key, or else what is there to choose from.
std::string unknown_key(std::string_view key) {
  const bool dotted = key.find('.') != std::string_view::npos;
  const Option* best = nullptr;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const Option& o : options()) {
    // A bare name (outside any section) is also compared with the option's own name.
    const size_t d = dotted ? edit_distance(key, o.key)
                            : std::min(edit_distance(key, o.key), edit_distance(key, o.name()));
    if (d < best_d) best_d = d, best = &o;
  }
  std::string msg = str_cat("unknown key '", key, "'");
  if (best && close_enough(best_d, key)) return str_cat(msg, " (did you mean '", best->key, "'?)");
  const std::string_view section = key.substr(0, key.find('.'));
  if (dotted && known_section(section)) {
    msg += str_cat(" (keys of [", section, "]:");
    for (const Option& o : options())
      if (o.section() == section) msg += str_cat(" ", o.name());
    return msg + ")";
  }
  return str_cat(msg, ": ", unknown_section(dotted ? section : ""));
}

std::string expected(const Option& o) {
  switch (o.type) {
    case Type::integer: return "an integer";
    case Type::unsigned_integer: return "a non-negative integer";
    case Type::floating: return "a number";
    case Type::boolean: return "a boolean (true or false)";
    case Type::string: return "a string";
    case Type::choice: {
      std::string s = "one of";
      for (size_t i = 0; i < o.choices.size(); ++i)
        s += str_cat(i ? ", \"" : " \"", o.choices[i], "\"");
      return s;
    }
  }
  return "";
}

std::string type_label(const Option& o) {
  switch (o.type) {
    case Type::integer:
    case Type::unsigned_integer: return "INT";
    case Type::floating: return "FLOAT";
    case Type::boolean: return "BOOL";
    case Type::string: return "STRING";
    case Type::choice: {
      std::string s;
      for (std::string_view c : o.choices) s += str_cat(s.empty() ? "" : "|", c);
      return s;
    }
  }
  return "";
}

std::string_view node_kind(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "nothing";
  }
}

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          std::array<char, 8> buf;
          std::snprintf(buf.data(), buf.size(), "\\u%04x", c);
          out += buf.data();
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

std::string render(const toml::node& n) {
  if (const auto* s = n.as_string()) return quote(s->get());
  std::ostringstream os;
  n.visit([&](const auto& x) { os << x; });
  std::string s = os.str();
  std::replace(s.begin(), s.end(), '\n', ' ');
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

Value from_node(const Option& o, const toml::node& n, std::string_view source) {
  switch (o.type) {
    case Type::integer:
    case Type::unsigned_integer:
      if (const auto* v = n.as_integer()) {
        if (o.type == Type::unsigned_integer && v->get() < 0)
          REMOE_FAIL(source, ": ", o.key, " = ", v->get(), ": expected ", expected(o));
        return v->get();
      }
      break;
    case Type::floating:
      if (const auto* v = n.as_floating_point()) return v->get();
      if (const auto* v = n.as_integer()) return static_cast<double>(v->get());
      break;
    case Type::boolean:
      if (const auto* v = n.as_boolean()) return v->get();
      break;
    case Type::string:
      if (const auto* v = n.as_string()) return v->get();
      break;
    case Type::choice:
      if (const auto* v = n.as_string()) {
        if (std::find(o.choices.begin(), o.choices.end(), v->get()) == o.choices.end())
          REMOE_FAIL(source, ": ", o.key, " = ", render(n), ": expected ", expected(o));
        return v->get();
      }
      break;
  }
  REMOE_FAIL(source, ": ", o.key, " = ", render(n), ": expected ", expected(o), ", got ",
             node_kind(n));
}

// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF): what TOML, and the JSON of state.json, can hold.
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0, min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    }
    if ((c & 0xe0) == 0xc0) {
      n = 1, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (s.size() - i <= n) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto cont = static_cast<unsigned char>(s[i + k]);
      if ((cont & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cont & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}

template <typename T>
bool parse_number(std::string_view text, T& out) {
  if (text.size() > 1 && text[0] == '+' && text[1] != '-') text.remove_prefix(1);
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc{} && ptr == end && !text.empty();
}

Value from_text(const Option& o, std::string_view text, std::string_view override_text) {
  const auto wrong = [&]() {
    REMOE_FAIL("command line: ", override_text, ": expected ", expected(o), " for ", o.key);
  };
  switch (o.type) {
    case Type::integer:
    case Type::unsigned_integer: {
      int64_t v = 0;
      if (!parse_number(text, v) || (o.type == Type::unsigned_integer && v < 0)) wrong();
      return v;
    }
    case Type::floating: {
      double v = 0;
      if (!parse_number(text, v)) wrong();
      return v;
    }
    case Type::boolean:
      if (text == "true") return true;
      if (text == "false") return false;
      wrong();
      break;
    case Type::string:
      // The resolved config is written back as TOML (config.toml, state.json), which holds
      // only UTF-8 text.
      if (!valid_utf8(text))
        REMOE_FAIL("command line: ", override_text, ": expected UTF-8 text for ", o.key);
      return std::string(text);
    case Type::choice:
      if (std::find(o.choices.begin(), o.choices.end(), text) == o.choices.end()) wrong();
      return std::string(text);
  }
  return {};
}

void apply_table(TrainConfig& config, const toml::table& root, std::string_view source) {
  for (const auto& [section_key, section_node] : root) {
    const std::string_view section = section_key.str();
    const toml::table* table = section_node.as_table();
    if (!table) {
      if (known_section(section))
        REMOE_FAIL(source, ": '", section, "' must be a table ([", section, "]), got ",
                   node_kind(section_node));
      REMOE_FAIL(source, ": ", unknown_key(section));
    }
    if (!known_section(section) && table->empty())
      REMOE_FAIL(source, ": ", unknown_section(section));
    for (const auto& [name, node] : *table) {
      const std::string key = str_cat(section, ".", name.str());
      if (node.is_table())
        REMOE_FAIL(source, ": '", key, "' is a table, but options are only one level deep ",
                   "([section] then key = value)");
      const Option* o = find_option(key);
      if (!o) REMOE_FAIL(source, ": ", unknown_key(key));
      o->set(config, from_node(*o, node, source));
    }
  }
}

// Megatron-LM's spelling of the same options (and the ReMoE fork's MoE flags), accepted on the
// command line for users who come from there. A bare flag stands for `key=value`.
struct Alias {
  std::string_view flag;
  std::string_view key;
  std::string_view bare_value;  // non-empty: a flag without a value means key=bare_value
};

constexpr Alias kMegatronAliases[] = {
    {"num-layers", "model.n_layers", ""},
    {"hidden-size", "model.d_model", ""},
    {"ffn-hidden-size", "model.d_ffn", ""},
    {"num-attention-heads", "model.n_heads", ""},
    {"num-query-groups", "model.n_kv_heads", ""},
    {"norm-epsilon", "model.norm_eps", ""},
    {"rotary-base", "model.rope_base", ""},
    {"init-method-std", "model.init_std", ""},
    {"num-experts", "model.n_experts", ""},
    {"moe-router-topk", "model.top_k", ""},
    {"moe-aux-loss-coeff", "model.aux_coeff", ""},
    {"moe-granularity", "model.granularity", ""},
    {"moe-relu-routing", "model.router", "relu"},
    {"moe-router-pre-softmax", "model.renormalize", "false"},
    {"moe-expert-capacity-factor", "model.capacity_factor", ""},
    {"moe-token-drop-policy", "model.drop_policy", ""},
    {"moe-z-loss-coeff", "model.z_loss_coeff", ""},
    {"moe-router-enable-expert-bias", "model.expert_bias", "true"},
    {"moe-router-bias-update-rate", "model.bias_update_rate", ""},
    {"moe-relu-l1-reg-coeff-init", "remoe.lambda0", ""},
    {"moe-relu-l1-reg-coeff-multiplier", "remoe.alpha", ""},
    {"seq-length", "train.seq_len", ""},
    {"micro-batch-size", "train.batch_size", ""},
    {"train-iters", "train.steps", ""},
    {"seed", "train.seed", ""},
    {"lr", "optim.lr", ""},
    {"min-lr", "optim.min_lr", ""},
    {"lr-warmup-iters", "optim.warmup_steps", ""},
    {"weight-decay", "optim.weight_decay", ""},
    {"adam-beta1", "optim.beta1", ""},
    {"adam-beta2", "optim.beta2", ""},
    {"adam-eps", "optim.eps", ""},
    {"clip-grad", "optim.grad_clip", ""},
    {"eval-interval", "eval.every", ""},
    {"eval-iters", "eval.batches", ""},
    {"save-interval", "checkpoint.every", ""},
    {"log-interval", "log.every", ""},
    {"expert-model-parallel-size", "dist.expert_parallel", ""},
};

// "num-experts=8" → "model.n_experts=8", "moe-relu-routing" → "model.router=relu"; anything
// else unchanged.
std::string resolve_alias(std::string_view s) {
  const size_t eq = s.find('=');
  const std::string_view flag = s.substr(0, eq);
  for (const Alias& a : kMegatronAliases) {
    if (flag != a.flag) continue;
    if (eq != std::string_view::npos) return str_cat(a.key, s.substr(eq));
    if (!a.bare_value.empty()) return str_cat(a.key, "=", a.bare_value);
  }
  return std::string(s);
}

void apply_override(TrainConfig& config, const std::string& text) {
  const std::string resolved = resolve_alias(std::string_view(text).substr(text.starts_with("--") ? 2 : 0));
  std::string_view s = resolved;
  const size_t eq = s.find('=');
  REMOE_CHECK(eq != std::string_view::npos, "command line: '", text,
              "' has no '=': expected --section.key=value");
  REMOE_CHECK(eq > 0, "command line: '", text, "' has no key: expected --section.key=value");
  const std::string_view key = s.substr(0, eq);
  const Option* o = find_option(key);
  if (!o) REMOE_FAIL("command line: ", text, ": ", unknown_key(key));
  o->set(config, from_text(*o, s.substr(eq + 1), text));
}

std::string format_double(double v) {
  std::array<char, 64> buf;
  const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), v);
  std::string s(buf.data(), end);
  // TOML reads "1" as an integer: keep floats looking like floats ("inf"/"nan" already do).
  if (s.find_first_of(".eEni") == std::string::npos) s += ".0";
  return s;
}

std::string format_value(const Value& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, int64_t>) return std::to_string(x);
        else if constexpr (std::is_same_v<T, double>) return format_double(x);
        else if constexpr (std::is_same_v<T, bool>) return x ? "true" : "false";
        else return quote(x);
      },
      v);
}

}  // namespace

void TrainConfig::validate() const {
  model.validate();
  REMOE_CHECK(std::isfinite(model.init_std) && model.init_std > 0,
              "model.init_std must be positive and finite, got ", model.init_std);
  REMOE_CHECK(std::isfinite(model.aux_coeff) && model.aux_coeff >= 0,
              "model.aux_coeff must be non-negative and finite, got ", model.aux_coeff);
  REMOE_CHECK(!data_path.empty(), "data.path is required (the training data)");
  REMOE_CHECK(val_fraction >= 0 && val_fraction < 1, "data.val_fraction must be in [0, 1), got ",
              val_fraction);
  REMOE_CHECK(!within_documents || data_format == DataFormat::megatron,
              "data.within_documents = true needs data.format = \"megatron\" (the only format ",
              "with document boundaries), got \"", kDataFormatNames[size_t(data_format)], "\"");
  REMOE_CHECK(seed <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
              "train.seed must fit a signed 64-bit integer (TOML's), got ", seed);
  REMOE_CHECK(steps >= 1, "train.steps must be at least 1, got ", steps);
  REMOE_CHECK(batch_size >= 1, "train.batch_size must be at least 1, got ", batch_size);
  REMOE_CHECK(seq_len >= 1, "train.seq_len must be at least 1, got ", seq_len);
  REMOE_CHECK(grad_accum >= 1, "train.grad_accum must be at least 1, got ", grad_accum);
  REMOE_CHECK(max_skips >= 1, "train.max_skips must be at least 1, got ", max_skips);
  REMOE_CHECK(std::isfinite(lr) && lr > 0, "optim.lr must be positive and finite, got ", lr);
  REMOE_CHECK(min_lr >= 0 && min_lr <= lr, "optim.min_lr must be in [0, optim.lr = ", lr,
              "], got ", min_lr);
  REMOE_CHECK(warmup_steps >= -1, "optim.warmup_steps must be -1 (1% of steps) or >= 0, got ",
              warmup_steps);
  REMOE_CHECK(std::isfinite(weight_decay) && weight_decay >= 0,
              "optim.weight_decay must be non-negative and finite, got ", weight_decay);
  REMOE_CHECK(beta1 >= 0 && beta1 < 1, "optim.beta1 must be in [0, 1), got ", beta1);
  REMOE_CHECK(beta2 >= 0 && beta2 < 1, "optim.beta2 must be in [0, 1), got ", beta2);
  REMOE_CHECK(std::isfinite(eps) && eps > 0, "optim.eps must be positive and finite, got ", eps);
  REMOE_CHECK(grad_clip >= 0, "optim.grad_clip must be >= 0 (0 disables clipping), got ",
              grad_clip);
  REMOE_CHECK(std::isfinite(lambda0) && lambda0 > 0,
              "remoe.lambda0 must be positive and finite, got ", lambda0);
  REMOE_CHECK(std::isfinite(alpha) && alpha > 1, "remoe.alpha must be greater than 1, got ",
              alpha);
  REMOE_CHECK(eval_every >= 0, "eval.every must be >= 0 (0: only at the end), got ", eval_every);
  REMOE_CHECK(eval_batches >= 1, "eval.batches must be at least 1, got ", eval_batches);
  REMOE_CHECK(checkpoint_every >= 0, "checkpoint.every must be >= 0 (0: only at the end), got ",
              checkpoint_every);
  REMOE_CHECK(keep_last >= 1, "checkpoint.keep_last must be at least 1, got ", keep_last);
  REMOE_CHECK(keep_every >= 0, "checkpoint.keep_every must be >= 0 (0: none), got ", keep_every);
  REMOE_CHECK(expert_parallel >= 1, "dist.expert_parallel must be at least 1, got ",
              expert_parallel);
  REMOE_CHECK(expert_parallel == 1 || model.ffn == model::FfnKind::moe,
              "dist.expert_parallel = ", expert_parallel, " needs model.ffn = \"moe\" (a dense ",
              "model has no experts to shard)");
  REMOE_CHECK(model.ffn != model::FfnKind::moe || model.experts() % expert_parallel == 0,
              "dist.expert_parallel = ", expert_parallel, " does not divide the ",
              model.experts(), " experts (model.n_experts ", model.n_experts, " x model.granularity ",
              model.granularity, ") evenly: every rank must hold the same number of experts");
  REMOE_CHECK(std::isfinite(bucket_mb) && bucket_mb > 0,
              "dist.bucket_mb must be positive and finite, got ", bucket_mb);
  REMOE_CHECK(!run_dir.empty(), "log.run_dir must not be empty");
  REMOE_CHECK(log_every >= 1, "log.every must be at least 1, got ", log_every);
}

Device resolve_device(DeviceChoice choice) {
  if (choice == DeviceChoice::cpu) return Device::cpu;
  if (choice == DeviceChoice::cuda) {
    REMOE_CHECK(device::cuda_built(), "train.device = \"cuda\", but remoe was built without the ",
                "CUDA backend (configure with -Dcuda=enabled on a machine with nvcc), or use ",
                "train.device = \"cpu\"");
    REMOE_CHECK(device::cuda_available(), "train.device = \"cuda\", but no CUDA device is ",
                "visible (cudaGetDeviceCount; check CUDA_VISIBLE_DEVICES), or use train.device ",
                "= \"cpu\"");
    return Device::cuda;
  }
  return device::cuda_available() ? Device::cuda : Device::cpu;
}

model::Precision resolve_precision(PrecisionChoice choice, Device device) {
  if (choice == PrecisionChoice::auto_)
    return device == Device::cuda ? model::Precision::bf16 : model::Precision::f32;
  return choice == PrecisionChoice::bf16 ? model::Precision::bf16 : model::Precision::f32;
}

void TrainConfig::validate_world(int world_size) const {
  REMOE_CHECK(expert_parallel <= world_size, "dist.expert_parallel = ", expert_parallel,
              " needs at least that many ranks (GPUs), but the job has ", world_size,
              ": launch ", expert_parallel, " or a multiple, or lower dist.expert_parallel");
  REMOE_CHECK(world_size % expert_parallel == 0, "dist.expert_parallel = ", expert_parallel,
              " does not divide the job's ", world_size, " ranks: the ranks form groups of ",
              expert_parallel, " that each hold one copy of the experts");
}

TrainConfig parse_config(std::string_view toml_text, std::string_view source,
                         const std::vector<std::string>& overrides) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    REMOE_FAIL(source, ": TOML syntax error at line ", e.source().begin.line, ", column ",
               e.source().begin.column, ": ", e.description());
  }
  TrainConfig config;
  apply_table(config, root, source);
  for (const std::string& o : overrides) apply_override(config, o);
  try {
    config.validate();
  } catch (const Error& e) {
    REMOE_FAIL(source, overrides.empty() ? "" : " with command-line overrides", ": ", e.what());
  }
  return config;
}

TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  REMOE_CHECK(std::filesystem::exists(status), "config file '", path, "' does not exist");
  REMOE_CHECK(std::filesystem::is_regular_file(status), "config file '", path,
              "' is not a regular file");
  std::ifstream in(path, std::ios::binary);
  REMOE_CHECK(in, "cannot open config file '", path, "'");
  std::ostringstream text;
  text << in.rdbuf();
  REMOE_CHECK(!in.bad(), "cannot read config file '", path, "'");
  return parse_config(text.str(), path, overrides);
}

std::string to_toml(const TrainConfig& config) {
  std::string out;
  std::string_view section;
  for (const Option& o : options()) {
    if (o.section() != section) {
      section = o.section();
      out += str_cat(out.empty() ? "" : "\n", "[", section, "]\n");
    }
    out += str_cat(o.name(), " = ", format_value(o.get(config)), "\n");
  }
  return out;
}

std::vector<ConfigDifference> config_differences(const TrainConfig& a, const TrainConfig& b) {
  std::vector<ConfigDifference> out;
  for (const Option& o : options()) {
    std::string va = format_value(o.get(a)), vb = format_value(o.get(b));
    if (va != vb) out.push_back({std::string(o.key), std::move(va), std::move(vb)});
  }
  return out;
}

std::string options_help() {
  const TrainConfig defaults;
  std::vector<std::array<std::string, 3>> rows;
  std::array<size_t, 2> width{0, 0};
  for (const Option& o : options()) {
    const Value v = o.get(defaults);
    const auto* s = std::get_if<std::string>(&v);
    rows.push_back({str_cat("--", o.key, "=", type_label(o)),
                    s && s->empty() && o.key == "data.path"  // the one key without a default
                        ? "(required)"
                        : str_cat("(default ", format_value(v), ")"),
                    std::string(o.description)});
    for (size_t i = 0; i < 2; ++i) width[i] = std::max(width[i], rows.back()[i].size());
  }
  std::string out =
      "options: [section] key = value in the config file, or --section.key=value to override\n";
  for (const auto& r : rows) {
    out += "  " + r[0] + std::string(width[0] - r[0].size() + 2, ' ');
    out += r[1] + std::string(width[1] - r[1].size() + 2, ' ');
    out += r[2] + "\n";
  }
  out += "\nMegatron-LM spellings, accepted on the command line (--flag=value or --flag value):\n";
  for (const Alias& a : kMegatronAliases)
    out += str_cat("  --", a.flag, " → ", a.key, a.bare_value.empty() ? "" : str_cat(" = ", a.bare_value), "\n");
  return out;
}

std::vector<std::pair<std::string, std::string>> megatron_aliases() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Alias& a : kMegatronAliases) out.emplace_back(a.flag, a.key);
  return out;
}

}  // namespace remoe::train
