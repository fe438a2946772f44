#include "gossip/failure_detector.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "common/assert.h"
#include "gossip/limits.h"

namespace gossip {
namespace {

// -log10 of the normal tail Q(y) = P(Z > y). erfc underflows near y = 38, so far in the
// tail use the asymptotic form Q(y) ~ exp(-y^2/2) / (y * sqrt(2 pi)).
double minus_log10_tail(double y) {
  if (y < 30) {
    double q = 0.5 * std::erfc(y / std::numbers::sqrt2);
    return -std::log10(q);
  }
  return (y * y / 2) * std::numbers::log10e + std::log10(y * std::sqrt(2 * std::numbers::pi));
}

}  // namespace

PhiModel::PhiModel(std::uint32_t interval_ms, double phi_convict) : phi_convict_(phi_convict) {
  ASSERT(interval_ms >= limits::interval_ms_min);
  ASSERT(interval_ms <= limits::interval_ms_max);
  ASSERT(phi_convict > 0);
  ASSERT(phi_convict <= 300);
  initial_interval_ms_ = limits::phi_initial_interval_factor * interval_ms;
  stddev_min_ms_ = limits::phi_stddev_min_factor * interval_ms;
  sample_ms_min_ = limits::phi_sample_factor_min * interval_ms;
  sample_ms_max_ = limits::phi_sample_factor_max * interval_ms;
  // -log10(Q(z)) grows with z: bisect. Q(0) = 0.5 gives 0.3; z = 60 gives ~785.
  double lo = -10, hi = 60;
  for (int i = 0; i < 100; i++) {
    double mid = (lo + hi) / 2;
    (minus_log10_tail(mid) < phi_convict ? lo : hi) = mid;
  }
  z_convict_ = hi;
}

double PhiModel::phi(double delta_ms, double mean_ms, double stddev_ms) const {
  double y = (delta_ms - mean_ms) / std::max(stddev_ms, stddev_min_ms_);
  return std::max(0.0, minus_log10_tail(y));
}

double PhiModel::convict_delta_ms(double mean_ms, double stddev_ms) const {
  return mean_ms + z_convict_ * std::max(stddev_ms, stddev_min_ms_);
}

void ArrivalWindow::reset(std::uint64_t now_ms, const PhiModel& model) {
  samples_.clear();
  next_ = 0;
  sum_ms_ = 0;
  sum_sq_ms_ = 0;
  last_arrival_ms_ = now_ms;
  add_sample(static_cast<std::uint64_t>(model.initial_interval_ms()));
  update_deadline(model);
}

void ArrivalWindow::on_heartbeat(std::uint64_t now_ms, const PhiModel& model) {
  if (now_ms < last_arrival_ms_) return;  // the clock is monotonic; ignore, never assert
  std::uint64_t interval = now_ms - last_arrival_ms_;
  last_arrival_ms_ = now_ms;
  auto ms = static_cast<double>(interval);
  if (ms >= model.sample_ms_min() && ms <= model.sample_ms_max()) add_sample(interval);
  update_deadline(model);
}

double ArrivalWindow::phi(std::uint64_t now_ms, const PhiModel& model) const {
  if (now_ms <= last_arrival_ms_) return 0;
  return model.phi(static_cast<double>(now_ms - last_arrival_ms_), mean_ms(), stddev_ms());
}

double ArrivalWindow::mean_ms() const {
  if (samples_.empty()) return 0;
  return static_cast<double>(sum_ms_) / static_cast<double>(samples_.size());
}

double ArrivalWindow::stddev_ms() const {
  if (samples_.size() < 2) return 0;
  double n = static_cast<double>(samples_.size());
  double mean = static_cast<double>(sum_ms_) / n;
  double var = static_cast<double>(sum_sq_ms_) / n - mean * mean;
  return var > 0 ? std::sqrt(var) : 0;
}

void ArrivalWindow::add_sample(std::uint64_t interval_ms) {
  ASSERT(interval_ms <= UINT16_MAX);  // limits.h: phi_sample_factor_max * interval_ms_max
  auto v = static_cast<std::uint16_t>(interval_ms);
  if (samples_.size() < limits::phi_window_samples) {
    if (samples_.capacity() == 0) samples_.reserve(16);  // skips the first few regrowths
    samples_.push_back(v);
  } else {
    std::uint16_t old = samples_[next_];
    sum_ms_ -= old;
    sum_sq_ms_ -= static_cast<std::uint64_t>(old) * old;
    samples_[next_] = v;
    next_ = static_cast<std::uint32_t>((next_ + 1) % limits::phi_window_samples);
  }
  sum_ms_ += v;
  sum_sq_ms_ += static_cast<std::uint64_t>(v) * v;
}

void ArrivalWindow::update_deadline(const PhiModel& model) {
  double delta = model.convict_delta_ms(mean_ms(), stddev_ms());
  convict_at_ms_ = last_arrival_ms_ + static_cast<std::uint64_t>(std::ceil(delta));
}

}  // namespace gossip
