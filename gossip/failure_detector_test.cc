// Phi accrual: when a peer is convicted, for regular and irregular heartbeats.
#include "gossip/failure_detector.h"

#include <catch2/catch.hpp>
#include <cmath>

#include "common/rng.h"
#include "gossip/limits.h"

namespace gossip {

TEST_CASE("phi is -log10 of the normal tail", "[gossip][phi]") {
  PhiModel model(1000, 8.0);
  CHECK(model.phi(1000, 1000, 1000) == Approx(-std::log10(0.5)));  // at the mean: Q(0) = 0.5
  CHECK(model.phi(0, 1000, 1000) < 0.1);
  CHECK(model.phi(3000, 1000, 1000) == Approx(-std::log10(0.02275)).epsilon(0.01));  // 2 sigma
  // Far in the tail, no overflow or infinity.
  CHECK(std::isfinite(model.phi(1e9, 1000, 1000)));
  CHECK(model.phi(1e9, 1000, 1000) > 1000);
  // phi reaches phi_convict exactly at the conviction delta.
  double delta = model.convict_delta_ms(1000, 1000);
  CHECK(model.phi(delta, 1000, 1000) == Approx(8.0).epsilon(1e-6));
  // z for phi 8 is about 5.6: mean + 5.6 sigma.
  CHECK(delta == Approx(1000 + 5.612 * 1000).epsilon(0.001));
  // The stddev floor applies to both.
  CHECK(model.convict_delta_ms(1000, 1) == model.convict_delta_ms(1000, model.stddev_min_ms()));
  CHECK(model.phi(2000, 1000, 1) == model.phi(2000, 1000, model.stddev_min_ms()));
}

TEST_CASE("a new peer is not convicted before its second heartbeat could arrive", "[gossip][phi]") {
  PhiModel model(1000, 8.0);
  ArrivalWindow w;
  w.reset(10'000, model);
  CHECK(w.alive(10'000));
  CHECK(w.alive(10'000 + 2'500));
  CHECK(w.convict_at_ms() > 10'000 + static_cast<std::uint64_t>(model.initial_interval_ms()));
}

TEST_CASE("with 1 s heartbeats a dead peer is convicted within 10 s at phi 8", "[gossip][phi]") {
  PhiModel model(1000, 8.0);
  ArrivalWindow w;
  std::uint64_t t = 0;
  w.reset(t, model);
  for (int i = 0; i < 100; i++) {
    t += 1000;
    w.on_heartbeat(t, model);
  }
  CHECK(w.mean_ms() == Approx(1010).epsilon(0.01));  // 100 samples of 1 s and the initial 2 s
  CHECK(w.alive(t + 4'000));
  CHECK_FALSE(w.alive(t + 10'000));
  CHECK(w.convict_at_ms() - t < 6'000);  // mean + 5.6 * the 0.7 s floor
  CHECK(w.phi(t + 10'000, model) > 8);
}

TEST_CASE("irregular heartbeats make the detector wait longer", "[gossip][phi]") {
  PhiModel model(1000, 8.0);
  common::Rng rng(42);
  ArrivalWindow regular, irregular;
  regular.reset(0, model);
  irregular.reset(0, model);
  std::uint64_t t1 = 0, t2 = 0;
  for (int i = 0; i < 500; i++) {
    t1 += 1000;
    regular.on_heartbeat(t1, model);
    t2 += i % 2 == 0 ? 300 + rng.uniform(100) : 1900 + rng.uniform(100);  // stddev ~0.8 s
    irregular.on_heartbeat(t2, model);
  }
  CHECK(irregular.stddev_ms() > model.stddev_min_ms());
  CHECK(irregular.convict_at_ms() - t2 > regular.convict_at_ms() - t1);
}

TEST_CASE("a gap is not taken as a sample, and arrivals close together are one", "[gossip][phi]") {
  PhiModel model(1000, 8.0);
  ArrivalWindow w;
  std::uint64_t t = 0;
  w.reset(t, model);
  for (int i = 0; i < 20; i++) w.on_heartbeat(t += 1000, model);
  std::size_t samples = w.sample_count();
  double mean = w.mean_ms();
  w.on_heartbeat(t += 60'000, model);  // back after a minute: alive again, nothing learned
  CHECK(w.alive(t));
  CHECK(w.sample_count() == samples);
  CHECK(w.mean_ms() == mean);
  w.on_heartbeat(t += 10, model);  // the same news by another path
  CHECK(w.sample_count() == samples);
  CHECK(w.last_arrival_ms() == t);
  // A clock going backwards is ignored, not asserted on.
  w.on_heartbeat(t - 5'000, model);
  CHECK(w.last_arrival_ms() == t);
}

TEST_CASE("the window keeps the last phi_window_samples intervals", "[gossip][phi]") {
  PhiModel model(1000, 8.0);
  ArrivalWindow w;
  std::uint64_t t = 0;
  w.reset(t, model);
  for (std::size_t i = 0; i < limits::phi_window_samples; i++) w.on_heartbeat(t += 1900, model);
  CHECK(w.sample_count() == limits::phi_window_samples);
  CHECK(w.mean_ms() > 1890);
  for (std::size_t i = 0; i < 2 * limits::phi_window_samples; i++) w.on_heartbeat(t += 1000, model);
  CHECK(w.sample_count() == limits::phi_window_samples);
  CHECK(w.mean_ms() == Approx(1000));  // the 1.9 s intervals (and the initial one) are gone
  CHECK(w.stddev_ms() == Approx(0).margin(1e-6));
}

TEST_CASE("reset after a restart makes the peer alive at once", "[gossip][phi]") {
  PhiModel model(1000, 8.0);
  ArrivalWindow w;
  w.reset(0, model);
  for (int i = 1; i <= 10; i++) w.on_heartbeat(i * 1000, model);
  CHECK_FALSE(w.alive(60'000));
  w.reset(60'000, model);
  CHECK(w.alive(60'000));
  CHECK(w.sample_count() == 1);
}

}  // namespace gossip
