#include "node/hints.h"

#include <algorithm>
#include <iterator>

namespace node {

void HintPolicy::observe(const Cluster& cluster, std::uint64_t now_ms) {
  for (const ring::Member& m : cluster.ring()->members()) {
    const Replica* r = cluster.find(m.id);
    if (r == nullptr) continue;
    // A member first heard of while down counts as down from then on.
    auto [it, fresh] = last_alive_ms_.try_emplace(m.id, now_ms);
    if (r->alive || r->self) it->second = now_ms;
    (void)fresh;
  }
}

bool HintPolicy::window_open(const ring::NodeId& target, std::uint64_t now_ms) {
  auto it = last_alive_ms_.find(target);
  if (it == last_alive_ms_.end() || now_ms - it->second <= config_.window_ms) return true;
  counters_.dropped_window++;
  return false;
}

bool HintPolicy::admit(const ring::NodeId& target) {
  Pending& p = pending_[target];
  if (p.total() >= config_.per_target_max || pending_total() >= config_.total_max) {
    counters_.dropped_cap++;
    return false;
  }
  p.in_flight++;
  in_flight_total_++;
  return true;
}

void HintPolicy::release(const ring::NodeId& target, bool stored) {
  Pending& p = pending_[target];
  ASSERT(p.in_flight > 0 && in_flight_total_ > 0);
  p.in_flight--;
  in_flight_total_--;
  if (!stored) return;
  p.since++;
  since_total_++;
}

void HintPolicy::refresh(blobstore::BlobStore& store, std::uint64_t now_ms) {
  if (counted_ && now_ms - counted_at_ms_ < limits::hint_count_interval_ms) return;
  auto rows = store.hints_by_target();
  if (!rows.is_ok()) return;  // keep the last count
  counted_ = true;
  counted_at_ms_ = now_ms;
  // Hints still in flight stay; the committed ones are all in the new count.
  for (auto it = pending_.begin(); it != pending_.end();) {
    it->second.count = it->second.since = 0;
    it = it->second.in_flight == 0 ? pending_.erase(it) : std::next(it);
  }
  total_ = since_total_ = 0;
  for (const auto& t : rows.value()) {
    Pending& p = pending_[t.target];
    p.count = t.count;
    p.oldest_hlc = t.oldest_hlc;
    total_ += t.count;
  }
}

std::size_t HintPolicy::deliverable(std::uint64_t now_ms) {
  double tokens = delivery_.refill(now_ms);
  return tokens < 1 ? 0 : static_cast<std::size_t>(tokens);
}

nlohmann::json HintPolicy::targets_json(const Cluster& cluster, std::uint64_t wall_ms) const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [id, p] : pending_) {
    if (p.total() == 0) continue;
    const Replica* r = cluster.find(id);
    std::uint64_t oldest_ms = p.oldest_hlc >> 16;  // the HLC's wall-clock part
    out.push_back({{"id", ring::hex_id(id)}, {"addr", r ? r->addr : std::string()},
                   {"alive", r ? r->alive : false}, {"count", p.total()},
                   {"oldest_age_ms", oldest_ms && wall_ms > oldest_ms ? wall_ms - oldest_ms : 0}});
  }
  return out;
}

}  // namespace node
