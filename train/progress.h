// A one-line progress bar with an ETA on stderr, redrawn in place, for work long enough to wait
// on (evaluation passes). It stays silent when stderr is not a terminal — logs and pipes get no
// carriage returns — and for work of only a few units, and clears its line when done, so the
// console lines on stdout read as if it had never been there.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace remoe::train {

// "eval [########------------]  8/24  33%  4s, ETA 8s" for a bar of `width` cells; the ETA
// extrapolates the mean time per unit so far ("ETA ?" before the first unit is done).
std::string progress_line(std::string_view label, int64_t done, int64_t total, double elapsed_s,
                          int width = 24);
// "7s", "3m05s", "2h04m".
std::string format_duration(double seconds);

class Progress {
 public:
  static constexpr int64_t kMinTotal = 4;  // fewer units than this end before one would look

  // Shown (at once, at 0) when stderr is a terminal and total >= kMinTotal, or when `force`
  // says so (tests).
  Progress(std::string label, int64_t total, bool force = false);
  ~Progress();  // clears the line
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // `done` units finished; redraws at most every 0.1 s (and always at the last unit).
  void update(int64_t done);
  bool shown() const { return shown_; }

 private:
  std::string label_;
  int64_t total_;
  bool shown_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  bool drawn_ = false;
};

}  // namespace remoe::train
