// `remoe analyze` (analyze.h): routing statistics of a checkpoint over fixed windows of texts.
#include "train/analyze.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <memory>
#include <set>

#include "autodiff/tape.h"
#include "train/config.h"
#include "train/data.h"
#include "train/eval.h"

namespace remoe::train {

namespace {

const char* router_name(model::RouterKind r) {
  switch (r) {
    case model::RouterKind::relu: return "relu";
    case model::RouterKind::topk: return "topk";
    case model::RouterKind::expert_choice: return "expert_choice";
    case model::RouterKind::hash: return "hash";
  }
  return "?";
}

void require_router(const CheckpointModel& m, const char* what) {
  REMOE_CHECK(m.config.model.ffn == model::FfnKind::moe, what, " ", m.dir,
              " holds a dense model (model.ffn = \"dense\"): it has no router, so there is no "
              "routing to analyze");
  REMOE_CHECK(m.config.model.vocab_size == 256, what, " ", m.dir, " holds a model with vocabulary ",
              m.config.model.vocab_size, "; remoe analyze reads texts as bytes (vocabulary 256)");
}

// Per-bucket sums for one kind of frequency (bytes or pairs).
struct BucketSums {
  std::vector<int64_t> tokens = std::vector<int64_t>(kUnseenBucket + 1, 0);
  std::vector<std::vector<int64_t>> active;  // [bucket][layer]: Σ active experts

  explicit BucketSums(int64_t layers)
      : active(kUnseenBucket + 1, std::vector<int64_t>(size_t(layers), 0)) {}
};

// What one text accumulates over its batches.
struct TextSums {
  int64_t tokens = 0;
  std::vector<int64_t> nnz, empty_tokens;   // [layer]: Σ A, tokens with no active expert
  std::vector<std::vector<int64_t>> counts;  // [layer][expert]: c_e
  BucketSums byte, pair;
  // --compare
  std::vector<int64_t> flipped_pairs, flipped_tokens, nnz_b;  // [layer]

  TextSums(int64_t L, int64_t E)
      : nnz(size_t(L), 0), empty_tokens(size_t(L), 0),
        counts(size_t(L), std::vector<int64_t>(size_t(E), 0)), byte(L), pair(L),
        flipped_pairs(size_t(L), 0), flipped_tokens(size_t(L), 0), nnz_b(size_t(L), 0) {}
};

// The host copy of every MoE layer's mask: [layer] (T·E) i32.
std::vector<std::vector<int32_t>> layer_masks(const model::ForwardOutput& out, int64_t T,
                                              int64_t E) {
  std::vector<std::vector<int32_t>> masks;
  for (const model::MoeLayerStats& s : out.layers) {
    REMOE_CHECK(s.mask.defined() && s.mask.numel() == T * E,
                "analyze: an MoE layer returned no (T, E) = (", T, ", ", E, ") active mask");
    masks.push_back(s.mask.to_vector<int32_t>());
  }
  return masks;
}

nlohmann::ordered_json bucket_json(const BucketSums& b, int64_t total) {
  nlohmann::ordered_json buckets = nlohmann::ordered_json::array();
  for (int i = 0; i <= kUnseenBucket; ++i) {
    nlohmann::ordered_json one;
    one["bucket"] = i;
    if (i == kUnseenBucket) {
      one["label"] = "unseen";
      one["lo"] = 0.0;
      one["hi"] = 0.0;
    } else {
      one["label"] = i == 0                       ? std::string(">= 1e-1")
                     : i == kFrequencyDecades - 1 ? str_cat("< 1e-", i)
                                                  : str_cat("1e-", i + 1, "..1e-", i);
      one["lo"] = i == kFrequencyDecades - 1 ? 0.0 : std::pow(10.0, -(i + 1));
      one["hi"] = std::pow(10.0, -i);
    }
    one["tokens"] = b.tokens[size_t(i)];
    std::vector<double> per_layer;
    double sum = 0;
    for (int64_t a : b.active[size_t(i)]) {
      const double mean = b.tokens[size_t(i)] > 0 ? double(a) / double(b.tokens[size_t(i)]) : 0.0;
      per_layer.push_back(mean);
      sum += mean;
    }
    one["active_experts"] = per_layer;
    if (b.tokens[size_t(i)] > 0)
      one["active_experts_mean"] = per_layer.empty() ? 0.0 : sum / double(per_layer.size());
    else
      one["active_experts_mean"] = nullptr;
    buckets.push_back(one);
  }
  return {{"train_total", total}, {"buckets", buckets}};
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / double(v.size());
}

}  // namespace

AnalyzeText parse_analyze_text(const std::string& arg) {
  const size_t eq = arg.find('=');
  REMOE_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < arg.size(), "--text expects NAME=PATH",
              " (e.g. --text wiki=.data/wiki100m/test.txt), got '", arg, "'");
  AnalyzeText t{arg.substr(0, eq), arg.substr(eq + 1)};
  for (char ch : t.name)
    REMOE_CHECK(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-' || ch == '.',
                "--text: the name '", t.name, "' may hold only letters, digits, '_', '-' and '.'");
  return t;
}

