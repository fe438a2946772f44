// A replica's key list in an anti-entropy comparison is peer input: parsing answers (the
// entries and how far they cover, or false) and never throws.
#include "node/anti_entropy.h"

#include <catch2/catch.hpp>

#include "ring/hash.h"

namespace {

const char* version_a = "01a251ddfd230000-bc808ad7bc37b878d4f692d08f297e65";

std::string entry(const std::string& hex_key, int kind, const char* extra = "") {
  return std::string("[\"") + hex_key + "\",\"" + version_a + "\"," + std::to_string(kind) + extra + "]";
}

}  // namespace

TEST_CASE("a key list is read with its coverage, and a malformed one is refused", "[anti-entropy]") {
  std::vector<node::AeEntry> out;
  std::uint64_t covered = 0;
  const std::uint64_t all = ~0ull;
  // "k1" and "k2" in hex; the whole ring, complete.
  REQUIRE(node::parse_keys_page(R"({"entries":[)" + entry("6b31", 0, ",1700000000000") + "," +
                                    entry("6b32", 1) + R"(],"next":null})",
                                0, all, &out, &covered));
  REQUIRE(out.size() == 2);
  CHECK(out[0].key == "k1");
  CHECK(out[0].expires_ms == 1700000000000u);
  CHECK(!out[0].tombstone);
  CHECK(out[1].tombstone);
  CHECK(out[1].position == ring::key_position("k2"));
  CHECK(covered == all);
  // Paged: the answer covers up to next - 1.
  REQUIRE(node::parse_keys_page(R"({"entries":[],"next":500})", 100, 1000, &out, &covered));
  CHECK(covered == 499);

  const std::uint64_t p = ring::key_position("k1");
  for (const std::string& bad : {
           std::string("not json"), std::string("[]"), std::string(R"({"entries":[]})"),
           std::string(R"({"entries":{},"next":null})"), std::string(R"({"entries":[],"next":"5"})"),
           std::string(R"({"entries":[],"next":100})"),   // not after from
           std::string(R"({"entries":[],"next":1001})"),  // past to
           R"({"entries":[)" + entry("6b3", 0) + R"(],"next":null})",    // odd hex
           R"({"entries":[)" + entry("zz", 0) + R"(],"next":null})",     // not hex
           R"({"entries":[)" + entry("", 0) + R"(],"next":null})",       // empty key
           R"({"entries":[)" + entry("6b31", -1) + R"(],"next":null})",  // kind not unsigned
           std::string(R"({"entries":[["6b31","nope",0]],"next":null})")}) {
    INFO(bad);
    CHECK(!node::parse_keys_page(bad, 100, 1000, &out, &covered));
  }
  // A key outside the range asked for, or past the part the answer covers.
  CHECK(!node::parse_keys_page(R"({"entries":[)" + entry("6b31", 0) + R"(],"next":null})", p + 1, all, &out,
                               &covered));
  if (p > 0 && p < all) {
    CHECK(!node::parse_keys_page(R"({"entries":[)" + entry("6b31", 0) + R"(],"next":)" + std::to_string(p) + "}",
                                 0, all, &out, &covered));
    CHECK(node::parse_keys_page(R"({"entries":[)" + entry("6b31", 0) + R"(],"next":)" + std::to_string(p + 1) + "}",
                                0, all, &out, &covered));
  }
}
