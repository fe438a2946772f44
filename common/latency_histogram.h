// LatencyHistogram: a cumulative histogram of durations with bounds fine enough for the
// stages of a write (tens of microseconds to a second), for /_/metrics in the
// Prometheus text format.
// Thread: observe() from any thread (relaxed atomics: a scrape may see a bucket and the
// count a few observations apart); write() from any thread.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace common {

class LatencyHistogram {
 public:
  static constexpr std::array<double, 16> bounds = {0.00005, 0.0001, 0.00025, 0.0005, 0.00075,
                                                    0.001,   0.0015, 0.002,   0.003,  0.005,
                                                    0.0075,  0.01,   0.025,   0.05,   0.1,
                                                    1.0};
  void observe_ns(std::uint64_t ns) {
    const double s = static_cast<double>(ns) / 1e9;
    for (std::size_t i = 0; i < bounds.size(); i++) {
      if (s <= bounds[i]) {
        counts_[i].fetch_add(1, std::memory_order_relaxed);
        break;  // stored per bucket; write() makes them cumulative
      }
    }
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(ns, std::memory_order_relaxed);
  }
  // Observes the time from start_ns to end_ns, both of one monotonic clock in ns
  // (common::Clock::monotonic_ns()).
  void observe_between_ns(std::uint64_t start_ns, std::uint64_t end_ns) {
    observe_ns(end_ns > start_ns ? end_ns - start_ns : 0);
  }
  // Observes the time from `start` to `end` (now, by default).
  void observe_since(std::chrono::steady_clock::time_point start,
                     std::chrono::steady_clock::time_point end = std::chrono::steady_clock::now()) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count();
    observe_ns(ns > 0 ? static_cast<std::uint64_t>(ns) : 0);
  }
  std::uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  std::uint64_t sum_ns() const { return sum_ns_.load(std::memory_order_relaxed); }

  // Appends name_bucket{labels,le=...}, name_sum and name_count lines; `labels` is like
  // `stage="queue"` (never empty).
  void write(std::string& out, const std::string& name, const std::string& labels) const {
    char buf[64];
    std::uint64_t running = 0;
    for (std::size_t i = 0; i < bounds.size(); i++) {
      running += counts_[i].load(std::memory_order_relaxed);
      std::snprintf(buf, sizeof buf, "%g", bounds[i]);
      out += name + "_bucket{" + labels + ",le=\"" + buf + "\"} " + std::to_string(running) + "\n";
    }
    const std::uint64_t n = count();
    out += name + "_bucket{" + labels + ",le=\"+Inf\"} " + std::to_string(n) + "\n";
    std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(sum_ns()) / 1e9);
    out += name + "_sum{" + labels + "} " + buf + "\n";
    out += name + "_count{" + labels + "} " + std::to_string(n) + "\n";
  }

 private:
  std::array<std::atomic<std::uint64_t>, bounds.size()> counts_{};
  std::atomic<std::uint64_t> count_{0}, sum_ns_{0};
};

}  // namespace common
