#include "node/request.h"

#include <catch2/catch.hpp>

#include "node/http_status.h"
#include "node/limits.h"

using namespace node;

TEST_CASE("percent decoding", "[request]") {
  CHECK(percent_decode("a%20b%2Fc").value() == "a b/c");
  CHECK(percent_decode("%41%62").value() == "Ab");
  CHECK(percent_decode("plain+text").value() == "plain+text");
  CHECK_FALSE(percent_decode("%").is_ok());
  CHECK_FALSE(percent_decode("%4").is_ok());
  CHECK_FALSE(percent_decode("%G1").is_ok());
  CHECK_FALSE(percent_decode("abc%2").is_ok());
}

TEST_CASE("key rules", "[request]") {
  CHECK(validate_key("a").is_ok());
  CHECK(validate_key(std::string(1024, 'k')).is_ok());
  CHECK(validate_key("dir/ü/日本").is_ok());
  CHECK(validate_key("").code() == Code::invalid_argument);
  CHECK(validate_key(std::string(1025, 'k')).code() == Code::invalid_argument);
  CHECK(validate_key(std::string("a\0b", 3)).code() == Code::invalid_argument);
  CHECK(validate_key("_/admin").code() == Code::invalid_argument);
  CHECK(validate_key("x_/ok").is_ok());
  CHECK_FALSE(validate_key("\xff").is_ok());           // not UTF-8
  CHECK_FALSE(validate_key("\xc0\xaf").is_ok());       // overlong '/'
  CHECK_FALSE(validate_key("\xed\xa0\x80").is_ok());   // surrogate
  CHECK_FALSE(validate_key("\xe6\x97").is_ok());       // truncated
  CHECK(error_body(validate_key(std::string(1025, 'k'))) ==
        "{\"error\":\"key_too_long\",\"max_bytes\":1024}\n");
}

TEST_CASE("request targets", "[request]") {
  auto t = parse_target("/a%2Fb/c?list&limit=5&start=x%20y").value();
  CHECK(t.path == "a/b/c");
  CHECK(t.has("list"));
  CHECK(*t.get("limit") == "5");
  CHECK(*t.get("start") == "x y");
  CHECK(t.get("nope") == nullptr);
  CHECK(parse_target("/").value().path.empty());
  CHECK_FALSE(parse_target("").is_ok());
  CHECK_FALSE(parse_target("http://x/y").is_ok());
  CHECK_FALSE(parse_target("/a?b=%zz").is_ok());
}

TEST_CASE("byte ranges", "[request]") {
  auto r = parse_range("bytes=0-9", 100);
  CHECK(r.kind == RangeKind::partial);
  CHECK(r.range.first == 0);
  CHECK(r.range.last == 9);
  r = parse_range("bytes=90-", 100);
  CHECK((r.kind == RangeKind::partial && r.range.first == 90 && r.range.last == 99));
  r = parse_range("bytes=-10", 100);
  CHECK((r.kind == RangeKind::partial && r.range.first == 90 && r.range.last == 99));
  r = parse_range("bytes=-1000", 100);
  CHECK((r.kind == RangeKind::partial && r.range.first == 0 && r.range.last == 99));
  r = parse_range("bytes=50-5000", 100);
  CHECK((r.kind == RangeKind::partial && r.range.last == 99));
  CHECK(parse_range("bytes=100-", 100).kind == RangeKind::unsatisfiable);
  CHECK(parse_range("bytes=-0", 100).kind == RangeKind::unsatisfiable);
  CHECK(parse_range("bytes=0-", 0).kind == RangeKind::unsatisfiable);
  CHECK(parse_range("bytes=5-1", 100).kind == RangeKind::whole);       // invalid: ignored
  CHECK(parse_range("bytes=0-1,5-6", 100).kind == RangeKind::whole);   // multi: whole body
  CHECK(parse_range("items=0-1", 100).kind == RangeKind::whole);
  CHECK(parse_range("bytes=x-1", 100).kind == RangeKind::whole);
  CHECK(parse_range("bytes=99999999999999999999-", 100).kind == RangeKind::whole);
}

TEST_CASE("If-None-Match", "[request]") {
  CHECK(etag_list_matches("\"abc\"", "\"abc\"", false));
  CHECK(etag_list_matches("W/\"abc\"", "\"abc\"", false));
  CHECK(etag_list_matches("\"x\", \"abc\"", "\"abc\"", false));
  CHECK(etag_list_matches("*", "\"abc\"", false));
  CHECK_FALSE(etag_list_matches("\"abd\"", "\"abc\"", false));
  CHECK_FALSE(etag_list_matches("", "\"abc\"", false));
}

