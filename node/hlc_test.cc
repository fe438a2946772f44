#include "node/hlc.h"

#include <catch2/catch.hpp>

#include "node/clock_watch.h"

using node::ClockWatch;
using node::Hlc;

TEST_CASE("the clock takes versions within the drift and refuses the rest", "[hlc]") {
  Hlc h(60'000);
  const std::uint64_t wall = 1'700'000'000'000;
  std::uint64_t v1 = h.now(wall);
  CHECK(v1 == wall << 16);
  CHECK(h.now(wall) == v1 + 1);  // same ms: the counter
  CHECK(h.now(wall - 5'000) == v1 + 2);  // the wall clock went back: still forward

  CHECK(h.observe((wall + 59'000) << 16, wall));
  CHECK(h.now(wall) == ((wall + 59'000) << 16) + 1);

  // Over the drift: refused, the clock unmoved.
  CHECK_FALSE(h.acceptable((wall + 60'001) << 16, wall));
  CHECK_FALSE(h.observe((wall + 3'600'000) << 16, wall));
  CHECK_FALSE(h.observe(~0ull, wall));  // the top of the range: it wrapped every clock
  CHECK(h.now(wall) == ((wall + 59'000) << 16) + 2);
}

TEST_CASE("the clock never wraps, whatever the wall clock says", "[hlc]") {
  Hlc h(60'000);
  // A wall clock at the end of the 48-bit range: versions still only grow.
  std::uint64_t last = h.now(Hlc::wall_ms_max);
  for (int i = 0; i < 1000; i++) {
    std::uint64_t v = h.now(Hlc::wall_ms_max);
    REQUIRE(v > last);
    last = v;
  }
  CHECK_FALSE(h.observe(~0ull, Hlc::wall_ms_max));
}

TEST_CASE("clock offsets: the median of the peers, stale samples forgotten", "[hlc]") {
  ClockWatch w;
  CHECK(w.view(0).peers == 0);
  CHECK_FALSE(w.view(0).far_off);
  // Four peers 30 s ahead of this node: it is 30 s behind.
  for (int i = 0; i < 4; i++) w.sample("p" + std::to_string(i), 30'000, 1'000);
  ClockWatch::View v = w.view(2'000);
  CHECK(v.peers == 4);
  CHECK(v.offset_ms == 30'000);
  CHECK(v.far_off);
  // One peer off among five: the median is that of the others.
  ClockWatch x;
  x.sample("a", 10, 0);
  x.sample("b", -20, 0);
  x.sample("c", 0, 0);
  x.sample("d", -30'000, 0);
  x.sample("e", 5, 0);
  CHECK(x.view(0).offset_ms == 0);
  CHECK_FALSE(x.view(0).far_off);
  // A sample older than a minute does not count.
  CHECK(x.view(node::limits::clock_sample_max_age_ms + 1).peers == 0);
}

TEST_CASE("HTTP dates parse, and nothing else does", "[hlc]") {
  CHECK(node::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777);
  CHECK(node::parse_http_date("Sun, 06 Nov 1994 08:49:37") == -1);
  CHECK(node::parse_http_date("") == -1);
  CHECK(node::parse_http_date("yesterday") == -1);
  CHECK(node::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT trailing") == -1);
}
