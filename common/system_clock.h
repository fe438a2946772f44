// SystemClock is the real Clock of a node: the wall clock is CLOCK_REALTIME, the
// monotonic one is libuv's. monotonic_ms() is the loop's cached time (uv_now), not a
// fresh read: a deadline set from it and a uv_timer started at the same moment fall due
// together, as they did when each caller read uv_now itself. monotonic_ns() is
// uv_hrtime (CLOCK_MONOTONIC, the clock uv_now is cut from), read fresh for latencies.
// Thread: the loop's thread for monotonic_ms() (uv_now is not thread-safe); the others
// from any thread.
// Lifetime: `loop` must outlive the clock.
#pragma once

#include <uv.h>

#include <ctime>

#include "common/clock.h"

namespace common {

class SystemClock final : public Clock {
 public:
  explicit SystemClock(const uv_loop_t* loop) : loop_(loop) { ASSERT(loop != nullptr); }

  std::uint64_t wall_ms() const override {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000 +
           static_cast<std::uint64_t>(ts.tv_nsec) / 1'000'000;
  }
  std::uint64_t monotonic_ms() const override { return uv_now(loop_); }
  std::uint64_t monotonic_ns() const override { return uv_hrtime(); }

 private:
  const uv_loop_t* loop_;
};

}  // namespace common