TEST_CASE("HTTP dates and numbers", "[request]") {
  CHECK(http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT");
  CHECK(parse_u64("0") == 0u);
  CHECK(parse_u64("18446744073709551615") == 18446744073709551615ull);
  CHECK_FALSE(parse_u64("18446744073709551616"));
  CHECK_FALSE(parse_u64("-1"));
  CHECK_FALSE(parse_u64("1 "));
  CHECK_FALSE(parse_u64(""));
}

TEST_CASE("several ranges", "[request]") {
  auto r = parse_ranges("bytes=0-1, 5-6", 100);
  REQUIRE(r.kind == RangeKind::partial);
  REQUIRE(r.ranges.size() == 2);
  CHECK(r.ranges[1].first == 5);
  r = parse_ranges("bytes=50-60,0-1", 100);  // disjoint: in the order asked
  REQUIRE(r.ranges.size() == 2);
  CHECK(r.ranges[0].first == 50);
  r = parse_ranges("bytes=50-60,0-1,55-70", 100);  // overlapping: merged, in byte order
  REQUIRE(r.ranges.size() == 2);
  CHECK(r.ranges[0].last == 1);
  CHECK(r.ranges[1].first == 50);
  CHECK(r.ranges[1].last == 70);
  CHECK(parse_ranges("bytes=0-1,,", 100).ranges.size() == 1);  // empty elements
  CHECK(parse_ranges("bytes=200-,300-", 100).kind == RangeKind::unsatisfiable);
  CHECK(parse_ranges("bytes=0-1,5-x", 100).kind == RangeKind::whole);
  CHECK(parse_ranges("bytes=,", 100).kind == RangeKind::whole);
  std::string many = "bytes=0-0";
  for (std::size_t i = 1; i < limits::ranges_max; i++) many += "," + std::to_string(2 * i) + "-" + std::to_string(2 * i);
  CHECK(parse_ranges(many, 1000).ranges.size() == limits::ranges_max);
  CHECK(parse_ranges(many + ",999-999", 1000).kind == RangeKind::whole);
  CHECK(multipart_byteranges("abcdef", {{0, 1}, {4, 5}}, "text/plain", "B") ==
        "--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/6\r\n\r\nab\r\n"
        "--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 4-5/6\r\n\r\nef\r\n--B--\r\n");
}

TEST_CASE("HTTP dates in all three forms", "[request]") {
  CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777);
  CHECK(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777);
  CHECK(parse_http_date("Sun Nov  6 08:49:37 1994") == 784111777);
  CHECK(parse_http_date(http_date(1700000000)) == 1700000000);
  CHECK_FALSE(parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC"));
  CHECK_FALSE(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"));
  CHECK_FALSE(parse_http_date("Sun, 06 Nov 1994 25:49:37 GMT"));
  CHECK_FALSE(parse_http_date("1994-11-06"));
  CHECK_FALSE(parse_http_date(""));
}

TEST_CASE("entity-tag lists and preconditions", "[request]") {
  CHECK(etag_list_valid("*"));
  CHECK(etag_list_valid("\"a\", W/\"b\" ,\"c,d\""));
  CHECK_FALSE(etag_list_valid(""));
  CHECK_FALSE(etag_list_valid("a"));
  CHECK_FALSE(etag_list_valid("\"a"));
  CHECK_FALSE(etag_list_valid("\"a\" b"));
  CHECK(etag_list_matches("\"x\", \"c,d\"", "\"c,d\"", true));
  CHECK_FALSE(etag_list_matches("W/\"e\"", "\"e\"", true));
  CHECK(etag_list_matches("W/\"e\"", "\"e\"", false));

  Validators live{true, "\"e\"", 1000};
  Validators gone{};
  Conditions create_only;
  create_only.if_none_match = "*";
  CHECK(evaluate_preconditions(create_only, false, live).outcome == Precondition::failed);
  CHECK(evaluate_preconditions(create_only, false, gone).outcome == Precondition::proceed);
  CHECK(evaluate_preconditions(create_only, true, live).outcome == Precondition::not_modified);
  Conditions since;
  since.if_modified_since = http_date(1000);
  CHECK(evaluate_preconditions(since, true, live).outcome == Precondition::not_modified);
  CHECK(evaluate_preconditions(since, false, live).outcome == Precondition::proceed);  // GET/HEAD only
  since.if_modified_since = http_date(999);
  CHECK(evaluate_preconditions(since, true, live).outcome == Precondition::proceed);
  Conditions unmodified;
  unmodified.if_unmodified_since = "garbage";
  CHECK_FALSE(unmodified.constrain_write());  // a malformed date is absent: no read first
  unmodified.if_unmodified_since = http_date(999);
  CHECK(unmodified.constrain_write());
  CHECK(evaluate_preconditions(unmodified, false, live).outcome == Precondition::failed);
  CHECK(if_range_matches(std::nullopt, live));
  CHECK(if_range_matches(std::string("\"e\""), live));
  CHECK_FALSE(if_range_matches(std::string("W/\"e\""), live));
  CHECK(if_range_matches(http_date(1000), live));
  CHECK_FALSE(if_range_matches(http_date(1001), live));
}
