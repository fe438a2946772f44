// Tests of one `ringstore serve` process over real sockets: the HTTP API, its limits and
// timeouts, and what survives SIGTERM, SIGKILL and an index rebuild.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>

#include "integration/support.h"

using namespace itest;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// The body of an error response: exactly one line of JSON with a string "error".
void check_error_body(const std::string& body, const std::string& error = "") {
  INFO("error body: " << body);
  REQUIRE(!body.empty());
  CHECK(body.back() == '\n');
  CHECK(std::count(body.begin(), body.end(), '\n') == 1);
  json j = json::parse(body, nullptr, false);
  REQUIRE(!j.is_discarded());
  REQUIRE(j.is_object());
  REQUIRE(j.contains("error"));
  REQUIRE(j["error"].is_string());
  CHECK(!j["error"].get<std::string>().empty());
  if (!error.empty()) CHECK(j["error"] == error);
}

json parse_json(const Response& r) {
  INFO("body: " << r.body);
  json j = json::parse(r.body, nullptr, false);
  REQUIRE(!j.is_discarded());
  return j;
}

// Every key under `prefix`, page by page, and the number of pages it took.
std::vector<std::string> list_all(const NodeProcess& node, const std::string& prefix,
                                  std::size_t limit, int* pages = nullptr) {
  std::vector<std::string> keys;
  std::string start;
  int n = 0;
  for (;;) {
    REQUIRE(n < 100);  // next must end the walk
    std::string url = node.url(url_encode(prefix)) + "?list&limit=" + std::to_string(limit);
    if (!start.empty()) url += "&start=" + url_encode(start, false);
    Response r = request("GET", url);
    REQUIRE(r.status == 200);
    CHECK(r.header("content-type") == "application/json");
    json j = parse_json(r);
    REQUIRE(j["keys"].is_array());
    REQUIRE(j["next"].is_string());
    CHECK(j["keys"].size() <= limit);
    for (const auto& k : j["keys"]) keys.push_back(k.get<std::string>());
    n++;
    start = j["next"].get<std::string>();
    if (start.empty()) break;
  }
  if (pages != nullptr) *pages = n;
  return keys;
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());  // std::string compares as unsigned bytes
  return v;
}

// Waits until `pred` holds or the deadline passes; returns its last value.
template <typename F>
bool eventually(F pred, Millis deadline = 5s, Millis step = 10ms) {
  auto until = Clock::now() + deadline;
  for (;;) {
    if (pred()) return true;
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(step);
  }
}

// Size of the largest file in each disk's tmp/ (uploads in progress), -1 if none.
long long largest_tmp_file(const NodeProcess& node) {
  long long best = -1;
  for (const auto& d : node.disks()) {
    for (const auto& f : files_under(d + "/tmp")) {
      std::error_code ec;
      auto size = fs::file_size(d + "/tmp/" + f, ec);
      if (!ec && static_cast<long long>(size) > best) best = static_cast<long long>(size);
    }
  }
  return best;
}

