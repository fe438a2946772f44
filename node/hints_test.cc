// HintPolicy on its own: caps, the window and the delivery rate, with time passed in.
#include "node/hints.h"

#include <catch2/catch.hpp>

using namespace node;

namespace {
ring::NodeId id_of(std::uint8_t b) {
  ring::NodeId id{};
  id[0] = b;
  return id;
}
}  // namespace

TEST_CASE("hints stop at the per-target and total caps, counted", "[hints]") {
  HintPolicy p({.window_ms = 1000, .per_target_max = 2, .total_max = 3, .deliveries_per_s = 10});
  CHECK(p.admit(id_of(1)));
  CHECK(p.admit(id_of(1)));
  CHECK_FALSE(p.admit(id_of(1)));  // per target
  CHECK(p.admit(id_of(2)));
  CHECK_FALSE(p.admit(id_of(3)));  // in all
  CHECK(p.counters().dropped_cap == 2);
  CHECK(p.pending_total() == 3);
  p.release(id_of(2), false);  // its commit failed: room for one more
  CHECK(p.pending_total() == 2);
  CHECK(p.admit(id_of(3)));
  p.release(id_of(3), true);  // committed: still counted until the next recount
  CHECK_FALSE(p.admit(id_of(4)));
}

TEST_CASE("a target down longer than the window gets no new hints", "[hints]") {
  HintPolicy p({.window_ms = 1000, .per_target_max = 10, .total_max = 10, .deliveries_per_s = 10});
  Cluster c(id_of(9), "127.0.0.1:1", 16, "");
  MemberInfo me, other;
  me.member.id = id_of(9);
  me.member.vnodes = 16;
  me.member.addr = "127.0.0.1:1";
  me.self = true;
  other.member.id = id_of(1);
  other.member.vnodes = 16;
  other.member.addr = "127.0.0.1:2";
  other.alive = true;
  c.update({me, other});
  p.observe(c, 10'000);  // seen alive at 10 s
  other.alive = false;
  c.update({me, other});
  p.observe(c, 10'500);
  CHECK(p.window_open(id_of(1), 10'900));
  CHECK(p.window_open(id_of(1), 11'000));
  CHECK_FALSE(p.window_open(id_of(1), 11'001));
  CHECK(p.counters().dropped_window == 1);
  CHECK(p.window_open(id_of(7), 99'000));  // never heard of: no opinion
  other.alive = true;  // back: the window starts over when it goes down next
  c.update({me, other});
  p.observe(c, 20'000);
  CHECK(p.window_open(id_of(1), 20'500));
}

TEST_CASE("hint delivery keeps to its rate with at most one second of burst", "[hints]") {
  HintPolicy p({.window_ms = 1000, .per_target_max = 10, .total_max = 10, .deliveries_per_s = 10});
  CHECK(p.deliverable(0) == 0);
  CHECK(p.deliverable(500) == 5);
  p.take(5);
  CHECK(p.deliverable(600) == 1);
  CHECK(p.deliverable(60'000) == 10);  // an idle minute buys one second's worth, no more
  p.take(10);
  CHECK(p.deliverable(60'050) == 0);
}

TEST_CASE("a token bucket accrues at its rate up to its cap, and takes back what is given", "[hints]") {
  TokenBucket b(100, 10);  // 100 a second, bursts of 10
  b.start_at(1'000);
  CHECK(b.refill(1'000) == 0);
  CHECK_FALSE(b.take_one(1'005));  // half a unit
  CHECK(b.take_one(1'015));        // 1.5 accrued by now: one spent
  CHECK(b.tokens() == Approx(0.5));
  CHECK(b.refill(60'000) == 10);   // an idle minute buys the cap, no more
  b.take(12);                      // a transfer may cost more than is left
  CHECK(b.tokens() == Approx(-2));
  b.give(1);
  CHECK(b.tokens() == Approx(-1));
  b.give(50);
  CHECK(b.tokens() == 10);  // given back, never beyond the cap
  TokenBucket fresh(2, 1);
  CHECK(fresh.take_one(5'000));  // never started: counts from time 0, so it is full
}
