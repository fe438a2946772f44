#include "ring/ring.h"

// The counting operator new below pairs malloc with free; GCC cannot see that pairing.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <new>
#include <set>

using namespace ring;

namespace {

std::atomic<long> g_allocations{0};

NodeId make_id(const std::string& seed) {
  Sha1Digest d = sha1(seed);
  NodeId id{};
  std::copy(d.begin(), d.begin() + 16, id.begin());
  return id;
}

std::vector<Member> equal_members(int n, const std::string& seed = "node-") {
  std::vector<Member> ms;
  for (int i = 0; i < n; i++) ms.push_back(Member{make_id(seed + std::to_string(i))});
  return ms;
}

std::shared_ptr<const Ring> build(std::vector<Member> ms) {
  auto r = Ring::build(std::move(ms));
  REQUIRE(r.is_ok());
  return r.value();
}

}  // namespace

// ASan replaces the allocator itself: count allocations only in plain builds.
#if !defined(__SANITIZE_ADDRESS__)
void* operator new(std::size_t n) {
  g_allocations++;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#define RINGSTORE_COUNTS_ALLOCATIONS 1
#endif

TEST_CASE("the most loaded of 10-100 equal nodes carries at most 10% over the mean",
          "[ring]") {
  for (int n : {10, 25, 50, 100}) {
    for (const char* seed : {"node-", "host-", "x"}) {
      auto r = build(equal_members(n, seed));
      auto shares = r->primary_shares();
      double mean = 1.0 / n;
      double max = *std::max_element(shares.begin(), shares.end());
      INFO(n << " nodes, seed " << seed << ": max/mean " << max / mean);
      CHECK(max / mean <= 1.10);
      double sum = 0;
      for (double s : shares) sum += s;
      CHECK(sum == Approx(1.0).epsilon(1e-9));
    }
  }
}

TEST_CASE("adding a node moves only its share of keys, and only to it", "[ring]") {
  for (int n : {10, 50}) {
    auto before = build(equal_members(n));
    auto with = equal_members(n);
    with.push_back(Member{make_id("newcomer")});
    auto after = build(with);
    const int keys = 100'000;
    int moved = 0;
    for (int k = 0; k < keys; k++) {
      std::uint64_t pos = key_position("key-" + std::to_string(k));
      PreferenceList a, b;
      before->preference_list(pos, 3, &a);
      after->preference_list(pos, 3, &b);
      if (a.nodes[0] != b.nodes[0]) {
        moved++;
        REQUIRE(b.nodes[0] == static_cast<std::uint32_t>(n));  // the new node
      }
      // A replica set changes only by the new node taking one place.
      int newcomers = 0, kept = 0;
      for (std::uint32_t m : b.view()) {
        if (m == static_cast<std::uint32_t>(n)) {
          newcomers++;
        } else {
          kept += std::count(a.nodes.begin(), a.nodes.begin() + a.size, m) > 0;
        }
      }
      REQUIRE(newcomers + kept == 3);
    }
    double fraction = static_cast<double>(moved) / keys;
    INFO(n << " nodes: moved " << fraction << " vs 1/(n+1) = " << 1.0 / (n + 1));
    CHECK(fraction <= 1.1 / (n + 1));
    CHECK(fraction > 0.5 / (n + 1));
  }
}

TEST_CASE("preference lists hold distinct nodes, distinct zones first", "[ring]") {
  auto ms = equal_members(6);
  for (int i = 0; i < 6; i++) ms[i].zone = "zone-" + std::to_string(i % 3);
  auto r = build(ms);
  for (int k = 0; k < 2000; k++) {
    PreferenceList p = r->preference_list_for_key("k" + std::to_string(k), 3);
    REQUIRE(p.size == 3);
    std::set<std::string> zones;
    for (std::uint32_t m : p.view()) zones.insert(r->members()[m].zone);
    REQUIRE(zones.size() == 3);
  }
  // Two zones for three replicas: both zones, then the next distinct node.
  for (int i = 0; i < 6; i++) ms[i].zone = i < 3 ? "a" : "b";
  r = build(ms);
  PreferenceList p = r->preference_list_for_key("x", 3);
  REQUIRE(p.size == 3);
  CHECK(r->members()[p.nodes[0]].zone != r->members()[p.nodes[1]].zone);
  CHECK(p.nodes[2] != p.nodes[0]);
  CHECK(p.nodes[2] != p.nodes[1]);
}

TEST_CASE("small rings and invalid members", "[ring]") {
  auto empty = build({});
  CHECK(empty->preference_list_for_key("k", 3).size == 0);
  auto two = build(equal_members(2));
  CHECK(two->preference_list_for_key("k", 3).size == 2);
  auto ms = equal_members(3);
  ms[1].state = MemberState::removed;
  auto r = build(ms);
  for (int k = 0; k < 100; k++) {
    PreferenceList p = r->preference_list_for_key("k" + std::to_string(k), 3);
    for (std::uint32_t m : p.view()) CHECK(m != 1);
  }
  auto dup = equal_members(2);
  dup[1].id = dup[0].id;
  CHECK_FALSE(Ring::build(dup).is_ok());
  auto zero = equal_members(1);
  zero[0].vnodes = 0;
  CHECK_FALSE(Ring::build(zero).is_ok());
  zero[0].vnodes = limits::vnodes_per_node_max + 1;
  CHECK_FALSE(Ring::build(zero).is_ok());
}

TEST_CASE("weight is proportional to vnodes", "[ring]") {
  auto ms = equal_members(10);
  ms[0].vnodes = 2 * limits::vnodes_default;
  auto shares = build(ms)->primary_shares();
  CHECK(shares[0] / shares[1] == Approx(2.0).epsilon(0.15));
}

TEST_CASE("lookups do not allocate", "[ring]") {
#if !defined(RINGSTORE_COUNTS_ALLOCATIONS)
  WARN("allocations are counted only without ASan (the release run checks this)");
  return;
#endif
  auto r = build(equal_members(20));
  PreferenceList p;
  long before = g_allocations.load();
  for (std::uint64_t pos = 0; pos < 10'000; pos++) r->preference_list(pos * 0x9E3779B97F4A7C15ull, 3, &p);
  CHECK(g_allocations.load() == before);
  CHECK(p.size == 3);
}
