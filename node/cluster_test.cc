// The current and future rings of a cluster that is changing shape, the pending
// targets that writes get while a member joins or leaves, and the replica scores that
// order the replicas a read asks.
#include "node/cluster.h"
#include "node/replica_scores.h"

#include <catch2/catch.hpp>
#include <string>

namespace node {
namespace {

ring::NodeId id_of(std::uint8_t b) {
  ring::NodeId id{};
  id[0] = b;
  return id;
}

MemberInfo member(std::uint8_t b, ring::MemberState state) {
  MemberInfo m;
  m.member.id = id_of(b);
  m.member.vnodes = 64;
  m.member.state = state;
  m.member.addr = "127.0.0.1:" + std::to_string(3000 + b);
  m.self = b == 1;
  return m;
}

bool has(const std::vector<Replica>& list, std::uint8_t b) {
  for (const Replica& r : list) {
    if (r.id == id_of(b)) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("a joining member serves nothing yet but gets the writes of its future ranges",
          "[cluster]") {
  using S = ring::MemberState;
  Cluster c(id_of(1), "127.0.0.1:3001", 64, "");
  c.update({member(1, S::normal), member(2, S::normal), member(3, S::normal),
            member(4, S::normal), member(5, S::joining)});
  REQUIRE(c.changing());
  CHECK(c.member_count() == 4);
  CHECK(c.future_member_count() == 5);
  std::size_t gains = 0;
  for (int k = 0; k < 2000; k++) {
    std::string key = "key-" + std::to_string(k);
    auto now = c.preference_list(key, 3);
    auto later = c.future_preference_list(key, 3);
    auto pending = c.pending(key, 3);
    REQUIRE(now.size() == 3);
    CHECK_FALSE(has(now, 5));  // not an owner for reads yet
    if (has(later, 5)) {
      gains++;
      REQUIRE(pending.size() == 1);  // exactly the joiner, and nobody else
      CHECK(pending[0].id == id_of(5));
    } else {
      CHECK(pending.empty());
    }
  }
  // The joiner takes 3/5 of the keys' preference lists (one copy each): 1,200 of 2,000.
  CHECK(gains > 1000);
  CHECK(gains < 1400);

  c.update({member(1, S::normal), member(2, S::normal), member(3, S::normal),
            member(4, S::normal), member(5, S::normal)});
  CHECK_FALSE(c.changing());
  CHECK(c.member_count() == 5);
  CHECK(c.pending("key-1", 3).empty());
}

TEST_CASE("a leaving member keeps serving while its ranges go to the next members",
          "[cluster]") {
  using S = ring::MemberState;
  Cluster c(id_of(1), "127.0.0.1:3001", 64, "");
  c.update({member(1, S::normal), member(2, S::leaving), member(3, S::normal),
            member(4, S::normal), member(5, S::normal)});
  REQUIRE(c.changing());
  CHECK(c.member_count() == 5);
  CHECK(c.future_member_count() == 4);
  for (int k = 0; k < 2000; k++) {
    std::string key = "key-" + std::to_string(k);
    auto now = c.preference_list(key, 3);
    auto later = c.future_preference_list(key, 3);
    auto pending = c.pending(key, 3);
    CHECK_FALSE(has(later, 2));
    if (has(now, 2)) {
      REQUIRE(pending.size() == 1);  // the one member that takes its copy over
      CHECK_FALSE(pending[0].id == id_of(2));
      CHECK_FALSE(has(now, pending[0].id[0]));
    } else {
      CHECK(pending.empty());  // keys the leaver does not hold do not move
    }
  }
  // Left and removed members own nothing, now or later.
  c.update({member(1, S::normal), member(2, S::left), member(3, S::removed),
            member(4, S::normal)});
  CHECK_FALSE(c.changing());
  CHECK(c.member_count() == 2);
  auto pl = c.preference_list("key-1", 3);
  CHECK(pl.size() == 2);
  CHECK_FALSE(has(pl, 2));
  CHECK_FALSE(has(pl, 3));
}

}  // namespace node

TEST_CASE("replica scores follow recent answer times and decay when a replica is not asked",
          "[cluster]") {
  node::ReplicaScores s;
  CHECK(s.score("a", 1000) == 0);  // never asked
  s.sample("a", 10, 1000);
  CHECK(s.score("a", 1000) == Approx(10));
  s.sample("a", 20, 1000);
  CHECK(s.score("a", 1000) == Approx(12));  // 10 + 0.2 × (20 − 10)
  CHECK(s.score("a", 2000) == Approx(6));   // halves every second without a sample
  CHECK(s.score("a", 4000) == Approx(1.5));
  s.sample("b", 0.5, 1000);
  // A replica 24× slower than the best goes last; one within 2× + 1 ms does not.
  CHECK(node::ReplicaScores::slow(s.score("a", 1000), s.score("b", 1000)));
  CHECK_FALSE(node::ReplicaScores::slow(1.9, 0.5));
  CHECK_FALSE(node::ReplicaScores::slow(0, 0));
  // Decayed far enough, the slow one is asked again.
  CHECK(node::ReplicaScores::slow(s.score("a", 4000), s.score("b", 4000)));
  CHECK_FALSE(node::ReplicaScores::slow(s.score("a", 5000), s.score("b", 5000)));
}
