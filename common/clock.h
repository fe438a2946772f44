// Clock is where a node reads the time: the wall clock (what versions, expiries, Date
// headers and status timestamps are made of) and a monotonic clock (deadlines, rate
// limits, latencies). node/ and gossip/ take a `const Clock&` instead of reading the
// system, so that a test, and later a simulation of a whole cluster in one thread, runs
// them on a ManualClock it moves by hand. The real one is SystemClock
// (common/system_clock.h).
// Thread: see each implementation.
#pragma once

#include <atomic>
#include <cstdint>

#include "common/assert.h"

namespace common {

class Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds since the Unix epoch (CLOCK_REALTIME). It may jump either way with the
  // system's clock; versions go through the Hlc, which never goes back.
  virtual std::uint64_t wall_ms() const = 0;
  // Milliseconds from an arbitrary start, never going back: the time deadlines are set
  // and checked in. SystemClock answers the loop's cached time (uv_now), the time its
  // timers fire by, so that a deadline set from it is due when a timer says so.
  virtual std::uint64_t monotonic_ms() const = 0;
  // Nanoseconds of the same clock, read fresh (uv_hrtime): for latencies.
  virtual std::uint64_t monotonic_ns() const = 0;
};

// A clock that moves only when told to. Both clocks move together with advance_ms();
// set_wall_ms() moves the wall clock alone (a clock set wrong, an NTP step), either way.
// It may be moved from another thread than the one that reads it (a test moving the
// clock of a node running on its loop thread): each field is one atomic, so a reader
// sees either the old or the new time of each, never a torn one.
class ManualClock final : public Clock {
 public:
  static constexpr std::uint64_t ns_per_ms = 1'000'000;
  // Up to the year 2554 in ns: the wall clock is kept in ns so that advance_ns() moves
  // it by fractions of a millisecond as it moves the monotonic one.
  static constexpr std::uint64_t wall_ms_max = ~0ull / ns_per_ms;

  // REQUIRES: both at most wall_ms_max. The default wall clock is 2023-11-14 22:13:20 UTC.
  explicit ManualClock(std::uint64_t wall_ms = 1'700'000'000'000, std::uint64_t monotonic_ms = 0)
      : wall_ns_(to_ns(wall_ms)), monotonic_ns_(to_ns(monotonic_ms)) {}

  std::uint64_t wall_ms() const override {
    return wall_ns_.load(std::memory_order_relaxed) / ns_per_ms;
  }
  std::uint64_t monotonic_ms() const override { return monotonic_ns() / ns_per_ms; }
  std::uint64_t monotonic_ns() const override {
    return monotonic_ns_.load(std::memory_order_relaxed);
  }

  // Moves both clocks forward. REQUIRES: one thread moves the clock.
  void advance_ns(std::uint64_t ns) {
    ASSERT(wall_ns_.load(std::memory_order_relaxed) <= ~0ull - ns);
    ASSERT(monotonic_ns_.load(std::memory_order_relaxed) <= ~0ull - ns);
    wall_ns_.fetch_add(ns, std::memory_order_relaxed);
    monotonic_ns_.fetch_add(ns, std::memory_order_relaxed);
  }
  void advance_ms(std::uint64_t ms) { advance_ns(to_ns(ms)); }
  // Sets the wall clock alone, forward or back; the monotonic clock stays.
  void set_wall_ms(std::uint64_t ms) { wall_ns_.store(to_ns(ms), std::memory_order_relaxed); }

 private:
  static std::uint64_t to_ns(std::uint64_t ms) {
    ASSERT(ms <= wall_ms_max);
    return ms * ns_per_ms;
  }

  std::atomic<std::uint64_t> wall_ns_;
  std::atomic<std::uint64_t> monotonic_ns_;
};

}  // namespace common
