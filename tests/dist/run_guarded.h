// run_threads for tests: a hang ends the test binary with a message instead of waiting for
// meson's timeout (hung threads still reference the test's locals, so it cannot just go on).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <thread>

#include "dist/thread_group.h"

namespace remoe::test {

inline std::exception_ptr run_guarded(int world, const std::function<void(dist::Communicator&)>& fn,
                                      std::chrono::milliseconds group_timeout = std::chrono::seconds(20)) {
  auto result = std::make_shared<std::promise<std::exception_ptr>>();
  std::future<std::exception_ptr> done = result->get_future();
  std::thread([=] {
    try {
      dist::run_threads(world, fn, group_timeout);
      result->set_value(nullptr);
    } catch (...) {
      result->set_value(std::current_exception());
    }
  }).detach();
  if (done.wait_for(std::chrono::seconds(120)) != std::future_status::ready) {
    std::fprintf(stderr, "FATAL: %s: run_threads(%d) hung for 120 s\n",
                 ::testing::UnitTest::GetInstance()->current_test_info()->name(), world);
    std::fflush(stderr);
    std::_Exit(2);
  }
  return done.get();
}

// run_guarded, rethrowing what a rank threw (gtest reports it as the test's failure).
inline void run_ok(int world, const std::function<void(dist::Communicator&)>& fn) {
  if (std::exception_ptr e = run_guarded(world, fn)) std::rethrow_exception(e);
}

}  // namespace remoe::test
