// ReplicaScores remembers how fast each replica answered this node's reads of late, so
// that a read asks the quick ones first (Cassandra's dynamic snitch): a node that is
// busy (refilling after a disk wipe, overloaded) then stops holding other keys' reads
// back. A score is an exponentially weighted mean of answer times that halves for every
// second without a sample, so a replica passed over is asked again soon and its score
// follows it back when it recovers.
// Thread: the loop thread only.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <unordered_map>

namespace node {

class ReplicaScores {
 public:
  // One answer (or failure: the time it cost) from `addr`.
  void sample(const std::string& addr, double ms, std::uint64_t now_ms) {
    Score& s = scores_[addr];
    double before = decayed(s, now_ms);
    s.mean_ms = s.at_ms == 0 ? ms : before + weight * (ms - before);
    s.at_ms = now_ms;
  }
  // 0 for a replica never sampled.
  double score(const std::string& addr, std::uint64_t now_ms) const {
    auto it = scores_.find(addr);
    return it == scores_.end() ? 0 : decayed(it->second, now_ms);
  }
  // Whether `score` is slow next to the best of the replicas that could answer instead:
  // more than twice as slow and by more than a millisecond, so that noise between
  // healthy replicas never reorders them (their load stays spread by the ring).
  static bool slow(double score, double best) { return score > 2 * best + 1.0; }

 private:
  struct Score {
    double mean_ms = 0;
    std::uint64_t at_ms = 0;
  };
  static constexpr double weight = 0.2;  // of the newest sample
  static double decayed(const Score& s, std::uint64_t now_ms) {
    if (now_ms <= s.at_ms) return s.mean_ms;
    return s.mean_ms * std::exp2(-static_cast<double>(now_ms - s.at_ms) / 1000.0);
  }
  std::unordered_map<std::string, Score> scores_;
};

}  // namespace node
