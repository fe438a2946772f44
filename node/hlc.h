// Hybrid logical clock: versions are (48-bit wall-clock ms << 16 | 16-bit counter), never
// going backwards even when the wall clock does. Thread: one owner (the loop).
#pragma once

#include <cstdint>

namespace node {

class Hlc {
 public:
  // Returns a value greater than every earlier one and than any value passed to observe().
  std::uint64_t now(std::uint64_t wall_ms);
  // Moves the clock past a version seen from elsewhere.
  void observe(std::uint64_t hlc);
  static std::uint64_t wall_clock_ms();

 private:
  std::uint64_t last_ = 0;
};

}  // namespace node