ByteFrequencies count_byte_frequencies(const TokenSource& source, int64_t begin, int64_t end) {
  REMOE_CHECK(0 <= begin && begin <= end && end <= source.size(), "count_byte_frequencies: range [",
              begin, ", ", end, ") is not inside '", source.name(), "' (", source.size(), " tokens)");
  ByteFrequencies f;
  constexpr int64_t kChunk = 1 << 20;
  std::vector<int32_t> buf;
  int32_t prev = -1;
  for (int64_t at = begin; at < end; at += kChunk) {
    const int64_t n = std::min(kChunk, end - at);
    buf.resize(size_t(n));
    source.read(at, n, buf.data());
    for (int32_t b : buf) {
      REMOE_CHECK(b >= 0 && b < 256, "'", source.name(), "' holds token ", b,
                  ", not a byte: token frequencies need a text read as bytes");
      ++f.bytes[size_t(b)];
      if (prev >= 0) ++f.pairs[size_t(prev) * 256 + size_t(b)];
      prev = b;
    }
  }
  f.n_bytes = end - begin;
  f.n_pairs = std::max<int64_t>(0, f.n_bytes - 1);
  return f;
}

int frequency_bucket(int64_t count, int64_t total) {
  REMOE_CHECK(count >= 0 && total > 0 && count <= total, "frequency_bucket: count ", count,
              " of total ", total);
  if (count == 0) return kUnseenBucket;
  // count · 10^(b+1) ≥ total ⇔ f ≥ 10^−(b+1); counts and totals stay below 2^63 / 10^8.
  int64_t scaled = count;
  for (int b = 0; b < kFrequencyDecades - 1; ++b) {
    scaled *= 10;
    if (scaled >= total) return b;
  }
  return kFrequencyDecades - 1;
}

