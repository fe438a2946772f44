// TokenBucket is a rate limit: units accrue continuously at `per_sec` up to `cap` (the
// largest burst), are spent by take() and can be given back. The hint delivery rate, the
// anti-entropy transfer budget and the read repair budget are each one of these.
// Thread: its owner's (here, always the loop thread). Times are milliseconds of one
// monotonic clock, never going back.
#pragma once

#include <algorithm>
#include <cstdint>

namespace node {

class TokenBucket {
 public:
  TokenBucket(double per_sec, double cap) : per_sec_(per_sec), cap_(cap) {}
  // Accrual counts from here (by default from time 0, so the first refill fills it).
  void start_at(std::uint64_t now_ms) { at_ms_ = now_ms; }
  // Adds what accrued since the last refill; returns the units held.
  double refill(std::uint64_t now_ms) {
    tokens_ = std::min(cap_, tokens_ + static_cast<double>(now_ms - at_ms_) * per_sec_ / 1000.0);
    at_ms_ = now_ms;
    return tokens_;
  }
  double tokens() const { return tokens_; }
  void take(double n) { tokens_ -= n; }
  void give(double n) { tokens_ = std::min(cap_, tokens_ + n); }
  // Refills, then spends one unit if there is a whole one.
  bool take_one(std::uint64_t now_ms) {
    if (refill(now_ms) < 1) return false;
    tokens_ -= 1;
    return true;
  }

 private:
  double per_sec_, cap_;
  double tokens_ = 0;
  std::uint64_t at_ms_ = 0;
};

}  // namespace node
