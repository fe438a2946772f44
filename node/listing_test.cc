// The pure parts of the cluster-wide listing: merging members' answers into a page, the
// page boundary a cut-short answer sets, reading peers' answers without trusting them,
// and the per-arc coverage rule.
#include "node/listing.h"

#include <catch2/catch.hpp>
#include <string>

namespace node {
namespace {

blobstore::Version version(std::uint64_t hlc) {
  blobstore::Version v;
  v.hlc = hlc;
  return v;
}

blobstore::KeyVersion row(const std::string& key, std::uint64_t hlc, bool tombstone = false) {
  return {key, version(hlc), tombstone};
}

ring::NodeId id_of(std::uint8_t b) {
  ring::NodeId id{};
  id[0] = b;
  return id;
}

std::shared_ptr<const ring::Ring> ring_of(int members) {
  std::vector<ring::Member> ms;
  for (int i = 0; i < members; i++) {
    ring::Member m;
    m.id = id_of(static_cast<std::uint8_t>(i + 1));
    m.vnodes = 64;
    ms.push_back(m);
  }
  auto r = ring::Ring::build(ms);
  REQUIRE(r.is_ok());
  return r.value();
}

}  // namespace

TEST_CASE("merged answers: key order, each key once, newest state wins", "[listing]") {
  ListAnswer a{{row("a", 1), row("b", 5, true), row("d", 1)}, ""};
  ListAnswer b{{row("a", 2), row("b", 4), row("c", 1, true)}, ""};
  ListAnswer c{{row("b", 3), row("c", 2), row("e", 1)}, ""};
  std::vector<std::string> keys;
  std::string next;
  merge_list_answers({&a, &b, &c}, 10, &keys, &next);
  // b's newest version is a tombstone (5); c's newest is live (2).
  CHECK(keys == std::vector<std::string>{"a", "c", "d", "e"});
  CHECK(next.empty());

  merge_list_answers({&a, &b, &c}, 2, &keys, &next);
  CHECK(keys == std::vector<std::string>{"a", "c"});
  CHECK(next == "d");

  merge_list_answers({}, 2, &keys, &next);
  CHECK(keys.empty());
  CHECK(next.empty());
}

TEST_CASE("a page ends where the shortest cut-short answer ends", "[listing]") {
  // a listed two rows and holds more from "c" on: nothing it holds past "c" is known, so
  // e (only in b's answer) waits for the next page, which starts at "c".
  ListAnswer a{{row("a", 1), row("b", 1)}, "c"};
  ListAnswer b{{row("a", 1), row("e", 1)}, ""};
  std::vector<std::string> keys;
  std::string next;
  merge_list_answers({&a, &b}, 2, &keys, &next);
  CHECK(keys == std::vector<std::string>{"a", "b"});
  CHECK(next == "c");
  // Tombstones use up a member's rows: the page is short, but says where to go on.
  ListAnswer t{{row("a", 1, true), row("b", 1, true)}, "c"};
  merge_list_answers({&t, &b}, 2, &keys, &next);
  CHECK(keys.empty());
  CHECK(next == "c");
}

TEST_CASE("a peer's listing answer is checked before it is used", "[listing]") {
  std::string v = version(7).to_string();
  ListAnswer good{{row("p/a", 7), row("p/b", 7, true)}, "p/c"};
  ListAnswer out;
  REQUIRE(decode_list_answer(encode_list_answer(good), "p/", "", 2, &out).is_ok());
  REQUIRE(out.rows.size() == 2);
  CHECK(out.rows[1].key == "p/b");
  CHECK(out.rows[1].tombstone);
  CHECK(out.rows[1].version == version(7));
  CHECK(out.next == "p/c");
  const char* bad[] = {
      "",
      "not json",
      "[]",
      "{\"rows\":[]}",
      "{\"rows\":{},\"next\":\"\"}",
      "{\"rows\":[[\"p/a\",\"x\",0]],\"next\":\"\"}",
      "{\"rows\":[[\"p/a\",1,0]],\"next\":\"\"}",
      "{\"rows\":[\"p/a\"],\"next\":\"\"}",
      "{\"rows\":[],\"next\":7}",
  };
  for (const char* body : bad) {
    INFO(body);
    CHECK(!decode_list_answer(body, "p/", "", 2, &out).is_ok());
  }
  auto body = [&](const std::string& rows, const std::string& next) {
    return "{\"rows\":[" + rows + "],\"next\":\"" + next + "\"}";
  };
  auto r = [&](const std::string& k, int tomb = 0) {
    return "[\"" + k + "\",\"" + v + "\"," + std::to_string(tomb) + "]";
  };
  CHECK(decode_list_answer(body(r("p/a") + "," + r("p/b"), ""), "p/", "", 2, &out).is_ok());
  CHECK(!decode_list_answer(body(r("p/b") + "," + r("p/a"), ""), "p/", "", 2, &out).is_ok());
  CHECK(!decode_list_answer(body(r("p/a") + "," + r("p/a"), ""), "p/", "", 2, &out).is_ok());
  CHECK(!decode_list_answer(body(r("q/a"), ""), "p/", "", 2, &out).is_ok());
  CHECK(!decode_list_answer(body(r("p/a"), ""), "p/", "p/b", 2, &out).is_ok());  // before start
  CHECK(!decode_list_answer(body(r("p/a", 3), ""), "p/", "", 2, &out).is_ok());  // no such kind
  REQUIRE(decode_list_answer(body(r("p/a", 2), ""), "p/", "", 2, &out).is_ok());   // unlinked
  CHECK((out.rows[0].tombstone && out.rows[0].unlinked));
  // A value's expiry rides as a fourth element; a tombstone has none.
  const std::string expiring = "[\"p/a\",\"" + v + "\",0,1234]";
  REQUIRE(decode_list_answer(body(expiring, ""), "p/", "", 2, &out).is_ok());
  CHECK(out.rows[0].expires_ms == 1234);
  CHECK(!decode_list_answer(body("[\"p/a\",\"" + v + "\",1,1234]", ""), "p/", "", 2, &out).is_ok());
  CHECK(!decode_list_answer(body(r("p/a") + "," + r("p/b"), ""), "p/", "", 1, &out).is_ok());
  CHECK(!decode_list_answer(body(r("p/b"), "p/a"), "p/", "", 2, &out).is_ok());  // next behind
  CHECK(!decode_list_answer(body(r("p/b"), "q/"), "p/", "", 2, &out).is_ok());
}

TEST_CASE("coverage: every ring arc needs R owners among the members that answered",
          "[listing]") {
  auto ring = ring_of(5);
  std::vector<bool> all(5, true);
  CHECK(!find_uncovered_arc(*ring, 3, 2, all));
  // One member down: every arc keeps two of its three owners.
  std::vector<bool> one_down = all;
  one_down[2] = false;
  CHECK(!find_uncovered_arc(*ring, 3, 2, one_down));
  CHECK(!find_uncovered_arc(*ring, 3, 1, one_down));
  // Two down: some arc is left with one owner (R=2 fails), none with zero (R=1 holds).
  std::vector<bool> two_down = one_down;
  two_down[4] = false;
  auto arc = find_uncovered_arc(*ring, 3, 2, two_down);
  REQUIRE(arc);
  CHECK(arc->answered == 1);
  CHECK(arc->owners.size() == 3);
  CHECK(!find_uncovered_arc(*ring, 3, 1, two_down));
  // Three down: some arc has none of its owners left.
  std::vector<bool> three_down = two_down;
  three_down[0] = false;
  arc = find_uncovered_arc(*ring, 3, 1, three_down);
  REQUIRE(arc);
  CHECK(arc->answered == 0);
  for (std::uint32_t m : arc->owners) CHECK(!three_down[m]);
  // The arc named is the one a key in it maps to: its last position has those owners.
  ring::PreferenceList pl;
  ring->preference_list(arc->to, 3, &pl);
  CHECK(std::vector<std::uint32_t>(pl.view().begin(), pl.view().end()) == arc->owners);
}

}  // namespace node
