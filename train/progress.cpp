#include "train/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace remoe::train {

std::string format_duration(double seconds) {
  const auto s = int64_t(std::llround(std::max(seconds, 0.0)));
  char buf[32];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%llds", (long long)s);
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(s / 3600), (long long)(s / 60 % 60));
  return buf;
}

std::string progress_line(std::string_view label, int64_t done, int64_t total, double elapsed_s,
                          int width) {
  done = std::clamp<int64_t>(done, 0, std::max<int64_t>(total, 0));
  // Integer shares: a float 8/24·24 may land just below 8.
  const int64_t filled = total > 0 ? done * width / total : width;
  const int64_t percent = total > 0 ? done * 100 / total : 100;
  std::string line(label);
  line += " [" + std::string(size_t(filled), '#') + std::string(size_t(width - filled), '-') + "] ";
  const std::string total_s = std::to_string(total);
  const std::string done_s = std::to_string(done);
  line += std::string(total_s.size() - std::min(total_s.size(), done_s.size()), ' ') + done_s;
  char pct[16];
  std::snprintf(pct, sizeof pct, "%3lld%%", (long long)percent);
  line += "/" + total_s + " " + pct + "  " + format_duration(elapsed_s) + ", ETA ";
  line += done > 0 ? format_duration(elapsed_s / double(done) * double(total - done)) : "?";
  return line;
}

Progress::Progress(std::string label, int64_t total, bool force)
    : label_(std::move(label)),
      total_(total),
      shown_(force || (total >= kMinTotal && isatty(STDERR_FILENO))),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {
  update(0);
}

Progress::~Progress() {
  if (drawn_) {
    std::fputs("\r\x1b[K", stderr);  // back to the start of the line, erase it
    std::fflush(stderr);
  }
}

void Progress::update(int64_t done) {
  if (!shown_) return;
  const auto now = std::chrono::steady_clock::now();
  if (drawn_ && done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  std::fprintf(stderr, "\r%s\x1b[K", progress_line(label_, done, total_, elapsed).c_str());
  std::fflush(stderr);
  drawn_ = true;
}

}  // namespace remoe::train
