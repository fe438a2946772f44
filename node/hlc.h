// Hybrid logical clock: versions are (48-bit wall-clock ms << 16 | 16-bit counter), never
// going backwards even when the wall clock does.
//
// A version from elsewhere moves this clock forward only when it is at most
// max_drift_ms ahead of this node's wall clock (acceptable()); the callers refuse
// the others (the replica write, the hint, the repair, the transfer that carried it).
// Without that bound one version near the top of the range, from a node whose clock
// was far ahead or from a damaged peer, spread by anti-entropy and took every clock
// with it: later versions wrapped to 0 and lost to it for good.
// Pure: the wall clock comes in as an argument (the node's common::Clock::wall_ms()).
// Thread: one owner (the loop).
#pragma once

#include <cstdint>

namespace node {

namespace limits {
// A version more than this far ahead of the receiver's wall clock is refused. NTP keeps
// clocks within milliseconds; a minute leaves room for a node whose NTP is broken, and a
// write refused over it is an error the operator sees, not a silent loss.
inline constexpr std::uint64_t version_drift_ms_default = 60'000;
}  // namespace limits

class Hlc {
 public:
  // The largest wall-clock ms a version holds (48 bits): year 10889.
  static constexpr std::uint64_t wall_ms_max = (1ull << 48) - 1;

  explicit Hlc(std::uint64_t max_drift_ms = limits::version_drift_ms_default) : max_drift_ms_(max_drift_ms) {}

  // Returns a value greater than every earlier one and than any value passed to
  // observe(). It never wraps: observe() takes nothing past wall_ms_max.
  std::uint64_t now(std::uint64_t wall_ms);
  // Whether a version seen from elsewhere is at most max_drift_ms ahead of wall_ms.
  bool acceptable(std::uint64_t hlc, std::uint64_t wall_ms) const;
  // Moves the clock past a version seen from elsewhere. False (and the clock unmoved)
  // when it is not acceptable() now.
  bool observe(std::uint64_t hlc, std::uint64_t wall_ms);
  std::uint64_t max_drift_ms() const { return max_drift_ms_; }

 private:
  std::uint64_t last_ = 0;
  std::uint64_t max_drift_ms_;
};

}  // namespace node
