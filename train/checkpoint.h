// Checkpoints: one directory per step, <run_dir>/checkpoints/step_<8 digits>/, holding
//   model.safetensors      the weights (tensor names are the parameters' names)
//   optimizer.safetensors  the AdamW moments ("<param>.m", "<param>.v")
//   state.json             step, λ, data sampler state, the resolved config, ...
//   COMPLETE               written last: a directory without it is ignored
// Written into step_<n>.tmp, every file fsynced, then renamed into place. A crash (kill -9,
// power loss) at any point leaves the previous complete checkpoints as they were.
//
// safetensors: an 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32"|"F64"|"BF16"|"I32", "shape": [...], "data_offsets": [b, e]}, ...,
//  "__metadata__": {string: string}}, then the raw little-endian data (offsets relative to the
// end of the header), as Hugging Face's safetensors library reads it. The writer always puts
// "format": "pt" in __metadata__ (transformers refuses files without it).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "autodiff/tensor.h"

namespace remoe::train {

// Tensors are written under their name() (which must be unique and non-empty), in order; GPU
// tensors are copied to the host first. The file is fsynced before this returns. __metadata__
// is {"format": "pt"} plus `metadata` (which may replace "format").
void save_safetensors(const std::string& path, const std::vector<Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// CPU tensors named as in the file, in the file's data order. Errors name the file and what is
// malformed (short header, bad JSON, unknown dtype, offsets outside the data or overlapping,
// shape/size mismatch, data bytes not covered by any tensor). `metadata`, when given, receives
// the "__metadata__" map.
std::vector<Tensor> load_safetensors(const std::string& path,
                                     std::map<std::string, std::string>* metadata = nullptr);
// The same from a whole file's bytes held in memory; `source` names them in errors.
std::vector<Tensor> parse_safetensors(std::string_view bytes, const std::string& source,
                                      std::map<std::string, std::string>* metadata = nullptr);

// Checks what copy_by_name checks, copying nothing: a caller restoring several sets of tensors
// checks them all before it copies any.
void check_by_name(const std::vector<Tensor>& dst, const std::vector<Tensor>& src,
                   const std::string& what);
// Copies each tensor of `src` into the storage of the `dst` tensor of the same name (dst keeps
// its identity: parameters stay the same leaves). Every dst name must be present with the same
// shape and dtype and every src name must be in dst; `what` names the source in errors. Nothing
// is copied unless everything matches.
void copy_by_name(const std::vector<Tensor>& dst, const std::vector<Tensor>& src,
                  const std::string& what);

struct Checkpoint {
  std::string dir;
  int64_t step = 0;
  std::vector<Tensor> model;
  std::vector<Tensor> optimizer;
  nlohmann::json state;
};

// Writes step_<8 digits>/ (replacing one of the same step) and returns its path. state.json is
// `state` (an object) with "step" set to `step`. The environment variable
// REMOE_TEST_CHECKPOINT_DELAY_MS (tests only) slows the write down; see checkpoint.cpp.
std::string save_checkpoint(const std::string& run_dir, int64_t step,
                            const std::vector<Tensor>& model, const std::vector<Tensor>& optimizer,
                            const nlohmann::json& state);
// Error when the directory has no COMPLETE file. The step is state.json's "step".
Checkpoint load_checkpoint(const std::string& dir);
// The complete checkpoint with the highest step under run_dir, if any (.tmp dirs, dirs without
// COMPLETE and other names are ignored).
std::optional<std::string> latest_checkpoint(const std::string& run_dir);
// Retention, run after a successful save: removes the complete checkpoints under run_dir that
// are neither among the keep_last (>= 1) newest nor of a step that is a multiple of keep_every
// (0: none kept that way), and every unfinished one (step_<n>.tmp/, or step_<n>/ without
// COMPLETE: crash leftovers). Only one process may write to a run directory. Returns the
// removed directories, sorted.
std::vector<std::string> prune_checkpoints(const std::string& run_dir, int64_t keep_last,
                                           int64_t keep_every);

}  // namespace remoe::train