std::size_t tmp_files(const NodeProcess& node) {
  std::size_t n = 0;
  for (const auto& d : node.disks()) n += files_under(d + "/tmp").size();
  return n;
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace

TEST_CASE("PUT, GET, HEAD and DELETE round-trip a value with its metadata", "[integration]") {
  NodeProcess node;
  const std::string key = "dir/obj.bin";
  const std::string body = Prng(1).bytes(5000);

  Response put = request("PUT", node.url(key), body, {"Content-Type: image/png", "Accept: application/json"});
  INFO(node.log());
  REQUIRE(put.status == 201);
  CHECK(put.header("etag") == quoted_md5(body));
  CHECK(!put.header("x-ringstore-version").empty());
  json pj = parse_json(put);
  CHECK(pj["etag"] == md5_hex(body));
  CHECK(pj["version"] == put.header("x-ringstore-version"));

  Response get = request("GET", node.url(key));
  REQUIRE(get.status == 200);
  CHECK(get.body == body);
  CHECK(get.header("content-length") == "5000");
  CHECK(get.header("etag") == quoted_md5(body));
  CHECK(get.header("content-type") == "image/png");
  CHECK(get.header("accept-ranges") == "bytes");
  const std::string last_modified = get.header("last-modified");
  CHECK(std::regex_match(last_modified,
                         std::regex(R"([A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT)")));

  Response head = request("HEAD", node.url(key));
  REQUIRE(head.status == 200);
  CHECK(head.body.empty());
  CHECK(head.header("content-length") == "5000");
  CHECK(head.header("etag") == quoted_md5(body));
  CHECK(head.header("content-type") == "image/png");
  CHECK(head.header("last-modified") == last_modified);

  // Without a Content-Type the value is served as octet-stream.
  REQUIRE(request("PUT", node.url("plain"), "abc").status == 201);
  CHECK(request("GET", node.url("plain")).header("content-type") == "application/octet-stream");

  // An overwrite replaces the bytes and the ETag.
  const std::string body2 = "second version";
  REQUIRE(request("PUT", node.url(key), body2, {"Content-Type: text/plain"}).status == 201);
  Response get2 = request("GET", node.url(key));
  CHECK(get2.body == body2);
  CHECK(get2.header("etag") == quoted_md5(body2));
  CHECK(get2.header("content-type") == "text/plain");

  Response del1 = request("DELETE", node.url(key));
  CHECK(del1.status == 204);
  CHECK(del1.body.empty());
  CHECK(request("DELETE", node.url(key)).status == 204);
  CHECK(request("DELETE", node.url("never-written")).status == 204);

  Response gone = request("GET", node.url(key));
  CHECK(gone.status == 404);
  check_error_body(gone.body, "not_found");
  CHECK(request("HEAD", node.url(key)).status == 404);
  Response missing = request("GET", node.url("no-such-key"));
  CHECK(missing.status == 404);
  check_error_body(missing.body, "not_found");
}

TEST_CASE("chunked uploads and Expect: 100-continue", "[integration]") {
  NodeProcess node;

  SECTION("a chunked PUT of unknown length is stored whole") {
    const std::size_t total = 300'017;
    Prng src(2);
    std::size_t sent = 0;
    Request r;
    r.method = "PUT";
    r.url = node.url("chunked");
    r.headers = {"Transfer-Encoding: chunked", "Content-Type: text/x-chunked"};
    r.reader = [&](char* buf, std::size_t n) {
      std::size_t k = std::min({n, total - sent, std::size_t{7000}});
      src.fill(buf, k);
      sent += k;
      return k;
    };
    Response put = perform(r);
    INFO(put.error << "\n" << node.log());
    REQUIRE(put.status == 201);
    const std::string expect = Prng(2).bytes(total);
    CHECK(put.header("etag") == quoted_md5(expect));
    Response get = request("GET", node.url("chunked"));
    REQUIRE(get.status == 200);
    CHECK(get.body.size() == total);
    CHECK(get.body == expect);
    CHECK(get.header("content-type") == "text/x-chunked");
  }

  SECTION("100 Continue comes at once, so a 2 MiB upload beats curl's 1 s expect wait") {
    const std::string body = Prng(3).bytes(2 << 20);
    Request r;
    r.method = "PUT";
    r.url = node.url("expect");
    r.body = body;
    r.headers = {"Expect: 100-continue"};
    Response put = perform(r);
    INFO(put.error << "\n" << node.log());
    REQUIRE(put.status == 201);
    REQUIRE(!put.statuses.empty());
    CHECK(put.statuses.front() == 100);
    CHECK(put.seconds < 0.9);
    CHECK(put.header("etag") == quoted_md5(body));
    Response get = request("GET", node.url("expect"));
    CHECK(get.status == 200);
    CHECK(get.body == body);
  }
}

TEST_CASE("Range requests on small and streamed values", "[integration]") {
  NodeProcess node;
  for (std::uint64_t size : {std::uint64_t{10 * 1024}, std::uint64_t{3 * 1024 * 1024}}) {
    INFO("value of " << size << " bytes");
    const std::string key = "range-" + std::to_string(size);
    const std::string data = Prng(size).bytes(size);
    REQUIRE(request("PUT", node.url(key), data).status == 201);

    struct Case {
      std::string header;
      std::uint64_t first, last;
    };
    const std::string s = std::to_string(size);
    const std::vector<Case> cases = {
        {"bytes=0-99", 0, 99},
        {"bytes=1000-1999", 1000, 1999},
        {"bytes=4097-8191", 4097, 8191},
        {"bytes=-10", size - 10, size - 1},
        {"bytes=" + std::to_string(size - 100) + "-", size - 100, size - 1},
        {"bytes=5-", 5, size - 1},
        {"bytes=100-" + std::to_string(size * 2), 100, size - 1},  // clipped to the end
        {"bytes=" + std::to_string(size - 1) + "-" + std::to_string(size - 1), size - 1, size - 1},
    };
    for (const Case& c : cases) {
      INFO("Range: " << c.header);
      Response r = request("GET", node.url(key), "", {"Range: " + c.header});
      REQUIRE(r.status == 206);
      CHECK(r.header("content-range") ==
            "bytes " + std::to_string(c.first) + "-" + std::to_string(c.last) + "/" + s);
      CHECK(r.header("content-length") == std::to_string(c.last - c.first + 1));
      CHECK(r.header("etag") == quoted_md5(data));
      REQUIRE(r.body.size() == c.last - c.first + 1);
      CHECK(r.body == data.substr(c.first, c.last - c.first + 1));
    }

    for (const std::string& bad : {"bytes=" + s + "-", "bytes=" + std::to_string(size + 5) + "-" +
                                                           std::to_string(size + 10)}) {
      INFO("Range: " << bad);
      Response r = request("GET", node.url(key), "", {"Range: " + bad});
      CHECK(r.status == 416);
      CHECK(r.header("content-range") == "bytes */" + s);
    }

    Response whole = request("GET", node.url(key));
    REQUIRE(whole.status == 200);
    CHECK(whole.header("content-range").empty());
    CHECK(whole.body == data);
  }
}

TEST_CASE("If-None-Match answers 304 only for the current ETag", "[integration]") {
  NodeProcess node;
  const std::string v1 = "first value";
  REQUIRE(request("PUT", node.url("cached"), v1).status == 201);
  const std::string etag = quoted_md5(v1);

  Response hit = request("GET", node.url("cached"), "", {"If-None-Match: " + etag});
  CHECK(hit.status == 304);
  CHECK(hit.body.empty());
  CHECK(hit.header("etag") == etag);

  Response listed = request("GET", node.url("cached"), "",
                            {"If-None-Match: \"00000000000000000000000000000000\", " + etag});
  CHECK(listed.status == 304);

  Response miss = request("GET", node.url("cached"), "",
                          {"If-None-Match: \"00000000000000000000000000000000\""});
  CHECK(miss.status == 200);
  CHECK(miss.body == v1);

  // After an overwrite the old ETag no longer matches.
  REQUIRE(request("PUT", node.url("cached"), "second value").status == 201);
  Response stale = request("GET", node.url("cached"), "", {"If-None-Match: " + etag});
  CHECK(stale.status == 200);
  CHECK(stale.body == "second value");
}

TEST_CASE("listing filters by prefix and pages through keys in byte order", "[integration]") {
  NodeProcess node;
  std::vector<std::string> photos, docs;
  for (int i = 0; i < 15; i++) photos.push_back("photos/img-" + std::to_string(i));
  docs = {"docs/a", "docs/B", "docs/b", "docs/_x", "docs/\xC3\xA9t\xC3\xA9",
          "docs/~", "docs/a/b", "docs/a-b", "docs/0", "docs/Z"};
  std::vector<std::string> all = photos;
  all.insert(all.end(), docs.begin(), docs.end());
  REQUIRE(all.size() == 25);
  for (const auto& k : all) {
    INFO(k);
    REQUIRE(request("PUT", node.url(url_encode(k)), "v:" + k).status == 201);
  }

  int pages = 0;
  std::vector<std::string> got = list_all(node, "", 10, &pages);
  CHECK(got == sorted(all));  // every key once, in byte order
  CHECK(pages == 3);

  CHECK(list_all(node, "docs/", 1000) == sorted(docs));
  CHECK(list_all(node, "photos/", 1000) == sorted(photos));
  CHECK(list_all(node, "docs/", 3) == sorted(docs));
  CHECK(list_all(node, "docs/a", 1000) ==
        std::vector<std::string>{"docs/a", "docs/a-b", "docs/a/b"});
  CHECK(list_all(node, "nothing/", 10).empty());

  Response plain = request("GET", node.url("docs/") + "?list");
  REQUIRE(plain.status == 200);
  json j = parse_json(plain);
  CHECK(j["keys"].size() == docs.size());
  CHECK(j["next"] == "");

  // Deleted keys vanish from listings.
  REQUIRE(request("DELETE", node.url("docs/B")).status == 204);
  REQUIRE(request("DELETE", node.url("photos/img-3")).status == 204);
  std::vector<std::string> live;
  for (const auto& k : all) {
    if (k != "docs/B" && k != "photos/img-3") live.push_back(k);
  }
  CHECK(list_all(node, "", 10) == sorted(live));

  Response zero = request("GET", node.url("") + "?list&limit=0");
  CHECK(zero.status == 400);
  check_error_body(zero.body);
  CHECK(request("GET", node.url("") + "?list&limit=abc").status == 400);
}

TEST_CASE("bad keys and methods are rejected with one line of JSON", "[integration]") {
  NodeProcess node;
  struct Case {
    std::string name, path;
  };
  const std::vector<Case> cases = {
      {"1025-byte key", std::string(1025, 'k')},
      {"reserved _/ prefix", "_/x"},
      {"reserved _/ prefix, percent-encoded", "%5F/y"},
      {"NUL byte", "a%00b"},
      {"invalid UTF-8", "a%FFb"},
      {"bad percent escape", "a%G1b"},
      {"truncated percent escape", "ab%4"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    Response put = request("PUT", node.url(c.path), "value");
    CHECK(put.status == 400);
    check_error_body(put.body);
    if (c.name.find("reserved") == std::string::npos) {  // GET /_/... is the system namespace
      Response get = request("GET", node.url(c.path));
      CHECK(get.status == 400);
      check_error_body(get.body);
    }
  }
  // The longest key allowed works.
  const std::string longest(1024, 'k');
  CHECK(request("PUT", node.url(longest), "ok").status == 201);
  CHECK(request("GET", node.url(longest)).body == "ok");

  Response post = request("POST", node.url("k"), "body");
  CHECK(post.status == 405);
  check_error_body(post.body);
  Response patch = request("PATCH", node.url("k"), "body");
  CHECK(patch.status == 405);
  CHECK(request("GET", node.url("_/status")).status == 200);  // still serving
}

TEST_CASE("body and header limits answer 413 and 431", "[integration]") {
  NodeProcess node({.extra_args = {"--body-max-bytes", "1000", "--header-max-bytes", "2048"}});

  SECTION("bodies") {
    CHECK(request("PUT", node.url("exact"), std::string(1000, 'x')).status == 201);

    Response big = request("PUT", node.url("big"), std::string(1001, 'x'));
    INFO(big.error << "\n" << node.log());
    CHECK(big.status == 413);
    check_error_body(big.body, "body_too_large");
    CHECK(parse_json(big)["max_bytes"] == 1000);

    std::size_t sent = 0;
    Request r;
    r.method = "PUT";
    r.url = node.url("big-chunked");
    r.headers = {"Transfer-Encoding: chunked"};
    r.reader = [&](char* buf, std::size_t n) {
      std::size_t k = std::min({n, std::size_t{1001} - sent, std::size_t{100}});
      std::memset(buf, 'y', k);
      sent += k;
      return k;
    };
    Response chunked = perform(r);
    INFO(chunked.error);
    CHECK(chunked.status == 413);
    check_error_body(chunked.body, "body_too_large");
    CHECK(parse_json(chunked)["max_bytes"] == 1000);

    CHECK(request("GET", node.url("big")).status == 404);
    CHECK(request("GET", node.url("big-chunked")).status == 404);
  }

  SECTION("headers") {
    Response r = request("GET", node.url("k"), "", {"X-Filler: " + std::string(3000, 'f')});
    INFO(r.error);
    CHECK(r.status == 431);
    check_error_body(r.body, "headers_too_large");
  }

  // The node still serves.
  CHECK(request("PUT", node.url("after"), "fine").status == 201);
  CHECK(request("GET", node.url("after")).body == "fine");
  CHECK(request("GET", node.url("_/status")).status == 200);
}

TEST_CASE("values survive a SIGTERM and restart", "[integration]") {
  NodeProcess node;
  struct Stored {
    std::string key, body, etag, type;
  };
  std::vector<Stored> stored;
  for (int i = 0; i < 50; i++) {
    Stored s;
    s.key = "persist/" + std::to_string(i);
    std::size_t size = i == 0 ? 0 : i == 1 ? 600 * 1024 : static_cast<std::size_t>(i) * 997 % 40'000;
    s.body = Prng(1000 + i).bytes(size);
    s.type = i % 2 ? "application/x-odd" : "text/even";
    Response r = request("PUT", node.url(s.key), s.body, {"Content-Type: " + s.type});
    INFO(s.key << " " << r.error);
    REQUIRE(r.status == 201);
    s.etag = r.header("etag");
    CHECK(s.etag == quoted_md5(s.body));
    stored.push_back(std::move(s));
  }
  REQUIRE(node.terminate() == 0);
  node.restart();
  INFO(node.log());
  json status = parse_json(request("GET", node.url("_/status")));
  CHECK(status["keys"] == 50);
  for (const auto& s : stored) {
    INFO(s.key);
    Response r = request("GET", node.url(s.key));
    REQUIRE(r.status == 200);
    CHECK(r.body.size() == s.body.size());
    CHECK(r.body == s.body);
    CHECK(r.header("etag") == s.etag);
    CHECK(r.header("content-type") == s.type);
  }
}

TEST_CASE("kill -9 during an upload loses only the unacknowledged value", "[integration]") {
  NodeProcess node;
  const std::string done_body = Prng(9).bytes(100 * 1024);
  REQUIRE(request("PUT", node.url("done"), done_body).status == 201);

  // Half a 64 MiB upload, then nothing: the node holds it in a temp file.
  RawSocket s(node.port());
  REQUIRE(s.connected());
  REQUIRE(s.send_all("PUT /partial HTTP/1.1\r\nHost: x\r\nContent-Length: 67108864\r\n\r\n"));
  REQUIRE(s.send_all(Prng(10).bytes(1 << 20)));
  REQUIRE(eventually([&] { return largest_tmp_file(node) >= (1 << 20); }));

  node.kill9();
  REQUIRE(tmp_files(node) > 0);  // the crash left the orphan behind
  s.close();

  node.restart();
  INFO(node.log());
  // Swept at start: what stays in tmp/ is the stock of empty files kept ready.
  CHECK(largest_tmp_file(node) == 0);
  Response partial = request("GET", node.url("partial"));
  CHECK(partial.status == 404);
  Response done = request("GET", node.url("done"));
  REQUIRE(done.status == 200);
  CHECK(done.body == done_body);
  CHECK(done.header("etag") == quoted_md5(done_body));
  CHECK(parse_json(request("GET", node.url("_/status")))["keys"] == 1);
}

TEST_CASE("rebuild recreates the index from the disks alone", "[integration]") {
  NodeProcess node({.disks = 2});
  std::map<std::string, std::optional<std::string>> expect;  // nullopt: deleted
  for (int i = 0; i < 30; i++) {
    std::string key = "r/" + std::to_string(i);
    std::string body = Prng(2000 + i).bytes(100 + 37 * i);
    REQUIRE(request("PUT", node.url(key), body).status == 201);
    expect[key] = body;
  }
  for (int round = 1; round <= 2; round++) {  // every third key is overwritten twice
    for (int i = 0; i < 30; i += 3) {
      std::string key = "r/" + std::to_string(i);
      std::string body = "round " + std::to_string(round) + " of " + key;
      REQUIRE(request("PUT", node.url(key), body).status == 201);
      expect[key] = body;
    }
  }
  for (int i = 1; i < 30; i += 5) {  // some deleted, r/6 and r/21 after overwrites
    std::string key = "r/" + std::to_string(i);
    REQUIRE(request("DELETE", node.url(key)).status == 204);
    expect[key] = std::nullopt;
  }
  std::vector<std::string> live;
  for (const auto& [k, v] : expect) {
    if (v) live.push_back(k);
  }
  REQUIRE(node.terminate() == 0);

  int removed = 0;
  for (const auto& e : fs::directory_iterator(node.data_dir())) {
    if (e.path().filename().string().rfind("index.db", 0) == 0) {
      fs::remove(e.path());
      removed++;
    }
  }
  REQUIRE(removed >= 1);

  std::vector<std::string> args = {"rebuild", "--data", node.data_dir()};
  for (const auto& d : node.disks()) {
    args.push_back("--disk");
    args.push_back(d);
  }
  RunResult rb = run_binary(args);
  INFO("rebuild stdout: " << rb.out << "\nstderr: " << rb.err);
  REQUIRE(rb.exit_code == 0);
  std::smatch m;
  REQUIRE(std::regex_search(
      rb.out, m,
      std::regex(R"(rebuilt index: (\d+) files \((\d+) written out from the commit log\), (\d+) keys, (\d+) skipped)")));
  // The deleted keys' tombstones were index rows alone, and their values' files went
  // with them (or never were made): those keys are simply absent now.
  CHECK(std::stoi(m[1]) >= static_cast<int>(live.size()));
  CHECK(std::stoi(m[2]) == 0);  // a clean stop wrote every file out
  CHECK(std::stoi(m[3]) == static_cast<int>(live.size()));
  CHECK(std::stoi(m[4]) == 0);

  node.restart();
  INFO(node.log());
  for (const auto& [key, value] : expect) {
    INFO(key);
    Response r = request("GET", node.url(key));
    if (value) {
      REQUIRE(r.status == 200);
      CHECK(r.body == *value);
      CHECK(r.header("etag") == quoted_md5(*value));
    } else {
      CHECK(r.status == 404);
    }
  }
  CHECK(list_all(node, "r/", 1000) == sorted(live));
  CHECK(parse_json(request("GET", node.url("_/status")))["keys"] == live.size());
}

TEST_CASE("a 768 MiB value streams through in bounded memory", "[integration][big]") {
  NodeProcess node;
  const std::uint64_t size = 768ull << 20;
  std::atomic<bool> stop{false};
  std::atomic<long long> max_rss{0};
  std::atomic<int> samples{0};
  std::thread sampler([&] {
    while (!stop.load()) {
      long long rss = node.rss_bytes();
      if (rss > 0) {
        samples++;
        if (rss > max_rss.load()) max_rss = rss;
      }
      std::this_thread::sleep_for(50ms);
    }
  });

  Prng src(768);
  Sha256 sent_hash;
  std::uint64_t sent = 0;
  Request up;
  up.method = "PUT";
  up.url = node.url("big/value");
  up.upload_size = size;
  up.timeout_ms = 300'000;
  up.reader = [&](char* buf, std::size_t n) {
    std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(n, size - sent));
    src.fill(buf, k);
    sent_hash.update(buf, k);
    sent += k;
    return k;
  };
  Response put = perform(up);

  Sha256 got_hash;
  std::uint64_t got = 0;
  Request down;
  down.url = node.url("big/value");
  down.timeout_ms = 300'000;
  down.writer = [&](const char* data, std::size_t n) {
    got_hash.update(data, n);
    got += n;
  };
  Response get = put.status == 201 ? perform(down) : Response{};
  stop = true;
  sampler.join();

  INFO(put.error << " " << get.error << "\n" << node.log());
  REQUIRE(put.status == 201);
  CHECK(sent == size);
  REQUIRE(get.status == 200);
  CHECK(get.header("content-length") == std::to_string(size));
  CHECK(got == size);
  CHECK(got_hash.hex() == sent_hash.hex());
  INFO("max RSS " << max_rss.load() / 1024 << " KiB over " << samples.load() << " samples");
  CHECK(samples.load() >= 10);
  REQUIRE(max_rss.load() < (64ll << 20));

  REQUIRE(request("DELETE", node.url("big/value")).status == 204);
  CHECK(request("GET", node.url("big/value")).status == 404);
  auto big_files = [&] {
    int n = 0;
    for (const auto& d : node.disks()) {
      for (const auto& f : files_under(d)) {
        std::error_code ec;
        if (fs::file_size(d + "/" + f, ec) > (1u << 20) && !ec) n++;
      }
    }
    return n;
  };
  CHECK(eventually([&] { return big_files() == 0; }));  // the space is returned
}

TEST_CASE("SIGTERM lets a request in flight finish, then exits 0", "[integration]") {
  NodeProcess node;
  const std::string body = Prng(12).bytes(1000);
  RawSocket s(node.port());
  REQUIRE(s.connected());
  REQUIRE(s.send_all("PUT /inflight HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"));
  REQUIRE(s.send_all(body.substr(0, 500)));
  // The request is in flight once its temp file exists (a small body stays in memory
  // until it is sealed, so the file stays empty until then).
  REQUIRE(eventually([&] { return largest_tmp_file(node) >= 0; }));

  node.signal(SIGTERM);
  // New connections are refused once the signal is handled.
  bool refused = eventually([&] {
    RawSocket probe(node.port());
    return !probe.connected() && probe.connect_errno() == ECONNREFUSED;
  }, 3s, 20ms);
  CHECK(refused);

  REQUIRE(s.send_all(body.substr(500)));
  auto resp = s.read_response(10s);
  INFO(node.log());
  REQUIRE(resp);
  CHECK(resp->status == 201);
  CHECK(resp->headers["etag"] == quoted_md5(body));
  CHECK(node.wait_exit(15s) == 0);

  // The acknowledged value is durable.
  node.restart();
  Response r = request("GET", node.url("inflight"));
  CHECK(r.status == 200);
  CHECK(r.body == body);
}

TEST_CASE("slow and idle clients are timed out", "[integration]") {
  NodeProcess node({.extra_args = {"--header-timeout-ms", "300", "--idle-timeout-ms", "700",
                                   "--body-timeout-ms", "400"}});

  // Sends `bytes` and stalls: a 408 (or at least a close) must come within [min_ms, max_ms).
  auto expect_cut_off = [&](const std::string& bytes, double min_ms, double max_ms) {
    RawSocket s(node.port());
    REQUIRE(s.connected());
    auto t0 = Clock::now();
    REQUIRE(s.send_all(bytes));
    auto resp = s.read_response(3s);
    double ms = ms_since(t0);
    if (resp) CHECK(resp->status == 408);
    CHECK(s.wait_closed(2s));
    ms = resp ? ms : ms_since(t0);
    INFO("answered after " << ms << " ms");
    CHECK(ms >= min_ms);
    CHECK(ms < max_ms);
  };

  SECTION("half a request line gets 408 and a close") {
    expect_cut_off("GET /some-key HT", 250, 2000);
  }

  SECTION("a stalled body gets 408 and a close") {
    expect_cut_off("PUT /stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789", 300, 2500);
    CHECK(request("GET", node.url("stalled")).status == 404);
  }

  SECTION("an idle keep-alive connection is closed") {
    RawSocket s(node.port());
    REQUIRE(s.connected());
    REQUIRE(s.send_all("GET /_/status HTTP/1.1\r\nHost: x\r\n\r\n"));
    auto resp = s.read_response(3s);
    REQUIRE(resp);
    CHECK(resp->status == 200);
    auto t0 = Clock::now();
    CHECK(s.wait_closed(3s));
    double ms = ms_since(t0);
    INFO("closed after " << ms << " ms idle");
    CHECK(ms >= 500);
    CHECK(ms < 2500);
  }
}

TEST_CASE("connections over --connections-max are turned away", "[integration]") {
  NodeProcess node({.extra_args = {"--connections-max", "8"}});
  const std::string get_status = "GET /_/status HTTP/1.1\r\nHost: x\r\n\r\n";
  std::vector<std::unique_ptr<RawSocket>> open;
  for (int i = 0; i < 8; i++) {
    auto s = std::make_unique<RawSocket>(node.port());
    REQUIRE(s->connected());
    REQUIRE(s->send_all(get_status));  // a response proves the node holds the connection
    auto r = s->read_response(3s);
    REQUIRE(r);
    CHECK(r->status == 200);
    open.push_back(std::move(s));
  }

  {
    RawSocket ninth(node.port());
    if (ninth.connected()) {  // accepted by the kernel, then answered and closed
      auto r = ninth.read_response(3s);
      if (r) {
        CHECK(r->status == 503);
        check_error_body(r->body);
      }
      CHECK(ninth.wait_closed(3s));
    }
  }

  // Those already open still work.
  REQUIRE(open[0]->send_all(get_status));
  auto again = open[0]->read_response(3s);
  REQUIRE(again);
  CHECK(again->status == 200);

  open.clear();
  CHECK(eventually([&] { return request("GET", node.url("_/status"), "", {}, 2000).status == 200; },
                   5s, 50ms));
}

TEST_CASE("pipelined requests on one connection are answered in order", "[integration]") {
  NodeProcess node;
  REQUIRE(request("PUT", node.url("a"), "AAAA").status == 201);
  RawSocket s(node.port());
  REQUIRE(s.connected());
  const std::string batch =
      "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
      "PUT /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
      "GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
  REQUIRE(s.send_all(batch));

  auto r1 = s.read_response(5s);
  auto r2 = s.read_response(5s);
  auto r3 = s.read_response(5s);
  auto r4 = s.read_response(5s);
  INFO(node.log());
  REQUIRE(r1);
  REQUIRE(r2);
  REQUIRE(r3);
  REQUIRE(r4);
  CHECK(r1->status == 200);
  CHECK(r1->body == "AAAA");
  CHECK(r2->status == 404);
  check_error_body(r2->body, "not_found");
  CHECK(r3->status == 201);
  CHECK(r3->headers["etag"] == quoted_md5("hello"));
  CHECK(r4->status == 200);
  CHECK(r4->body == "hello");
  CHECK(s.buffered().empty());

  // The connection stays usable.
  REQUIRE(s.send_all("HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r5 = s.read_response(5s, true);
  REQUIRE(r5);
  CHECK(r5->status == 200);
  CHECK(r5->headers["content-length"] == "4");
}

namespace {
std::uint64_t metric(const NodeProcess& node, const std::string& name) {
  Response m = request("GET", node.url("_/metrics"));
  std::smatch v;
  if (!std::regex_search(m.body, v, std::regex("\n" + name + " ([0-9]+)\n"))) return ~0ull;
  return std::stoull(v[1]);
}
}  // namespace

TEST_CASE("after a power cut a default node restores its acknowledged small writes from the commit log",
          "[integration]") {
  // No sync round in the test's time: only the log and the index hold the writes.
  NodeProcess node({.disks = 2, .extra_args = {"--sync-period-ms", "60000"}});
  for (int i = 0; i < 20; i++) {
    REQUIRE(request("PUT", node.url("c" + std::to_string(i)), "value " + std::to_string(i)).status == 201);
  }
  REQUIRE(request("DELETE", node.url("c0")).status == 204);
  CHECK(metric(node, "ringstore_pending_files") == 19);  // c0's value never became a file
  CHECK(metric(node, "ringstore_files_never_written_total") == 1);
  node.kill9();
  // Killed before a sync round: no blob file was written out. Only the log and the index
  // (durable) hold the writes, and c0's tombstone is a row of the index.
  std::size_t n = 0;
  for (const std::string& d : node.disks()) n += files_under(d + "/blobs").size();
  REQUIRE(n == 0);
  node.restart();
  CHECK(node.log().find("the commit log restored") != std::string::npos);
  for (int i = 1; i < 20; i++) {
    Response r = request("GET", node.url("c" + std::to_string(i)));
    CHECK(r.status == 200);
    CHECK(r.body == "value " + std::to_string(i));
  }
  CHECK(request("GET", node.url("c0")).status == 404);
}

TEST_CASE("a node with --sync periodic acknowledges writes unsynced and syncs them every period",
          "[integration]") {
  NodeProcess node({.disks = 2, .extra_args = {"--sync", "periodic", "--sync-period-ms", "50"}});
  for (int i = 0; i < 20; i++) {
    REQUIRE(request("PUT", node.url("p" + std::to_string(i)), "v" + std::to_string(i)).status == 201);
  }
  CHECK(request("DELETE", node.url("p0")).status == 204);
  CHECK(request("GET", node.url("p7")).body == "v7");
  CHECK(request("GET", node.url("p0")).status == 404);
  CHECK(metric(node, "ringstore_batch_syncs_total") == 0);
  CHECK(wait_for([&] {
          std::uint64_t n = metric(node, "ringstore_periodic_syncs_total");
          return n != ~0ull && n > 0;
        }, 10) >= 0);
  CHECK(metric(node, "ringstore_periodic_sync_errors_total") == 0);
  CHECK(node.terminate() == 0);  // a clean stop syncs what is left
  node.restart();
  CHECK(request("GET", node.url("p19")).body == "v19");

  // The default: each batch durable before its 201 (here through the commit log), and a
  // sync round within the period that lets the log drop the records.
  NodeProcess always({.disks = 2, .extra_args = {"--sync-period-ms", "50"}});
  REQUIRE(request("PUT", always.url("k"), "v").status == 201);
  CHECK(metric(always, "ringstore_batch_syncs_total") > 0);
  CHECK(wait_for([&] {
          std::uint64_t n = metric(always, "ringstore_commit_log_checkpoints_total");
          return n != ~0ull && n > 0;
        }, 10) >= 0);
  CHECK(metric(always, "ringstore_commit_log_checkpoints_total") < 1000);
  CHECK(metric(node, "ringstore_commit_log_checkpoints_total") == 0);

  RunResult bad = run_binary({"serve", "--data", node.root() + "/bad", "--insecure", "--sync", "sometimes"});
  CHECK(bad.exit_code != 0);
  CHECK(bad.err.find("--sync") != std::string::npos);
}
