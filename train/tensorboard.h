// TensorBoard event files without TensorFlow: scalars as hand-encoded protobuf `Event` messages
// in TFRecord framing, so `tensorboard --logdir <run_dir>/tb` shows a run live.
//
// One record, as TensorFlow's record writer frames it (integers little-endian):
//   u64 length | u32 masked_crc32c(length bytes) | data | u32 masked_crc32c(data)
// masked_crc32c(x) = rotr(crc32c(x), 15) + 0xa282ead8 (a CRC stored beside the bytes it covers
// is masked so that CRCs of data holding CRCs stay well-behaved).
//
// The messages (field numbers of tensorflow/core/util/event.proto and framework/summary.proto):
//   Event      { double wall_time = 1; int64 step = 2; string file_version = 3;
//                Summary summary = 5; SessionLog session_log = 7; }
//   Summary    { repeated Value value = 1; }
//   Value      { string tag = 1; float simple_value = 2; }
//   SessionLog { SessionStatus status = 1; }  // START = 1
// A file starts with Event{wall_time, step 0, file_version "brain.Event:2"}, then
// Event{wall_time, first step, session_log START}; each write_scalars call adds
// Event{wall_time, step, summary} with one Value per scalar.
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "train/trainer.h"

namespace remoe::train {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as in iSCSI and TFRecord.
uint32_t crc32c(const void* data, size_t size);
uint32_t masked_crc32c(const void* data, size_t size);

using Scalars = std::vector<std::pair<std::string, float>>;  // (tag, value)

class EventWriter {
 public:
  // Creates `dir` if needed and <dir>/events.out.tfevents.<unix time>.<hostname> (".1", ".2", …
  // appended when that name is taken: a resumed run started within the same second), then
  // writes the file_version record and a session START at `first_step`: TensorBoard (file
  // version 2) then drops whatever earlier files in `dir` hold for steps >= first_step — the
  // steps a crash left beyond the checkpoint a run resumes from, or an old run's steps when a
  // run directory starts over. Errors name the path.
  explicit EventWriter(const std::string& dir, int64_t first_step = 1);

  // One Event at `step` holding every scalar, stamped with the current time; flushed, so
  // TensorBoard sees it at once. An empty list writes nothing.
  void write_scalars(int64_t step, const Scalars& scalars);

  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);

  std::string path_;
  std::ofstream out_;
};

// What a training step contributes: loss, aux, lr, grad_norm, tokens_per_s; for MoE also lambda,
// sparsity, "sparsity/layer_<l>" and "expert_load/layer_<l>/expert_<e>"; val_loss and val_bpb
// on evaluation steps. Tags sharing a prefix before '/' form one group in TensorBoard.
Scalars step_scalars(const StepRecord& r);

}  // namespace remoe::train
