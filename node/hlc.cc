#include "node/hlc.h"

#include "common/assert.h"

namespace node {

std::uint64_t Hlc::now(std::uint64_t wall_ms) {
  std::uint64_t candidate = (wall_ms & wall_ms_max) << 16;
  // Same or earlier millisecond: bump the counter (which carries into the ms field).
  // last_ is at most (wall_ms_max + drift) << 16 | 0xffff, far below 2^64, so +1 never wraps.
  ASSERT(last_ < ~0ull);
  last_ = candidate > last_ ? candidate : last_ + 1;
  return last_;
}

bool Hlc::acceptable(std::uint64_t hlc, std::uint64_t wall_ms) const {
  std::uint64_t ms = hlc >> 16;
  return ms < wall_ms_max && ms <= wall_ms + max_drift_ms_;
}

bool Hlc::observe(std::uint64_t hlc, std::uint64_t wall_ms) {
  if (!acceptable(hlc, wall_ms)) return false;
  if (hlc > last_) last_ = hlc;
  return true;
}

}  // namespace node
