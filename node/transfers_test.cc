// A member's range listing is peer input: whatever its bytes, parsing answers (a page or
// false) and never throws, since it runs inside a libuv callback.
#include "node/transfers.h"

#include <catch2/catch.hpp>

#include "node/json_util.h"

namespace {

const char* version_a = "01a251ddfd230000-bc808ad7bc37b878d4f692d08f297e65";

}  // namespace

TEST_CASE("a range listing is read field by field, and a malformed one is refused", "[transfers]") {
  node::RangeListing page;
  const std::string good = std::string(R"({"ring":"42","entries":[["a%2Fb",")") + version_a +
                           R"(",0],["gone",")" + version_a + R"(",1]],"truncated":true,"last":7})";
  REQUIRE(node::parse_range_listing(good, &page));
  CHECK(page.ring == 42);
  REQUIRE(page.entries.size() == 2);
  CHECK(page.entries[0].key == "a/b");
  CHECK(!page.entries[0].tombstone);
  CHECK(page.entries[1].tombstone);
  CHECK(page.truncated);
  CHECK(page.last == 7);

  // A member once answered "truncated": 1: the listing is refused (the window waits and
  // is asked again), where reading it as a bool threw and ended the process.
  for (const char* bad : {R"({"entries":[],"truncated":1})", R"({"entries":[],"truncated":"yes"})",
                          R"({"entries":{}})", R"({"entries":null})", R"([])", "", "{", "null",
                          R"({"truncated":true})"}) {
    INFO(bad);
    CHECK_NOTHROW(node::parse_range_listing(bad, &page));
    CHECK(!node::parse_range_listing(bad, &page));
  }

  // Entries not of the shape [key, version, kind] are skipped, the rest kept; fields of
  // the wrong type read as absent.
  const std::string mixed = std::string(R"({"ring":-3,"last":"x","entries":[1,"s",[],[1,2,3],)") +
                            R"(["k","not-a-version",0],["_/reserved",")" + version_a + R"(",0],)" +
                            R"(["ok",")" + version_a + R"(",0,9],["kept",")" + version_a + R"(",0]]})";
  REQUIRE(node::parse_range_listing(mixed, &page));
  CHECK(page.ring == 0);
  CHECK(page.last == 0);
  CHECK(!page.truncated);
  REQUIRE(page.entries.size() == 1);
  CHECK(page.entries[0].key == "kept");
}

TEST_CASE("typed JSON members fall back to their default on any other type", "[transfers]") {
  auto j = nlohmann::json::parse(
      R"({"b":1,"s":2,"d":"3","u":-4,"us":"18446744073709551616","ok":"18446744073709551615","t":true})");
  CHECK(node::json_bool(j, "b", true));
  CHECK(!node::json_bool(j, "b"));
  CHECK(node::json_bool(j, "t"));
  CHECK(node::json_string(j, "s", "?") == "?");
  CHECK(node::json_double(j, "d", 1.5) == 1.5);
  CHECK(node::json_u64(j, "u", 9) == 9);
  CHECK(node::json_u64(j, "us", 9) == 9);  // one past the largest u64
  CHECK(node::json_u64(j, "ok") == UINT64_MAX);
  CHECK(node::json_u64(nlohmann::json::array({1, 2}), "x", 5) == 5);  // not an object

  // A pass's saved state with every field of the wrong type reads as a fresh pass.
  auto state = nlohmann::json::parse(R"({"active":1,"done":"true","cursor":[1],"round":{}})");
  node::PassState p;
  REQUIRE_NOTHROW(p = node::PassState::from_json(state));
  CHECK(!p.active);
  CHECK(!p.done);
  CHECK(p.cursor == 0);
  CHECK(p.round == 0);
}
