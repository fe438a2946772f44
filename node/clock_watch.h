// ClockWatch tells how far this node's wall clock is from its peers'. Every answer from
// a peer carries its Date header (one-second resolution); the offset of the newest
// answer of each peer is kept, and the median over the peers heard from in the last
// minute is this node's offset. A median ignores one peer that is off itself: with
// five nodes and one of them 30 s behind, only that one sees a median of +30 s.
// Versions more than Hlc::max_drift_ms ahead are refused by their receivers, so a node
// far ahead has its writes refused, and one far behind wins no write on its own clock
// (the coordinator writes again above the version it lost to): either way the operator
// should hear of it, which is what far_off is for (the log, /_/status, the admin page).
// Pure: no clock reads, no I/O. Thread: one owner (the loop).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>

namespace node {

namespace limits {
// An offset this large is reported. The Date header's second and the time in flight
// make a sample ±1 s; a quarter of the default 60 s version drift is far above that.
inline constexpr std::int64_t clock_offset_warn_ms = 15'000;
// A peer's sample counts for this long.
inline constexpr std::uint64_t clock_sample_max_age_ms = 60'000;
}  // namespace limits

class ClockWatch {
 public:
  struct View {
    std::size_t peers = 0;            // peers with a recent sample
    std::int64_t offset_ms = 0;       // median of peer clock - this clock; 0 with no peer
    bool far_off = false;             // |offset_ms| > clock_offset_warn_ms
  };

  // offset_ms: the peer's clock minus this node's, as one answer showed it.
  void sample(const std::string& peer, std::int64_t offset_ms, std::uint64_t now_ms);
  View view(std::uint64_t now_ms) const;

 private:
  struct Sample {
    std::int64_t offset_ms;
    std::uint64_t at_ms;
  };
  std::unordered_map<std::string, Sample> last_;
};

// Seconds since the epoch of an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), or -1.
std::int64_t parse_http_date(const std::string& text);

}  // namespace node
