// HintPolicy decides which hints this node takes and how fast it hands them over, as an
// operator of Cassandra expects:
//  - a hint window: a target that has been down longer than window_ms gets no new
//    hints (its misses are left to anti-entropy);
//  - caps: at most per_target_max hints held here for one target and total_max in all;
//    a write beyond a cap stores no hint (counted), and the miss is left to anti-entropy;
//  - a delivery rate: at most deliveries_per_s hints handed over per second.
// Pending hints per target come from the index (stand-in copies and missed-write
// records together), recounted every hint_count_interval_ms; hints admitted but not yet
// committed, and those committed since the count, are added. A commit that lands just
// after a recount is counted twice until the next one: the cap errs on the safe side
// and is never exceeded.
// Thread: the loop thread only. Lifetime: owned by the Server.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "blobstore/blob_store.h"
#include "node/cluster.h"
#include "node/healing_limits.h"
#include "node/token_bucket.h"

namespace node {

struct HintConfig {
  std::uint64_t window_ms = limits::hint_window_ms_default;
  std::uint64_t per_target_max = limits::hints_per_target_max_default;
  std::uint64_t total_max = limits::hints_total_max_default;
  std::uint32_t deliveries_per_s = limits::hint_deliveries_per_s_default;
};

struct HintCounters {
  std::uint64_t dropped_cap = 0;     // hints not stored: a cap was reached
  std::uint64_t dropped_window = 0;  // hints not stored: the target was down too long
};

class HintPolicy {
 public:
  // At most one second's worth in a burst: a returning owner is never flooded.
  explicit HintPolicy(HintConfig config)
      : config_(config), delivery_(config.deliveries_per_s, config.deliveries_per_s) {}

  // Follows liveness: when each member was last seen alive (now_ms: the loop clock).
  void observe(const Cluster& cluster, std::uint64_t now_ms);
  // False when `target` has been down longer than the window (counted).
  bool window_open(const ring::NodeId& target, std::uint64_t now_ms);
  // Takes one hint for `target` if no cap is reached; false (counted) otherwise. Every
  // true is followed by one release() when the hint's commit finished.
  bool admit(const ring::NodeId& target);
  void release(const ring::NodeId& target, bool stored);
  // Recounts pending hints per target from the index (paced).
  void refresh(blobstore::BlobStore& store, std::uint64_t now_ms);
  // Hints that may be handed over now (token bucket); take() spends them.
  std::size_t deliverable(std::uint64_t now_ms);
  void take(std::size_t n) { delivery_.take(static_cast<double>(n)); }

  // [{id, addr, count, oldest_age_ms, alive, down_ms}] for /_/status.
  nlohmann::json targets_json(const Cluster& cluster, std::uint64_t wall_ms) const;
  const HintCounters& counters() const { return counters_; }
  const HintConfig& config() const { return config_; }
  std::uint64_t pending_total() const { return total_ + since_total_ + in_flight_total_; }

 private:
  struct Pending {
    std::uint64_t count = 0;     // committed, at the last recount
    std::uint64_t since = 0;     // committed since the recount
    std::uint64_t in_flight = 0; // admitted, commit not finished
    std::uint64_t oldest_hlc = 0;
    std::uint64_t total() const { return count + since + in_flight; }
  };
  HintConfig config_;
  HintCounters counters_;
  std::map<ring::NodeId, Pending> pending_;
  std::uint64_t total_ = 0, since_total_ = 0, in_flight_total_ = 0;
  std::uint64_t counted_at_ms_ = 0;
  bool counted_ = false;
  std::map<ring::NodeId, std::uint64_t> last_alive_ms_;  // loop clock
  TokenBucket delivery_;
};

}  // namespace node
