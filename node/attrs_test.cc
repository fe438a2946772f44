// node/attrs.h on its own: the stored block, the headers that carry it (and the expiry
// and tombstone kind) between nodes, and the TTL a client sends. Every path that copies
// a value to another node (replica write, push, a replica's answer) uses this pair of
// functions, so a value must come back from them as it went in.
#include "node/attrs.h"

#include <catch2/catch.hpp>
#include <cctype>
#include <string>
#include <vector>

using namespace node;

namespace {

// The X-Ringstore-* lines of `headers` ("Name: value\r\n"...) as a receiver captures
// them: the name after "x-ringstore-", lower-case.
HeaderList received(const std::string& headers) {
  HeaderList out;
  std::size_t at = 0;
  while (at < headers.size()) {
    std::size_t eol = headers.find("\r\n", at);
    REQUIRE(eol != std::string::npos);
    std::string line = headers.substr(at, eol - at);
    at = eol + 2;
    std::size_t colon = line.find(": ");
    REQUIRE(colon != std::string::npos);
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    REQUIRE(name.compare(0, 12, "x-ringstore-") == 0);
    out.emplace_back(name.substr(12), line.substr(colon + 2));
  }
  return out;
}

blobstore::BlobMeta round_trip(const blobstore::BlobMeta& m) {
  blobstore::BlobMeta back;
  back.attrs = "stale: line\r\n";  // whatever the receiver held is replaced
  back.expires_ms = 99;
  REQUIRE(replica_meta_from(received(replica_meta_headers(m)), &back));
  return back;
}

}  // namespace

TEST_CASE("the stored block is sorted by lower-case name, the last of a name kept, bounded",
          "[attrs]") {
  auto b = encode_attrs({{"X-Ringstore-Meta-B", "2"},
                         {"Cache-Control", "no-cache"},
                         {"x-ringstore-meta-b", "3"},
                         {"X-Ringstore-Meta-A", "Ann \"B.\" Smith"}});
  REQUIRE(b.is_ok());
  CHECK(b.value() ==
        "cache-control: no-cache\r\nx-ringstore-meta-a: Ann \"B.\" Smith\r\nx-ringstore-meta-b: "
        "3\r\n");
  CHECK(encode_attrs({}).value().empty());
  CHECK(encode_attrs({{"x-ringstore-meta-e", ""}}).value() == "x-ringstore-meta-e: \r\n");
  for (const HeaderList& bad :
       {HeaderList{{"x-ringstore-meta-a", "caf\xc3\xa9"}}, HeaderList{{"bad name", "v"}},
        HeaderList{{"a:b", "v"}}, HeaderList{{"", "v"}},
        HeaderList{{"x-ringstore-meta-t", "a\tb"}}}) {
    auto r = encode_attrs(bad);
    REQUIRE(!r.is_ok());
    CHECK(r.status().message().find("bad_metadata") != std::string::npos);
  }
  // "x-ringstore-meta-a: " + value + "\r\n" is 22 bytes of lines around the value.
  auto fits =
      encode_attrs({{"x-ringstore-meta-a", std::string(attr_limits::attrs_bytes_max - 22, 'v')}});
  REQUIRE(fits.is_ok());
  CHECK(fits.value().size() == attr_limits::attrs_bytes_max);
  auto over =
      encode_attrs({{"x-ringstore-meta-a", std::string(attr_limits::attrs_bytes_max - 21, 'v')}});
  REQUIRE(!over.is_ok());
  CHECK(over.status().message().find("metadata_too_large") != std::string::npos);
}

TEST_CASE("a value's block, expiry and tombstone kind cross between nodes unchanged", "[attrs]") {
  blobstore::BlobMeta m;
  m.attrs = encode_attrs({{"content-encoding", "gzip"},
                          {"x-ringstore-meta-color", "blue"},
                          {"x-ringstore-meta-empty", ""},
                          {"content-disposition", "a; b=\"c d\""}})
                .value();
  m.expires_ms = 1'796'659'270'519;
  blobstore::BlobMeta back = round_trip(m);
  CHECK(back.attrs == m.attrs);
  CHECK(back.expires_ms == m.expires_ms);
  CHECK(!back.tombstone);
  CHECK(!back.unlinked);

  // Neither block nor expiry: the receiver keeps none of its own.
  back = round_trip(blobstore::BlobMeta{});
  CHECK(back.attrs.empty());
  CHECK(back.expires_ms == 0);

  blobstore::BlobMeta tomb;
  tomb.tombstone = true;
  back = round_trip(tomb);
  CHECK((back.tombstone && !back.unlinked));
  tomb.unlinked = true;
  back = round_trip(tomb);
  CHECK((back.tombstone && back.unlinked));

  // A client sees the block as stored and the expiry twice: as an HTTP date and in ms.
  CHECK(client_meta_headers(m) == m.attrs +
                                      "X-Ringstore-Expires: Mon, 07 Dec 2026 16:01:10 GMT\r\n"
                                      "X-Ringstore-Expires-Ms: 1796659270519\r\n");
  CHECK(client_meta_headers(blobstore::BlobMeta{}).empty());

  blobstore::BlobMeta out;
  CHECK(!replica_meta_from({{"expires-ms", "soon"}}, &out));
  CHECK(!replica_meta_from({{"attr-bad name", "v"}}, &out));
  CHECK(replica_meta_from({{"version", "ignored"}, {"attr-", "no name: not an attribute"}}, &out));
  CHECK(out.attrs.empty());
}

TEST_CASE("a TTL is 1 second to 10 years, counted from the coordinator's clock", "[attrs]") {
  CHECK(expiry_from_ttl(nullptr, 5'000).value() == 0);
  const std::string one = "1", max = std::to_string(attr_limits::ttl_seconds_max);
  CHECK(expiry_from_ttl(&one, 5'000).value() == 6'000);
  CHECK(expiry_from_ttl(&max, 0).value() == attr_limits::ttl_seconds_max * 1000);
  const std::string too_long = std::to_string(attr_limits::ttl_seconds_max + 1);
  for (const std::string& bad : std::vector<std::string>{"0", "-1", "1.5", "", "x", too_long}) {
    INFO("ttl '" << bad << "'");
    auto r = expiry_from_ttl(&bad, 5'000);
    REQUIRE(!r.is_ok());
    CHECK(r.status().message().find("bad_ttl") != std::string::npos);
  }
}

TEST_CASE("the native API keeps its metadata headers and no others", "[attrs]") {
  for (const char* kept :
       {"x-ringstore-meta-a", "content-encoding", "content-disposition", "cache-control"}) {
    CHECK(is_stored_header(kept));
  }
  for (const char* not_kept : {"x-ringstore-meta-", "x-ringstore-ttl", "x-ringstore-expires",
                               "x-ringstore-version", "content-type", "etag", "user-agent"}) {
    CHECK(!is_stored_header(not_kept));
  }
}
