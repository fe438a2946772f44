// The summary arithmetic: XOR leaves are order-free, removal undoes addition, and a
// summary kept current write by write equals one rebuilt from the final rows.
#include "blobstore/summary.h"

#include <catch2/catch.hpp>
#include <map>
#include <random>

#include "ring/hash.h"

using blobstore::Leaf;
using blobstore::RangeSummaries;
using blobstore::Version;

namespace {
Version version(std::uint64_t hlc, std::uint8_t node) {
  Version v;
  v.hlc = hlc;
  v.node[0] = node;
  return v;
}
}  // namespace

TEST_CASE("a leaf's entries cancel out and do not depend on order", "[summary]") {
  Leaf a = blobstore::entry_leaf("alpha", version(10, 1), false);
  Leaf b = blobstore::entry_leaf("beta", version(11, 1), false);
  Leaf ab, ba;
  ab.add(a);
  ab.add(b);
  ba.add(b);
  ba.add(a);
  REQUIRE(ab.same(ba));
  REQUIRE(ab.count == 2);
  REQUIRE(ab.remove(b));
  REQUIRE(ab.same(a));
  REQUIRE(ab.remove(a));
  REQUIRE(ab.empty());
  REQUIRE(ab.h0 == 0);
  REQUIRE(ab.h1 == 0);
  // Removing what was never added is reported, and the counts do not wrap.
  REQUIRE_FALSE(ab.remove(a));
  REQUIRE(ab.count == 0);
}

TEST_CASE("the version and the tombstone flag and the key each change an entry's hash", "[summary]") {
  Leaf base = blobstore::entry_leaf("k", version(5, 1), false);
  CHECK_FALSE(base.same(blobstore::entry_leaf("k", version(6, 1), false)));
  CHECK_FALSE(base.same(blobstore::entry_leaf("k", version(5, 2), false)));
  CHECK_FALSE(base.same(blobstore::entry_leaf("k", version(5, 1), true)));
  CHECK_FALSE(base.same(blobstore::entry_leaf("k2", version(5, 1), false)));
  CHECK(blobstore::entry_leaf("k", version(5, 1), true).tombstones == 1);
  Leaf parsed;
  REQUIRE(Leaf::parse_hash(base.hash_hex(), &parsed));
  CHECK(parsed.h0 == base.h0);
  CHECK(parsed.h1 == base.h1);
  CHECK_FALSE(Leaf::parse_hash("zz", &parsed));
  CHECK_FALSE(Leaf::parse_hash(std::string(32, 'g'), &parsed));
}

TEST_CASE("arcs cover the ring once, the wrapping arc included", "[summary]") {
  RangeSummaries s({100, 200, 300});
  CHECK(s.arc_of(0) == 0);
  CHECK(s.arc_of(100) == 0);
  CHECK(s.arc_of(101) == 1);
  CHECK(s.arc_of(200) == 1);
  CHECK(s.arc_of(300) == 2);
  CHECK(s.arc_of(301) == 0);
  CHECK(s.arc_of(~0ull) == 0);
  std::uint64_t f[2], l[2];
  REQUIRE(s.arc_intervals(1, f, l) == 1);
  CHECK((f[0] == 101 && l[0] == 200));
  REQUIRE(s.arc_intervals(0, f, l) == 2);
  CHECK((f[0] == 301 && l[0] == ~0ull && f[1] == 0 && l[1] == 100));
  RangeSummaries edge({~0ull});
  REQUIRE(edge.arc_intervals(0, f, l) == 1);
  CHECK((f[0] == 0 && l[0] == ~0ull));
  RangeSummaries dup({5, 5});
  CHECK(dup.arc_intervals(1, f, l) == 0);  // two tokens at one position: an empty arc
}

TEST_CASE("incremental summaries equal a rebuild from the final rows", "[summary]") {
  std::mt19937_64 rng(7);
  std::vector<std::uint64_t> tokens;
  for (int i = 0; i < 64; i++) tokens.push_back(rng());
  std::sort(tokens.begin(), tokens.end());
  RangeSummaries incremental(tokens);
  struct Row {
    Version v;
    bool tombstone;
  };
  std::map<std::string, Row> rows;
  // 5,000 random writes, overwrites, deletes and purges, applied as the committer reports
  // them: the old row out, the new row in.
  for (int i = 0; i < 5000; i++) {
    std::string key = "key-" + std::to_string(rng() % 700);
    std::uint64_t pos = ring::key_position(key);
    auto it = rows.find(key);
    if (it != rows.end()) {
      incremental.remove(pos, blobstore::entry_leaf(key, it->second.v, it->second.tombstone));
    }
    if (rng() % 10 == 0) {  // purged
      rows.erase(key);
      continue;
    }
    Row r{version(static_cast<std::uint64_t>(i) + 1, static_cast<std::uint8_t>(rng() % 3)), rng() % 4 == 0};
    rows[key] = r;
    incremental.add(pos, blobstore::entry_leaf(key, r.v, r.tombstone));
  }
  RangeSummaries rebuilt(tokens);
  std::uint64_t tombstones = 0;
  for (const auto& [key, r] : rows) {
    rebuilt.add(ring::key_position(key), blobstore::entry_leaf(key, r.v, r.tombstone));
    tombstones += r.tombstone;
  }
  REQUIRE(incremental == rebuilt);
  std::uint64_t count = 0, tomb = 0;
  for (std::size_t a = 0; a < rebuilt.arc_count(); a++) {
    count += rebuilt.leaf(a).count;
    tomb += rebuilt.leaf(a).tombstones;
  }
  CHECK(count == rows.size());
  CHECK(tomb == tombstones);
  // One differing row shows up in exactly one arc.
  std::string key = rows.begin()->first;
  rebuilt.add(ring::key_position(key), blobstore::entry_leaf(key, version(999999, 9), false));
  int differing = 0;
  for (std::size_t a = 0; a < rebuilt.arc_count(); a++) differing += !rebuilt.leaf(a).same(incremental.leaf(a));
  CHECK(differing == 1);
}