nlohmann::ordered_json analyze_checkpoint(const std::string& checkpoint, const AnalyzeOptions& o) {
  REMOE_CHECK(!o.texts.empty(), "analyze needs at least one --text NAME=PATH");
  REMOE_CHECK(o.tokens >= 1, "--tokens expects a positive integer, got ", o.tokens);
  REMOE_CHECK(o.batch_size >= 0, "--batch-size expects a positive integer, got ", o.batch_size);
  {
    std::set<std::string> names;
    for (const AnalyzeText& t : o.texts)
      REMOE_CHECK(names.insert(t.name).second, "--text: the name '", t.name, "' is given twice");
  }

  const CheckpointModel m = load_checkpoint_model(checkpoint);
  require_router(m, "checkpoint");
  const TrainConfig& c = m.config;
  std::unique_ptr<CheckpointModel> other;
  if (!o.compare.empty()) {
    other = std::make_unique<CheckpointModel>(load_checkpoint_model(o.compare));
    require_router(*other, "--compare checkpoint");
    std::string diffs;
    for (const ConfigDifference& d : config_differences(c, other->config))
      if (d.key.rfind("model.", 0) == 0) diffs += str_cat("\n  ", d.key, ": ", d.a, " vs ", d.b);
    REMOE_CHECK(diffs.empty(), "--compare: ", other->dir, " is not the same model as ", m.dir,
                " (the flip rate compares two checkpoints of one run); these model keys differ:",
                diffs);
  }

  const int64_t L = c.model.n_layers, E = c.model.experts(), S = c.seq_len;
  const int64_t B = o.batch_size > 0 ? o.batch_size : c.batch_size;
  const int64_t T = B * S;

  // Token frequencies of the training text.
  nlohmann::ordered_json train_json;
  ByteFrequencies freq;
  if (!o.train_text.empty()) {
    const TokenSource src = open_text(o.train_text);
    freq = count_byte_frequencies(src, 0, src.size());
    train_json = {{"path", o.train_text}, {"begin", 0}, {"end", src.size()}};
  } else {
    REMOE_CHECK(c.data_format == DataFormat::text, "the run of ", m.dir,
                " trained on data.format other than \"text\"; pass --train-text FILE for the byte "
                "frequencies");
    const Corpus corpus = load_corpus(c.data_format, c.data_path, c.val_path, c.val_fraction);
    freq = count_byte_frequencies(corpus.train, 0, corpus.train_end);
    train_json = {{"path", c.data_path}, {"begin", 0}, {"end", corpus.train_end}};
  }
  REMOE_CHECK(freq.n_bytes > 1, "the training text ", train_json["path"].get<std::string>(),
              " holds ", freq.n_bytes, " bytes; frequencies need at least 2");
  train_json["bytes"] = freq.n_bytes;

  nlohmann::ordered_json out;
  out["kind"] = "remoe-analyze";
  out["version"] = 1;
  out["checkpoint"] = m.dir;
  out["step"] = m.step;
  out["lambda"] = m.lambda;
  out["model"] = {{"router", router_name(c.model.router)},
                  {"n_experts", E},
                  {"top_k", c.model.active_experts()},
                  {"granularity", c.model.granularity},
                  {"moe_layers", L},
                  {"target_sparsity", c.model.target_sparsity()}};
  out["seq_len"] = S;
  out["batch_size"] = B;
  out["train_text"] = train_json;
  out["definitions"] = {
      {"active_experts", "per token and layer: experts with a nonzero gate (sum of the active mask)"},
      {"layer_sparsity", "1 - sum(A) / (T * E) over the text's tokens"},
      {"expert_usage", "per layer: c_e / sum c, the share of routed (token, expert) pairs"},
      {"frequency_buckets",
       "relative frequency f of the token's byte (or byte pair) in the training text; bucket b: "
       "1e-(b+1) <= f < 1e-b, the last decade bucket all rarer, then unseen"},
      {"mask_flip_rate", "per layer: fraction of the T*E active-mask entries that differ"},
      {"token_flip_rate", "per layer: fraction of tokens whose set of active experts differs"}};

  NoGradGuard no_grad;
  nlohmann::ordered_json texts = nlohmann::ordered_json::array();
  nlohmann::ordered_json compare_texts = nlohmann::ordered_json::array();
  for (const AnalyzeText& text : o.texts) {
    const TokenSource src = open_text(text.path);
    const int64_t n_batches = (o.tokens + T - 1) / T;
    TextSums sums(L, E);
    for (int64_t i = 0; i < n_batches; ++i) {
      const Batch b = fixed_batch(src, 0, src.size(), S, B, i, n_batches, text.name.c_str())
                          .to(m.model.device());
      const std::vector<int32_t> ids = b.inputs.to_vector<int32_t>();
      const auto masks = layer_masks(m.model.forward(b.inputs, B, S, 0.0), T, E);
      REMOE_CHECK(int64_t(masks.size()) == L, "analyze: ", masks.size(), " MoE layers in ", L);
      std::vector<std::vector<int32_t>> masks_b;
      if (other) masks_b = layer_masks(other->model.forward(b.inputs, B, S, 0.0), T, E);
      for (int64_t t = 0; t < T; ++t) {
        const int32_t x = ids[size_t(t)];
        const int byte_bucket = frequency_bucket(freq.bytes[size_t(x)], freq.n_bytes);
        const bool has_prev = t % S != 0;  // pairs inside the window
        const int pair_bucket =
            has_prev ? frequency_bucket(freq.pairs[size_t(ids[size_t(t - 1)]) * 256 + size_t(x)],
                                        freq.n_pairs)
                     : -1;
        ++sums.byte.tokens[size_t(byte_bucket)];
        if (has_prev) ++sums.pair.tokens[size_t(pair_bucket)];
        for (int64_t l = 0; l < L; ++l) {
          const int32_t* row = masks[size_t(l)].data() + t * E;
          int64_t active = 0, flipped = 0, active_b = 0;
          for (int64_t e = 0; e < E; ++e) {
            const bool on = row[e] != 0;
            active += on;
            sums.counts[size_t(l)][size_t(e)] += on;
            if (other) {
              const bool on_b = masks_b[size_t(l)][size_t(t * E + e)] != 0;
              active_b += on_b;
              flipped += on != on_b;
            }
          }
          sums.nnz[size_t(l)] += active;
          sums.empty_tokens[size_t(l)] += active == 0;
          sums.byte.active[size_t(byte_bucket)][size_t(l)] += active;
          if (has_prev) sums.pair.active[size_t(pair_bucket)][size_t(l)] += active;
          sums.flipped_pairs[size_t(l)] += flipped;
          sums.flipped_tokens[size_t(l)] += flipped > 0;
          sums.nnz_b[size_t(l)] += active_b;
        }
      }
      sums.tokens += T;
    }

    nlohmann::ordered_json tj;
    tj["name"] = text.name;
    tj["path"] = text.path;
    tj["bytes"] = src.size();
    tj["windows"] = n_batches * B;
    tj["tokens"] = sums.tokens;
    std::vector<double> sparsity, active, empty, max_share, entropy;
    std::vector<std::vector<double>> usage;
    for (int64_t l = 0; l < L; ++l) {
      const double pairs = double(sums.nnz[size_t(l)]);
      sparsity.push_back(1.0 - pairs / (double(sums.tokens) * double(E)));
      active.push_back(pairs / double(sums.tokens));
      empty.push_back(double(sums.empty_tokens[size_t(l)]) / double(sums.tokens));
      std::vector<double> u(size_t(E), 0.0);
      double h = 0, mx = 0;
      for (int64_t e = 0; e < E; ++e) {
        u[size_t(e)] = pairs > 0 ? double(sums.counts[size_t(l)][size_t(e)]) / pairs : 0.0;
        if (u[size_t(e)] > 0) h -= u[size_t(e)] * std::log(u[size_t(e)]);
        mx = std::max(mx, u[size_t(e)]);
      }
      usage.push_back(u);
      max_share.push_back(mx);
      entropy.push_back(E > 1 ? h / std::log(double(E)) : 0.0);
    }
    tj["sparsity"] = mean_of(sparsity);
    tj["layer_sparsity"] = sparsity;
    tj["active_experts"] = active;
    tj["tokens_without_expert"] = empty;
    tj["expert_usage"] = usage;
    tj["max_share"] = max_share;
    tj["normalized_entropy"] = entropy;
    tj["frequency"] = {{"byte", bucket_json(sums.byte, freq.n_bytes)},
                       {"pair", bucket_json(sums.pair, freq.n_pairs)}};
    texts.push_back(tj);

    if (other) {
      std::vector<double> mask_rate, token_rate;
      for (int64_t l = 0; l < L; ++l) {
        mask_rate.push_back(double(sums.flipped_pairs[size_t(l)]) /
                            (double(sums.tokens) * double(E)));
        token_rate.push_back(double(sums.flipped_tokens[size_t(l)]) / double(sums.tokens));
      }
      nlohmann::ordered_json cj;
      cj["name"] = text.name;
      cj["tokens"] = sums.tokens;
      cj["mask_flip_rate"] = mask_rate;
      cj["token_flip_rate"] = token_rate;
      cj["mean_mask_flip_rate"] = mean_of(mask_rate);
      cj["mean_token_flip_rate"] = mean_of(token_rate);
      cj["flipped_pairs"] = sums.flipped_pairs;
      cj["routed_pairs"] = sums.nnz;
      cj["routed_pairs_compare"] = sums.nnz_b;
      compare_texts.push_back(cj);
    }
  }
  out["texts"] = texts;
  if (other)
    out["compare"] = {{"checkpoint", other->dir}, {"step", other->step}, {"texts", compare_texts}};
  return out;
}

}  // namespace remoe::train
