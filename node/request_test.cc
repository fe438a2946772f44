#include "node/request.h"

#include <catch2/catch.hpp>

#include "node/http_status.h"

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
  CHECK(etag_matches("\"abc\"", "\"abc\""));
  CHECK(etag_matches("W/\"abc\"", "\"abc\""));
  CHECK(etag_matches("\"x\", \"abc\"", "\"abc\""));
  CHECK(etag_matches("*", "\"abc\""));
  CHECK_FALSE(etag_matches("\"abd\"", "\"abc\""));
  CHECK_FALSE(etag_matches("", "\"abc\""));
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
