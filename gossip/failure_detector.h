// Phi-accrual failure detection (Hayashibara et al., 2004) over the times at which a
// peer's heartbeats reach us, directly or through other peers' gossip.
//
// phi(t) = -log10(P(the next heartbeat arrives later than t since the last one)), with
// the intervals taken as normally distributed (mean and standard deviation of a window
// of recent intervals), as Akka does. A peer is alive while phi < phi_convict.
//
// Why not Cassandra's exponential estimate, phi = log10(e) * t / mean: it reaches 8 only
// at t = 18.4 * mean, i.e. ~18 s with one heartbeat a second, and the target here is a
// dead peer convicted in under 10 s at phi 8 with 1 s gossip. The normal estimate
// convicts at t = mean + 5.6 * stddev: ~5 s at mean 1 s and the stddev floor of 0.7 s
// (limits.h), later for a peer whose heartbeats arrive irregularly.
//
// Pure code: time is passed in. PhiModel holds what all peers share (one per
// Membership); ArrivalWindow is one peer's history (one per member).
#pragma once

#include <cstdint>
#include <vector>

namespace gossip {

class PhiModel {
 public:
  // REQUIRES: interval_ms within limits; 0 < phi_convict <= 300 (phi beyond ~300 is
  // below the smallest double probability).
  PhiModel(std::uint32_t interval_ms, double phi_convict);

  double phi_convict() const { return phi_convict_; }
  // The interval a new peer starts with, so that it is not convicted before its second
  // heartbeat can arrive.
  double initial_interval_ms() const { return initial_interval_ms_; }
  double stddev_min_ms() const { return stddev_min_ms_; }
  // Intervals outside [sample_ms_min, sample_ms_max] move the last arrival but are not
  // samples: shorter ones are the same news arriving by two paths, longer ones are gaps.
  double sample_ms_min() const { return sample_ms_min_; }
  double sample_ms_max() const { return sample_ms_max_; }

  // phi after `delta_ms` without news, for intervals of this mean and stddev.
  double phi(double delta_ms, double mean_ms, double stddev_ms) const;
  // The delta at which phi reaches phi_convict: mean + z * max(stddev, stddev_min).
  double convict_delta_ms(double mean_ms, double stddev_ms) const;

 private:
  double phi_convict_;
  double z_convict_;  // solves -log10(Q(z)) = phi_convict, Q the normal tail
  double initial_interval_ms_;
  double stddev_min_ms_;
  double sample_ms_min_;
  double sample_ms_max_;
};

// One peer's recent heartbeat arrival intervals (up to limits::phi_window_samples) and
// the time at which it will be convicted if no heartbeat arrives.
class ArrivalWindow {
 public:
  // Starts over with one sample of model.initial_interval_ms(): a new peer, or a new
  // generation of a known one (it restarted, so it is alive now).
  void reset(std::uint64_t now_ms, const PhiModel& model);
  // A newer heartbeat of the peer arrived.
  void on_heartbeat(std::uint64_t now_ms, const PhiModel& model);

  bool alive(std::uint64_t now_ms) const { return now_ms < convict_at_ms_; }
  double phi(std::uint64_t now_ms, const PhiModel& model) const;
  std::uint64_t last_arrival_ms() const { return last_arrival_ms_; }
  std::uint64_t convict_at_ms() const { return convict_at_ms_; }
  std::size_t sample_count() const { return samples_.size(); }
  double mean_ms() const;
  double stddev_ms() const;

 private:
  void add_sample(std::uint64_t interval_ms);
  void update_deadline(const PhiModel& model);

  // A ring of intervals in ms; grows to limits::phi_window_samples, then wraps at next_.
  std::vector<std::uint16_t> samples_;
  std::uint32_t next_ = 0;
  std::uint64_t sum_ms_ = 0;     // exact: 1,000 samples of at most 65,535
  std::uint64_t sum_sq_ms_ = 0;  // exact: 1,000 * 65,535^2 < 2^53 (so is its double)
  std::uint64_t last_arrival_ms_ = 0;
  std::uint64_t convict_at_ms_ = 0;
};

}  // namespace gossip
