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

TEST_CASE("a summary page and a group's arcs are read, and malformed ones refused", "[anti-entropy]") {
  const std::string h = "0123456789abcdef0123456789abcdef";
  std::vector<blobstore::Leaf> leaves;
  std::size_t next = 0;
  // 200 shared arcs: 4 groups of 64. Two from group 1, the next page at group 3.
  REQUIRE(node::parse_summary_answer(R"({"groups":[[")" + h + R"(",3],[")" + h + R"(",0]],"shared_arcs":200,"next":3})",
                                     200, 1, &leaves, &next));
  REQUIRE(leaves.size() == 2);
  CHECK(leaves[0].count == 3);
  CHECK(leaves[0].hash_hex() == h);
  CHECK(next == 3);
  // The last page: next null, or one that does not move forward, ends the pages.
  for (const char* last : {"null", "1", "4", "\"3\""}) {
    INFO(last);
    REQUIRE(node::parse_summary_answer(std::string(R"({"groups":[],"shared_arcs":200,"next":)") + last + "}", 200, 1,
                                       &leaves, &next));
    CHECK(next == 0);
  }
  for (const std::string& bad : {
           std::string("[]"), std::string(R"({"groups":[],"shared_arcs":201,"next":null})"),  // other arcs
           std::string(R"({"groups":[],"shared_arcs":200})"),                                 // no next
           std::string(R"({"groups":{},"shared_arcs":200,"next":null})"),
           R"({"groups":[[")" + h + R"(",1],[")" + h + R"(",1],[")" + h + R"(",1],[")" + h +
               R"(",1]],"shared_arcs":200,"next":null})",  // four groups from group 1: one too many
           R"({"groups":[[")" + h + R"(",-1]],"shared_arcs":200,"next":null})",
           std::string(R"({"groups":[["xyz",1]],"shared_arcs":200,"next":null})")}) {
    INFO(bad);
    CHECK(!node::parse_summary_answer(bad, 200, 1, &leaves, &next));
  }

  const std::size_t arcs[] = {5, 9};
  REQUIRE(node::parse_arcs_answer(R"({"arcs":[[5,")" + h + R"(",1],[9,")" + h + R"(",2]]})", arcs, 2, &leaves));
  REQUIRE(leaves.size() == 2);
  CHECK(leaves[1].count == 2);
  for (const std::string& bad : {
           R"({"arcs":[[5,")" + h + R"(",1]]})",                             // one short
           R"({"arcs":[[9,")" + h + R"(",1],[5,")" + h + R"(",2]]})",       // other order
           R"({"arcs":[[5,")" + h + R"(",1],[9,")" + h + R"(","2"]]})",     // count a string
           std::string(R"({"arcs":[[],[]]})"), std::string("null")}) {
    INFO(bad);
    CHECK(!node::parse_arcs_answer(bad, arcs, 2, &leaves));
  }
}
