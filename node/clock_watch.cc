#include "node/clock_watch.h"

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <vector>

namespace node {

namespace {
// Peers tracked: one entry per peer address, so a cluster's size; the map is pruned of
// stale entries when it outgrows this.
constexpr std::size_t peers_max = 4096;
}  // namespace

void ClockWatch::sample(const std::string& peer, std::int64_t offset_ms, std::uint64_t now_ms) {
  if (last_.size() >= peers_max && last_.find(peer) == last_.end()) {
    for (auto it = last_.begin(); it != last_.end();) {
      it = now_ms - it->second.at_ms > limits::clock_sample_max_age_ms ? last_.erase(it) : std::next(it);
    }
    if (last_.size() >= peers_max) return;
  }
  last_[peer] = {offset_ms, now_ms};
}

ClockWatch::View ClockWatch::view(std::uint64_t now_ms) const {
  std::vector<std::int64_t> offsets;
  for (const auto& [peer, s] : last_) {
    if (now_ms - s.at_ms <= limits::clock_sample_max_age_ms) offsets.push_back(s.offset_ms);
  }
  View v;
  v.peers = offsets.size();
  if (offsets.empty()) return v;
  std::sort(offsets.begin(), offsets.end());
  std::size_t mid = offsets.size() / 2;
  v.offset_ms = offsets.size() % 2 == 1 ? offsets[mid] : (offsets[mid - 1] + offsets[mid]) / 2;
  v.far_off = std::llabs(v.offset_ms) > limits::clock_offset_warn_ms;
  return v;
}

std::int64_t parse_http_date(const std::string& text) {
  std::tm tm{};
  const char* end = strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == nullptr || *end != '\0') return -1;
  time_t t = timegm(&tm);
  return t < 0 ? -1 : static_cast<std::int64_t>(t);
}

}  // namespace node
