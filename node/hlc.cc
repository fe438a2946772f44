#include "node/hlc.h"

#include <ctime>

namespace node {

std::uint64_t Hlc::now(std::uint64_t wall_ms) {
  std::uint64_t candidate = (wall_ms & ((1ull << 48) - 1)) << 16;
  // Same or earlier millisecond: bump the counter (which carries into the ms field).
  last_ = candidate > last_ ? candidate : last_ + 1;
  return last_;
}

void Hlc::observe(std::uint64_t hlc) {
  if (hlc > last_) last_ = hlc;
}

std::uint64_t Hlc::wall_clock_ms() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1'000'000;
}

}  // namespace node
