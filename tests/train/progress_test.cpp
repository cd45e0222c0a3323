// The evaluation progress bar: its line, its durations, and what it prints (or not) on stderr.
#include <unistd.h>

#include "tests/test_util.h"
#include "train/progress.h"

namespace remoe::test {
namespace {

TEST(Progress, DurationsReadAsSecondsMinutesHours) {
  EXPECT_EQ(train::format_duration(0.4), "0s");
  EXPECT_EQ(train::format_duration(7.2), "7s");
  EXPECT_EQ(train::format_duration(59.6), "1m00s");
  EXPECT_EQ(train::format_duration(185), "3m05s");
  EXPECT_EQ(train::format_duration(2 * 3600 + 4 * 60 + 10), "2h04m");
  EXPECT_EQ(train::format_duration(-3), "0s");
}

TEST(Progress, LineShowsBarCountPercentElapsedAndEta) {
  // 8 of 24 in 4 s: 0.5 s per unit, 16 to go.
  EXPECT_EQ(train::progress_line("eval", 8, 24, 4.0),
            "eval [########----------------]  8/24  33%  4s, ETA 8s");
  EXPECT_EQ(train::progress_line("eval", 0, 24, 0.0),
            "eval [------------------------]  0/24   0%  0s, ETA ?");
  EXPECT_EQ(train::progress_line("eval", 24, 24, 12.0, 4), "eval [####] 24/24 100%  12s, ETA 0s");
  EXPECT_EQ(train::progress_line("x", 1, 3, 100.0, 3), "x [#--] 1/3  33%  1m40s, ETA 3m20s");
}

TEST(Progress, DrawsInPlaceAndClearsItsLine) {
  ::testing::internal::CaptureStderr();
  {
    train::Progress p("eval", 4, /*force=*/true);
    EXPECT_TRUE(p.shown());
    p.update(4);  // the last unit is drawn however soon it comes
  }
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(err,
            "\reval [------------------------] 0/4   0%  0s, ETA ?\x1b[K"
            "\reval [########################] 4/4 100%  0s, ETA 0s\x1b[K"
            "\r\x1b[K");
}

TEST(Progress, SilentForFewUnitsOrWhenStderrIsNotATerminal) {
  ::testing::internal::CaptureStderr();  // a pipe, not a terminal, while captured
  {
    train::Progress few("eval", train::Progress::kMinTotal - 1);
    train::Progress many("eval", 100);
    EXPECT_FALSE(few.shown());
    EXPECT_FALSE(many.shown());
    many.update(50);
  }
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

}  // namespace
}  // namespace remoe::test
