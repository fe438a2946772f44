// The HTTP layer over real sockets against an in-process node: every byte on the wire
// is ours to place.
#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <map>
#include <thread>
#include <vector>

#include "blobstore/version.h"
#include "common/clock.h"
#include "support/test_server.h"

using testing::RawClient;
using testing::TestServer;

namespace {

std::string put_request(const std::string& key, const std::string& body, bool close = false) {
  return "PUT /" + key + " HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n" + (close ? "Connection: close\r\n" : "") + "\r\n" + body;
}

std::string get_request(const std::string& key, const std::string& extra = "") {
  return "GET /" + key + " HTTP/1.1\r\nHost: x\r\n" + extra + "\r\n";
}

void put_ok(int port, const std::string& key, const std::string& body) {
  RawClient c(port);
  REQUIRE(c.send(put_request(key, body)));
  REQUIRE(c.read_response().status == 201);
}

node::ServerConfig short_timeouts() {
  node::ServerConfig cfg;
  cfg.limits.idle_timeout_ms = 400;
  cfg.limits.header_timeout_ms = 300;
  cfg.limits.body_timeout_ms = 300;
  cfg.limits.send_timeout_ms = 1000;
  return cfg;
}

}  // namespace

TEST_CASE("PUT, GET, HEAD and DELETE over one keep-alive connection", "[http]") {
  TestServer srv;
  RawClient c(srv.port());
  REQUIRE(c.send(put_request("a/b", "hello")));
  auto r = c.read_response();
  REQUIRE(r.status == 201);
  CHECK(r.headers["etag"] == "\"5d41402abc4b2a76b9719d911017c592\"");
  REQUIRE(c.send(get_request("a/b")));
  r = c.read_response();
  CHECK(r.status == 200);
  CHECK(r.body == "hello");
  CHECK(r.headers["content-type"] == "text/plain");
  CHECK(r.headers.count("last-modified") == 1);
  REQUIRE(c.send("HEAD /a/b HTTP/1.1\r\nHost: x\r\n\r\n"));
  r = c.read_response(5000, /*head=*/true);
  CHECK(r.status == 200);
  CHECK(r.headers["content-length"] == "5");
  CHECK(r.body.empty());
  REQUIRE(c.send("DELETE /a/b HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(c.read_response().status == 204);
  REQUIRE(c.send(get_request("a/b")));
  r = c.read_response();
  CHECK(r.status == 404);
  CHECK(r.body == "{\"error\":\"not_found\"}\n");
}

TEST_CASE("a request split at every byte is parsed the same", "[http]") {
  TestServer srv;
  const std::string body = "split-body-0123456789";
  const std::string req = put_request("split", body) + get_request("split");
  for (std::size_t cut = 1; cut < req.size(); cut++) {
    INFO("cut at " << cut);
    RawClient c(srv.port());
    REQUIRE(c.send(req.substr(0, cut)));
    std::this_thread::sleep_for(std::chrono::microseconds(300));
    REQUIRE(c.send(req.substr(cut)));
    REQUIRE(c.read_response().status == 201);
    auto r = c.read_response();
    REQUIRE(r.status == 200);
    REQUIRE(r.body == body);
  }
}

TEST_CASE("a chunked upload whose framing is split byte by byte", "[http]") {
  TestServer srv;
  std::string req =
      "PUT /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
  RawClient c(srv.port());
  for (char ch : req) {
    REQUIRE(c.send(std::string(1, ch)));
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  REQUIRE(c.read_response().status == 201);
  REQUIRE(c.send(get_request("chunked")));
  CHECK(c.read_response().body == "hello world");
}

TEST_CASE("pipelined requests are answered in order", "[http]") {
  TestServer srv;
  put_ok(srv.port(), "p1", "one");
  put_ok(srv.port(), "p2", "two");
  RawClient c(srv.port());
  std::string batch;
  for (int i = 0; i < 20; i++) batch += get_request(i % 2 ? "p2" : "p1");
  batch += put_request("p3", "three") + get_request("p3") + get_request("missing");
  REQUIRE(c.send(batch));
  for (int i = 0; i < 20; i++) {
    auto r = c.read_response();
    REQUIRE(r.status == 200);
    REQUIRE(r.body == (i % 2 ? "two" : "one"));
  }
  CHECK(c.read_response().status == 201);
  CHECK(c.read_response().body == "three");
  CHECK(c.read_response().status == 404);
}

TEST_CASE("bytes sent while a request is answered wait their turn", "[http]") {
  TestServer srv;
  SECTION("pipelined behind a PUT that waits for its commit") {
    RawClient c(srv.port());
    REQUIRE(c.send(put_request("q1", "one")));
    // The PUT is answered after its group commit; these arrive meanwhile.
    REQUIRE(c.send(get_request("q1") + put_request("q2", "two") + get_request("q2")));
    CHECK(c.read_response().status == 201);
    auto r = c.read_response();
    CHECK(r.status == 200);
    CHECK(r.body == "one");
    CHECK(c.read_response().status == 201);
    CHECK(c.read_response().body == "two");
  }
  SECTION("a client that shuts its side after the request still gets its answer") {
    RawClient c(srv.port());
    REQUIRE(c.send(put_request("q3", "three") + get_request("q3")));
    c.shutdown_send();
    CHECK(c.read_response().status == 201);
    auto r = c.read_response();
    CHECK(r.status == 200);
    CHECK(r.body == "three");
    CHECK(c.closed_by_peer());
  }
  SECTION("more than pending_bytes_max ahead: reading pauses, nothing is lost") {
    RawClient c(srv.port());
    std::string batch = put_request("q4", "four");
    std::size_t gets = node::limits::pending_bytes_max / get_request("q4").size() + 100;
    for (std::size_t i = 0; i < gets; i++) batch += get_request("q4");
    REQUIRE(c.send(batch));
    CHECK(c.read_response().status == 201);
    std::size_t ok = 0;
    for (std::size_t i = 0; i < gets; i++) ok += c.read_response().body == "four";
    CHECK(ok == gets);
  }
}

TEST_CASE("Expect: 100-continue is answered before the body is sent", "[http]") {
  TestServer srv;
  RawClient c(srv.port());
  REQUIRE(c.send("PUT /cont HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"));
  // RawClient::read_response skips interim responses; look at the raw bytes instead.
  RawClient raw(srv.port());
  REQUIRE(raw.send("PUT /cont2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"));
  auto interim = raw.read_response(2000);  // returns after the 100 only if a final follows
  CHECK(interim.status == 0);              // nothing final yet: the body is still owed
  REQUIRE(raw.send("abc"));
  CHECK(raw.read_response().status == 201);
  REQUIRE(c.send("xyz"));
  CHECK(c.read_response().status == 201);
}

TEST_CASE("limits answer with a status and a one-line JSON reason", "[http]") {
  node::ServerConfig cfg;
  cfg.limits.body_bytes_max = 1000;
  cfg.limits.header_bytes_max = 4096;
  TestServer srv(cfg);

  SECTION("a body over the limit, announced by Content-Length") {
    RawClient c(srv.port());
    REQUIRE(c.send("PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n"));
    auto r = c.read_response();
    CHECK(r.status == 413);
    CHECK(r.body == "{\"error\":\"body_too_large\",\"max_bytes\":1000}\n");
    CHECK(c.closed_by_peer());
  }
  SECTION("a chunked body that grows over the limit") {
    RawClient c(srv.port());
    REQUIRE(c.send("PUT /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "3e8\r\n" + std::string(1000, 'a') + "\r\n1\r\nb\r\n0\r\n\r\n"));
    CHECK(c.read_response().status == 413);
    RawClient g(srv.port());
    REQUIRE(g.send(get_request("big")));
    CHECK(g.read_response().status == 404);  // nothing partial became visible
  }
  SECTION("headers over the limit") {
    RawClient c(srv.port());
    REQUIRE(c.send("GET /k HTTP/1.1\r\nX-Fill: " + std::string(5000, 'f') + "\r\n\r\n"));
    auto r = c.read_response();
    CHECK(r.status == 431);
    CHECK(r.body.find("headers_too_large") != std::string::npos);
  }
  SECTION("a key over 1024 bytes") {
    RawClient c(srv.port());
    REQUIRE(c.send(get_request(std::string(1025, 'k'))));
    auto r = c.read_response();
    CHECK(r.status == 400);
    CHECK(r.body == "{\"error\":\"key_too_long\",\"max_bytes\":1024}\n");
  }
  SECTION("garbage instead of HTTP") {
    RawClient c(srv.port());
    REQUIRE(c.send("\x01\x02 hello there\r\n\r\n"));
    auto r = c.read_response();
    CHECK(r.status == 400);
    CHECK(r.body.rfind("{\"error\":\"bad_request\"", 0) == 0);
    CHECK(c.closed_by_peer());
  }
  SECTION("methods and reserved keys") {
    RawClient c(srv.port());
    REQUIRE(c.send("POST /k HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"));
    CHECK(c.read_response().status == 405);
    RawClient d(srv.port());
    REQUIRE(d.send(put_request("_/status", "x")));
    auto reserved = d.read_response();
    CHECK(reserved.status == 400);
    CHECK(reserved.body.rfind("{\"error\":\"key_reserved\"", 0) == 0);
    RawClient e(srv.port());
    REQUIRE(e.send(get_request("%00")));
    CHECK(e.read_response().status == 400);
  }
  // After all of that the node still serves.
  put_ok(srv.port(), "after", "fine");
}

TEST_CASE("a request line over the limit gets 414", "[http]") {
  TestServer srv;
  RawClient c(srv.port());
  REQUIRE(c.send("GET /" + std::string(node::limits::url_bytes_max, 'u') + " HTTP/1.1\r\n\r\n"));
  auto r = c.read_response();
  CHECK(r.status == 414);
  CHECK(r.body == "{\"error\":\"uri_too_long\",\"max_bytes\":" +
                      std::to_string(node::limits::url_bytes_max) + "}\n");
}

TEST_CASE("slow and idle clients are cut off", "[http]") {
  TestServer srv(short_timeouts());
  SECTION("headers that never finish get 408") {
    RawClient c(srv.port());
    REQUIRE(c.send("GET /k HTTP/1.1\r\nHost"));
    auto r = c.read_response(3000);
    CHECK(r.status == 408);
    CHECK(c.closed_by_peer(3000));
  }
  SECTION("a body that stalls gets 408 and leaves nothing") {
    RawClient c(srv.port());
    REQUIRE(c.send("PUT /stall HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf"));
    CHECK(c.read_response(3000).status == 408);
    RawClient g(srv.port());
    REQUIRE(g.send(get_request("stall")));
    CHECK(g.read_response().status == 404);
  }
  SECTION("an idle keep-alive connection is closed") {
    RawClient c(srv.port());
    REQUIRE(c.send(get_request("nothing")));
    CHECK(c.read_response().status == 404);
    auto t0 = std::chrono::steady_clock::now();
    CHECK(c.closed_by_peer(3000));
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(300));
  }
}

TEST_CASE("connections over the limit are refused with 503", "[http]") {
  node::ServerConfig cfg;
  cfg.limits.connections_max = 4;
  TestServer srv(cfg);
  std::vector<std::unique_ptr<RawClient>> held;
  for (int i = 0; i < 4; i++) {
    held.push_back(std::make_unique<RawClient>(srv.port()));
    REQUIRE(held.back()->send(get_request("x")));
    REQUIRE(held.back()->read_response().status == 404);
  }
  RawClient extra(srv.port());
  auto r = extra.read_response(3000);
  CHECK(r.status == 503);
  CHECK(extra.closed_by_peer());
  held.clear();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  RawClient again(srv.port());
  REQUIRE(again.send(get_request("x")));
  CHECK(again.read_response().status == 404);
}

TEST_CASE("a stop waits for the request in flight", "[http]") {
  auto srv = std::make_unique<TestServer>();
  RawClient c(srv->port());
  REQUIRE(c.send("PUT /inflight HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345"));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::thread stopper([&] { srv->stop(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  REQUIRE(c.send("67890"));
  auto r = c.read_response();
  CHECK(r.status == 201);
  CHECK(r.headers["connection"] == "close");
  stopper.join();
  CHECK(srv->loop_closed_cleanly());
}

TEST_CASE("ranges and conditional requests", "[http]") {
  TestServer srv;
  std::string small = "0123456789";
  std::string large(600 * 1024, '\0');
  for (std::size_t i = 0; i < large.size(); i++) large[i] = static_cast<char>('a' + i % 26);
  put_ok(srv.port(), "small", small);
  put_ok(srv.port(), "large", large);
  for (const auto& [key, value] : {std::pair{std::string("small"), small}, {std::string("large"), large}}) {
    INFO(key);
    RawClient c(srv.port());
    REQUIRE(c.send(get_request(key, "Range: bytes=2-5\r\n")));
    auto r = c.read_response();
    CHECK(r.status == 206);
    CHECK(r.body == value.substr(2, 4));
    CHECK(r.headers["content-range"] == "bytes 2-5/" + std::to_string(value.size()));
    REQUIRE(c.send(get_request(key, "Range: bytes=-3\r\n")));
    CHECK(c.read_response().body == value.substr(value.size() - 3));
    REQUIRE(c.send(get_request(key, "Range: bytes=" + std::to_string(value.size()) + "-\r\n")));
    r = c.read_response();
    CHECK(r.status == 416);
    CHECK(r.headers["content-range"] == "bytes */" + std::to_string(value.size()));
    REQUIRE(c.send(get_request(key)));
    r = c.read_response();
    CHECK(r.status == 200);
    CHECK(r.body == value);
    std::string etag = r.headers["etag"];
    REQUIRE(c.send(get_request(key, "If-None-Match: " + etag + "\r\n")));
    r = c.read_response();
    CHECK(r.status == 304);
    CHECK(r.body.empty());
    REQUIRE(c.send(get_request(key, "If-None-Match: \"other\"\r\n")));
    CHECK(c.read_response().status == 200);
  }
}

TEST_CASE("listing through HTTP", "[http]") {
  TestServer srv;
  for (const char* k : {"l/a", "l/b", "l/c", "m/a"}) put_ok(srv.port(), k, "v");
  RawClient c(srv.port());
  REQUIRE(c.send(get_request("l/?list&limit=2")));
  auto r = c.read_response();
  CHECK(r.status == 200);
  CHECK(r.body == "{\"keys\":[\"l/a\",\"l/b\"],\"next\":\"l/c\"}\n");
  REQUIRE(c.send(get_request("l/?list&limit=2&start=l/c")));
  CHECK(c.read_response().body == "{\"keys\":[\"l/c\"],\"next\":\"\"}\n");
  REQUIRE(c.send(get_request("?list&limit=0")));
  CHECK(c.read_response().status == 400);
  // One node is the whole cluster: its own rows decide, and a deleted key is gone.
  REQUIRE(c.send("DELETE /l/b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"));
  CHECK(c.read_response().status == 204);
  REQUIRE(c.send(get_request("l/?list")));
  CHECK(c.read_response().body == "{\"keys\":[\"l/a\",\"l/c\"],\"next\":\"\"}\n");
  REQUIRE(c.send(get_request("l/?list&r=4")));
  CHECK(c.read_response().status == 400);
}

namespace {

std::string request_with(const std::string& method, const std::string& key, const std::string& extra,
                         const std::string& body = "") {
  std::string r = method + " /" + key + " HTTP/1.1\r\nHost: x\r\n" + extra;
  if (method == "PUT" || !body.empty()) r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  return r + "\r\n" + body;
}

const std::string precondition_failed_error = "\"error\":\"precondition_failed\"";

struct Part {
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

// Splits a multipart/byteranges body at `boundary`; an empty result when it is not one.
std::vector<Part> parse_multipart(const std::string& body, const std::string& boundary) {
  std::vector<Part> parts;
  const std::string delim = "--" + boundary;
  std::size_t at = body.find(delim);
  while (at != std::string::npos) {
    at += delim.size();
    if (body.compare(at, 2, "--") == 0) return parts;  // the closing delimiter
    if (body.compare(at, 2, "\r\n") != 0) return {};
    std::size_t head_end = body.find("\r\n\r\n", at);
    if (head_end == std::string::npos) return {};
    Part p;
    std::size_t line = at + 2;
    while (line < head_end) {
      std::size_t eol = body.find("\r\n", line);
      std::string h = body.substr(line, eol - line);
      std::size_t colon = h.find(':');
      std::string name = h.substr(0, colon);
      for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      p.headers[name] = h.substr(colon + 2);
      line = eol + 2;
    }
    std::size_t next = body.find("\r\n" + delim, head_end + 4);
    if (next == std::string::npos) return {};
    p.body = body.substr(head_end + 4, next - head_end - 4);
    parts.push_back(std::move(p));
    at = next + 2;
  }
  return {};
}

std::string boundary_of(const std::string& content_type) {
  const std::string prefix = "multipart/byteranges; boundary=";
  return content_type.compare(0, prefix.size(), prefix) == 0 ? content_type.substr(prefix.size()) : "";
}

}  // namespace

TEST_CASE("GET and HEAD preconditions", "[http][conditional]") {
  TestServer srv;
  put_ok(srv.port(), "c", "conditional body");
  RawClient c(srv.port());
  REQUIRE(c.send(get_request("c")));
  auto r = c.read_response();
  REQUIRE(r.status == 200);
  const std::string etag = r.headers["etag"];
  const std::string modified = r.headers["last-modified"];
  auto status_of = [&](const std::string& method, const std::string& key, const std::string& extra) {
    REQUIRE(c.send(request_with(method, key, extra)));
    return c.read_response(5000, method == "HEAD");
  };
  SECTION("If-Match") {
    CHECK(status_of("GET", "c", "If-Match: " + etag + "\r\n").status == 200);
    CHECK(status_of("GET", "c", "If-Match: \"other\", " + etag + "\r\n").status == 200);
    CHECK(status_of("GET", "c", "If-Match: *\r\n").status == 200);
    r = status_of("GET", "c", "If-Match: \"other\"\r\n");
    CHECK(r.status == 412);
    CHECK(r.body.find(precondition_failed_error) != std::string::npos);
    CHECK(r.body.find("\"reason\":") != std::string::npos);
    CHECK(status_of("GET", "c", "If-Match: W/" + etag + "\r\n").status == 412);  // strong only
    CHECK(status_of("HEAD", "c", "If-Match: \"other\"\r\n").status == 412);
    CHECK(status_of("GET", "missing", "If-Match: *\r\n").status == 412);
    CHECK(status_of("GET", "missing", "If-None-Match: *\r\n").status == 404);
  }
  SECTION("If-None-Match") {
    r = status_of("GET", "c", "If-None-Match: " + etag + "\r\n");
    CHECK(r.status == 304);
    CHECK(r.headers["etag"] == etag);
    CHECK(status_of("GET", "c", "If-None-Match: W/" + etag + "\r\n").status == 304);  // weak
    CHECK(status_of("GET", "c", "If-None-Match: *\r\n").status == 304);
    CHECK(status_of("HEAD", "c", "If-None-Match: " + etag + "\r\n").status == 304);
    CHECK(status_of("GET", "c", "If-None-Match: \"a\", \"b,c\"\r\n").status == 200);
    // If-Modified-Since is ignored when If-None-Match is present.
    CHECK(status_of("GET", "c", "If-None-Match: \"a\"\r\nIf-Modified-Since: " + modified + "\r\n").status == 200);
  }
  SECTION("dates") {
    CHECK(status_of("GET", "c", "If-Modified-Since: " + modified + "\r\n").status == 304);
    CHECK(status_of("HEAD", "c", "If-Modified-Since: " + modified + "\r\n").status == 304);
    CHECK(status_of("GET", "c", "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n").status == 200);
    CHECK(status_of("GET", "c", "If-Modified-Since: yesterday\r\n").status == 200);  // ignored
    CHECK(status_of("GET", "c", "If-Modified-Since: Sunday, 06-Nov-94 08:49:37 GMT\r\n").status == 200);
    CHECK(status_of("GET", "c", "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n").status == 412);
    CHECK(status_of("GET", "c", "If-Unmodified-Since: " + modified + "\r\n").status == 200);
    CHECK(status_of("GET", "c", "If-Unmodified-Since: not a date\r\n").status == 200);
    // If-Unmodified-Since is ignored when If-Match is present.
    CHECK(status_of("GET", "c", "If-Match: " + etag + "\r\nIf-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n")
              .status == 200);
    // If-Match is evaluated before If-None-Match: 412 wins over 304.
    CHECK(status_of("GET", "c", "If-Match: \"x\"\r\nIf-None-Match: " + etag + "\r\n").status == 412);
  }
  SECTION("a deleted key") {
    REQUIRE(c.send("DELETE /c HTTP/1.1\r\nHost: x\r\n\r\n"));
    REQUIRE(c.read_response().status == 204);
    CHECK(status_of("GET", "c", "If-Match: " + etag + "\r\n").status == 412);
    CHECK(status_of("GET", "c", "If-None-Match: *\r\n").status == 404);
    CHECK(status_of("GET", "c", "If-Modified-Since: " + modified + "\r\n").status == 404);
  }
  SECTION("malformed entity-tag lists") {
    RawClient bad(srv.port());
    REQUIRE(bad.send(request_with("GET", "c", "If-Match: unquoted\r\n")));
    r = bad.read_response();
    CHECK(r.status == 400);
    CHECK(r.body.find("\"error\":\"bad_if_match\"") != std::string::npos);
    RawClient bad2(srv.port());
    REQUIRE(bad2.send(request_with("GET", "c", "If-None-Match: \"open\r\n")));
    CHECK(bad2.read_response().status == 400);
  }
}

TEST_CASE("If-Range and multiple ranges", "[http][conditional]") {
  TestServer srv;
  std::string small;
  for (int i = 0; i < 40; i++) small += static_cast<char>('A' + i % 26);
  std::string large(600 * 1024, '\0');
  for (std::size_t i = 0; i < large.size(); i++) large[i] = static_cast<char>('a' + i % 26);
  put_ok(srv.port(), "small", small);
  put_ok(srv.port(), "large", large);
  RawClient c(srv.port());
  REQUIRE(c.send(get_request("small")));
  auto r = c.read_response();
  const std::string etag = r.headers["etag"];
  const std::string modified = r.headers["last-modified"];
  auto get = [&](const std::string& key, const std::string& extra) {
    REQUIRE(c.send(get_request(key, extra)));
    return c.read_response();
  };
  SECTION("several ranges: multipart/byteranges in the order asked") {
    r = get("small", "Range: bytes=20-21, 0-3,10-12\r\n");
    REQUIRE(r.status == 206);
    std::string boundary = boundary_of(r.headers["content-type"]);
    REQUIRE(!boundary.empty());
    CHECK(r.headers.count("content-range") == 0);
    CHECK(r.headers["etag"] == etag);
    auto parts = parse_multipart(r.body, boundary);
    REQUIRE(parts.size() == 3);
    CHECK(parts[0].body == small.substr(20, 2));
    CHECK(parts[0].headers["content-range"] == "bytes 20-21/40");
    CHECK(parts[0].headers["content-type"] == "text/plain");
    CHECK(parts[1].body == small.substr(0, 4));
    CHECK(parts[1].headers["content-range"] == "bytes 0-3/40");
    CHECK(parts[2].body == small.substr(10, 3));
    CHECK(parts[2].headers["content-range"] == "bytes 10-12/40");
    CHECK(std::stoul(r.headers["content-length"]) == r.body.size());
    // A suffix range among them.
    parts = parse_multipart(get("small", "Range: bytes=0-0,-2\r\n").body, boundary);
    REQUIRE(parts.size() == 2);
    CHECK(parts[1].body == small.substr(38));
  }
  SECTION("overlapping ranges are merged; unsatisfiable ones dropped") {
    r = get("small", "Range: bytes=0-5,3-8\r\n");
    CHECK(r.status == 206);
    CHECK(r.headers["content-range"] == "bytes 0-8/40");
    CHECK(r.body == small.substr(0, 9));
    r = get("small", "Range: bytes=0-1,100-200\r\n");
    CHECK(r.status == 206);
    CHECK(r.headers["content-range"] == "bytes 0-1/40");
    r = get("small", "Range: bytes=0-1,2-3,30-31\r\n");  // adjacent ones merged, in byte order
    REQUIRE(r.status == 206);
    auto parts = parse_multipart(r.body, boundary_of(r.headers["content-type"]));
    REQUIRE(parts.size() == 2);
    CHECK(parts[0].headers["content-range"] == "bytes 0-3/40");
    CHECK(parts[1].headers["content-range"] == "bytes 30-31/40");
    CHECK(get("small", "Range: bytes=100-,200-\r\n").status == 416);
  }
  SECTION("too many ranges, or a malformed one: the whole value") {
    std::string many = "Range: bytes=0-0";
    for (int i = 1; i <= 64; i++) many += "," + std::to_string(i % 40) + "-" + std::to_string(i % 40);
    r = get("small", many + "\r\n");
    CHECK(r.status == 200);
    CHECK(r.body == small);
    CHECK(get("small", "Range: bytes=0-1,x-2\r\n").status == 200);
  }
  SECTION("If-Range") {
    r = get("small", "Range: bytes=2-5\r\nIf-Range: " + etag + "\r\n");
    CHECK(r.status == 206);
    CHECK(r.body == small.substr(2, 4));
    CHECK(get("small", "Range: bytes=2-5\r\nIf-Range: " + modified + "\r\n").status == 206);
    r = get("small", "Range: bytes=2-5\r\nIf-Range: \"other\"\r\n");
    CHECK(r.status == 200);
    CHECK(r.body == small);
    CHECK(get("small", "Range: bytes=2-5\r\nIf-Range: W/" + etag + "\r\n").status == 200);
    CHECK(get("small", "Range: bytes=2-5\r\nIf-Range: Sun, 06 Nov 1994 08:49:37 GMT\r\n").status == 200);
    CHECK(get("small", "Range: bytes=2-5\r\nIf-Range: garbage\r\n").status == 200);
    CHECK(get("small", "Range: bytes=0-1,4-5\r\nIf-Range: " + etag + "\r\n").status == 206);
    // An unsatisfiable range behind a stale validator: the whole value, not 416.
    CHECK(get("small", "Range: bytes=100-\r\nIf-Range: \"other\"\r\n").status == 200);
  }
  SECTION("a large (streamed) value answers several ranges with the whole value") {
    r = get("large", "Range: bytes=0-1,10-11\r\n");
    CHECK(r.status == 200);
    CHECK(r.body.size() == large.size());
    r = get("large", "Range: bytes=0-1,1-3\r\n");  // merged into one: still a range
    CHECK(r.status == 206);
    CHECK(r.body == large.substr(0, 4));
  }
}

TEST_CASE("conditional PUT and DELETE", "[http][conditional]") {
  TestServer srv;
  RawClient c(srv.port());
  auto send = [&](const std::string& method, const std::string& key, const std::string& extra,
                  const std::string& body = "") {
    REQUIRE(c.send(request_with(method, key, extra, body)));
    return c.read_response();
  };
  SECTION("If-None-Match: * creates only") {
    auto r = send("PUT", "once", "If-None-Match: *\r\n", "first");
    CHECK(r.status == 201);
    const std::string etag = r.headers["etag"];
    r = send("PUT", "once", "If-None-Match: *\r\n", "second");
    CHECK(r.status == 412);
    CHECK(r.body == "{\"error\":\"precondition_failed\",\"reason\":\"if_none_match: the key exists\"}\n");
    // The refused body was read and dropped: the connection goes on, the value stands.
    r = send("GET", "once", "");
    CHECK(r.status == 200);
    CHECK(r.body == "first");
    // A large body refused the same way.
    std::string big(300 * 1024, 'z');
    CHECK(send("PUT", "once", "If-None-Match: *\r\n", big).status == 412);
    CHECK(send("GET", "once", "").body == "first");
    CHECK(send("PUT", "once", "If-None-Match: " + etag + "\r\n", "third").status == 412);
    CHECK(send("PUT", "once", "If-None-Match: \"other\"\r\n", "third").status == 201);
    // A deleted key can be created again.
    CHECK(send("DELETE", "once", "").status == 204);
    CHECK(send("PUT", "once", "If-None-Match: *\r\n", "again").status == 201);
    CHECK(send("GET", "once", "").body == "again");
  }
  SECTION("If-Match on PUT") {
    CHECK(send("PUT", "m", "If-Match: *\r\n", "v0").status == 412);  // no current value
    CHECK(send("GET", "m", "").status == 404);
    auto r = send("PUT", "m", "", "v1");
    REQUIRE(r.status == 201);
    const std::string v1 = r.headers["etag"];
    r = send("PUT", "m", "If-Match: \"00000000000000000000000000000000\"\r\n", "wrong");
    CHECK(r.status == 412);
    CHECK(r.body.find(precondition_failed_error) != std::string::npos);
    CHECK(send("GET", "m", "").body == "v1");
    r = send("PUT", "m", "If-Match: " + v1 + "\r\n", "v2");
    CHECK(r.status == 201);
    CHECK(r.headers["etag"] != v1);
    CHECK(send("GET", "m", "").body == "v2");
    CHECK(send("PUT", "m", "If-Match: " + v1 + "\r\n", "v3").status == 412);  // v1 is stale
    CHECK(send("GET", "m", "").body == "v2");
    CHECK(send("PUT", "m", "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n", "old").status == 412);
    CHECK(send("PUT", "m", "If-Unmodified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n", "v4").status == 201);
    CHECK(send("GET", "m", "").body == "v4");
  }
  SECTION("If-Match on DELETE") {
    auto r = send("PUT", "d", "", "doomed");
    REQUIRE(r.status == 201);
    const std::string etag = r.headers["etag"];
    CHECK(send("DELETE", "d", "If-Match: \"other\"\r\n").status == 412);
    CHECK(send("GET", "d", "").body == "doomed");
    CHECK(send("DELETE", "d", "If-Match: " + etag + "\r\n").status == 204);
    CHECK(send("GET", "d", "").status == 404);
    CHECK(send("DELETE", "d", "If-Match: " + etag + "\r\n").status == 412);  // gone already
  }
  SECTION("a malformed entity-tag list refuses the write before its body") {
    RawClient bad(srv.port());
    REQUIRE(bad.send(request_with("PUT", "bad", "If-Match: nope\r\n", "body")));
    CHECK(bad.read_response().status == 400);
    CHECK(send("GET", "bad", "").status == 404);
  }
}

TEST_CASE("stored headers are returned on GET and HEAD, bounded and checked", "[http][metadata]") {
  TestServer srv;
  RawClient c(srv.port());
  REQUIRE(c.send("PUT /m HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-Ringstore-Meta-Color: red\r\n"
                 "x-ringstore-meta-owner: Ann B.\r\nContent-Encoding: gzip\r\n"
                 "Content-Disposition: attachment; filename=\"a.txt\"\r\nCache-Control: max-age=60\r\n"
                 "User-Agent: not-stored\r\n\r\nhi"));
  REQUIRE(c.read_response().status == 201);
  for (bool head : {false, true}) {
    REQUIRE(c.send((head ? "HEAD" : "GET") + std::string(" /m HTTP/1.1\r\nHost: x\r\n\r\n")));
    auto r = c.read_response(5000, head);
    REQUIRE(r.status == 200);
    CHECK(r.headers["x-ringstore-meta-color"] == "red");
    CHECK(r.headers["x-ringstore-meta-owner"] == "Ann B.");
    CHECK(r.headers["content-encoding"] == "gzip");
    CHECK(r.headers["content-disposition"] == "attachment; filename=\"a.txt\"");
    CHECK(r.headers["cache-control"] == "max-age=60");
    CHECK(r.headers.count("user-agent") == 0);
    CHECK(r.headers.count("x-ringstore-expires") == 0);
  }
  // An overwrite without them stores none.
  put_ok(srv.port(), "m", "again");
  REQUIRE(c.send(get_request("m")));
  auto r = c.read_response();
  CHECK(r.body == "again");
  CHECK(r.headers.count("x-ringstore-meta-color") == 0);

  // Over the bound: 400 with the limit named; nothing stored.
  RawClient big(srv.port());
  REQUIRE(big.send("PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nX-Ringstore-Meta-A: " +
                   std::string(5000, 'a') + "\r\nX-Ringstore-Meta-B: " + std::string(5000, 'b') +
                   "\r\n\r\nx"));
  r = big.read_response();
  CHECK(r.status == 400);
  CHECK(r.body == "{\"error\":\"metadata_too_large\",\"max_bytes\":8192}\n");
  RawClient bad(srv.port());
  REQUIRE(bad.send("PUT /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nX-Ringstore-Meta-A: caf\xc3\xa9\r\n\r\nx"));
  r = bad.read_response();
  CHECK(r.status == 400);
  CHECK(r.body.find("bad_metadata") != std::string::npos);
  RawClient after(srv.port());
  REQUIRE(after.send(get_request("big")));
  CHECK(after.read_response().status == 404);
}

TEST_CASE("a value with a TTL reads as absent once it expired", "[http][expiry]") {
  TestServer srv;
  RawClient c(srv.port());
  for (const char* ttl : {"0", "-1", "abc", "315360001", ""}) {
    RawClient b(srv.port());
    REQUIRE(b.send("PUT /t HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nX-Ringstore-TTL: " +
                   std::string(ttl) + "\r\n\r\nx"));
    auto r = b.read_response();
    INFO("ttl " << ttl);
    CHECK(r.status == 400);
    CHECK(r.body.find("bad_ttl") != std::string::npos);
  }
  auto before = std::chrono::system_clock::now();
  REQUIRE(c.send("PUT /t HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Ringstore-TTL: 1\r\n"
                 "X-Ringstore-Meta-K: v\r\n\r\nshort"));
  REQUIRE(c.read_response().status == 201);
  put_ok(srv.port(), "keep", "long");
  REQUIRE(c.send(get_request("t")));
  auto r = c.read_response();
  REQUIRE(r.status == 200);
  CHECK(r.body == "short");
  CHECK(r.headers["x-ringstore-meta-k"] == "v");
  auto ms = std::stoull(r.headers["x-ringstore-expires-ms"]);
  auto want = std::chrono::duration_cast<std::chrono::milliseconds>(before.time_since_epoch()).count() + 1000;
  CHECK(ms >= static_cast<std::uint64_t>(want));
  CHECK(ms < static_cast<std::uint64_t>(want) + 1000);
  CHECK(r.headers["x-ringstore-expires"].find(" GMT") != std::string::npos);
  REQUIRE(c.send(get_request("?list")));
  CHECK(c.read_response().body.find("\"t\"") != std::string::npos);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  REQUIRE(c.send(get_request("t")));
  CHECK(c.read_response().status == 404);
  REQUIRE(c.send("HEAD /t HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(c.read_response(5000, true).status == 404);
  REQUIRE(c.send(get_request("?list")));
  r = c.read_response();
  CHECK(r.body == "{\"keys\":[\"keep\"],\"next\":\"\"}\n");
  // A new write of the key lives again.
  put_ok(srv.port(), "t", "back");
  REQUIRE(c.send(get_request("t")));
  CHECK(c.read_response().body == "back");
}

TEST_CASE("UNLINK hides a key, ?unlinked lists it, DELETE purges it", "[http][unlink]") {
  TestServer srv;
  put_ok(srv.port(), "u/1", "one");
  put_ok(srv.port(), "u/2", "two");
  put_ok(srv.port(), "v/1", "three");
  RawClient c(srv.port());
  REQUIRE(c.send("UNLINK /u/1 HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(c.read_response().status == 204);
  REQUIRE(c.send("UNLINK /v/1 HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(c.read_response().status == 204);
  REQUIRE(c.send(get_request("u/1")));
  CHECK(c.read_response().status == 404);
  REQUIRE(c.send("HEAD /u/1 HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(c.read_response(5000, true).status == 404);
  REQUIRE(c.send(get_request("?list")));
  CHECK(c.read_response().body == "{\"keys\":[\"u/2\"],\"next\":\"\"}\n");
  REQUIRE(c.send(get_request("?unlinked")));
  CHECK(c.read_response().body == "{\"keys\":[\"u/1\",\"v/1\"],\"next\":\"\"}\n");
  REQUIRE(c.send(get_request("u/?unlinked")));
  CHECK(c.read_response().body == "{\"keys\":[\"u/1\"],\"next\":\"\"}\n");
  REQUIRE(c.send(get_request("?unlinked&limit=1")));
  // Pages are by key: `next` is the row after the page, whatever its state.
  CHECK(c.read_response().body == "{\"keys\":[\"u/1\"],\"next\":\"u/2\"}\n");
  REQUIRE(c.send(get_request("?unlinked&start=u/2")));
  CHECK(c.read_response().body == "{\"keys\":[\"v/1\"],\"next\":\"\"}\n");
  REQUIRE(c.send(get_request("?unlinked&start=v")));
  CHECK(c.read_response().body == "{\"keys\":[\"v/1\"],\"next\":\"\"}\n");
  REQUIRE(c.send("DELETE /u/1 HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(c.read_response().status == 204);
  REQUIRE(c.send(get_request("?unlinked")));
  CHECK(c.read_response().body == "{\"keys\":[\"v/1\"],\"next\":\"\"}\n");
  // A PUT after an UNLINK brings the key back, off the unlinked list.
  put_ok(srv.port(), "v/1", "again");
  REQUIRE(c.send(get_request("?unlinked")));
  CHECK(c.read_response().body == "{\"keys\":[],\"next\":\"\"}\n");
}

// The node reads the time from the clock in its config: a value's version, expiry, Date
// and Last-Modified come from the ManualClock, and the value expires when the clock is
// moved past its expiry, with no waiting. Its wall clock is years behind the real one:
// a read of the system clock anywhere on this path would find the value long expired.
TEST_CASE("a node on a manual clock stamps and expires values by that clock",
          "[http][expiry][clock]") {
  constexpr std::uint64_t wall_ms = 1'700'000'000'000;  // Tue, 14 Nov 2023 22:13:20 GMT
  common::ManualClock clock(wall_ms, 0);
  node::ServerConfig cfg;
  cfg.clock = &clock;
  TestServer srv(cfg);
  RawClient c(srv.port());
  REQUIRE(c.send("PUT /t HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Ringstore-TTL: 2\r\n"
                 "\r\nshort"));
  auto put = c.read_response();
  REQUIRE(put.status == 201);
  CHECK(put.headers["date"] == "Tue, 14 Nov 2023 22:13:20 GMT");

  REQUIRE(c.send(get_request("t")));
  auto r = c.read_response();
  REQUIRE(r.status == 200);
  CHECK(r.body == "short");
  CHECK(r.headers["x-ringstore-expires-ms"] == std::to_string(wall_ms + 2'000));
  CHECK(r.headers["last-modified"] == "Tue, 14 Nov 2023 22:13:20 GMT");
  auto version = blobstore::Version::parse(r.headers["x-ringstore-version"]);
  REQUIRE(version.has_value());
  CHECK(version->wall_ms() == wall_ms);

  clock.advance_ms(1'999);  // one ms before the expiry: still there
  REQUIRE(c.send(get_request("t")));
  r = c.read_response();
  CHECK(r.status == 200);
  CHECK(r.headers["date"] == "Tue, 14 Nov 2023 22:13:21 GMT");
  REQUIRE(c.send(get_request("?list")));
  CHECK(c.read_response().body == "{\"keys\":[\"t\"],\"next\":\"\"}\n");

  clock.advance_ms(1);  // at the expiry
  REQUIRE(c.send(get_request("t")));
  CHECK(c.read_response().status == 404);
  REQUIRE(c.send("HEAD /t HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(c.read_response(5000, true).status == 404);
  REQUIRE(c.send(get_request("?list")));
  CHECK(c.read_response().body == "{\"keys\":[],\"next\":\"\"}\n");

  // Set back before the expiry, the wall clock makes the value readable again: expiry is
  // decided at each read by the clock, not stored.
  clock.set_wall_ms(wall_ms + 1'000);
  REQUIRE(c.send(get_request("t")));
  CHECK(c.read_response().status == 200);
}

// Connection deadlines are in the clock's monotonic ms: an idle connection is cut when
// the ManualClock passes its idle timeout, whatever the real time.
TEST_CASE("a node on a manual clock cuts idle connections by that clock", "[http][clock]") {
  common::ManualClock clock;
  node::ServerConfig cfg;
  cfg.clock = &clock;
  cfg.limits.idle_timeout_ms = 60'000;
  TestServer srv(cfg);
  RawClient c(srv.port());
  REQUIRE(c.send(get_request("nothing")));
  REQUIRE(c.read_response().status == 404);
  // The idle deadline is set once the response's write has completed, which may be
  // after the client read it: the clock stands still meanwhile, so it is set at 0 ms.
  CHECK_FALSE(c.closed_by_peer(600));
  clock.advance_ms(59'999);
  CHECK_FALSE(c.closed_by_peer(600));  // a sweep (every 250 ms) ran: not due yet
  clock.advance_ms(1);
  CHECK(c.closed_by_peer(5000));  // the next sweep cuts it, 60 s early by the real clock
}
