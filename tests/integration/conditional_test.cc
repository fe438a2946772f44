// Conditional writes in a cluster: five nodes at N=3, the writes sent through a node
// that holds no copy of the key, so every precondition is checked against what the
// replicas answer (R of them), never against a local copy.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "integration/support.h"

using namespace itest;
using json = nlohmann::json;

namespace {

const char* conditional_secret = "conditional-test-secret";

// Index of a node outside the key's preference list, as node 0 sees it.
std::size_t non_replica(NodeGroup& g, const std::string& key) {
  Response r = request("GET", g.nodes[0]->url("_/locate?key=" + url_encode(key, false)));
  REQUIRE(r.status == 200);
  json j = json::parse(r.body);
  std::set<std::string> owners;
  for (const auto& p : j["preference_list"]) owners.insert(p["addr"].get<std::string>());
  REQUIRE(owners.size() == 3);
  for (std::size_t i = 0; i < g.nodes.size(); i++) {
    if (!owners.count("127.0.0.1:" + std::to_string(g.nodes[i]->port()))) return i;
  }
  FAIL("every node owns " << key);
  return 0;
}

// HEADs answered by all nodes (ringstore_http_requests_total{method="HEAD",...}): the
// replicas' answers to precondition (and read) checks.
std::uint64_t heads_answered(NodeGroup& g) {
  const std::string prefix = "ringstore_http_requests_total{method=\"HEAD\"";
  std::uint64_t total = 0;
  for (auto& n : g.nodes) {
    Response r = request("GET", n->url("_/metrics"));
    REQUIRE(r.status == 200);
    for (std::size_t at = r.body.find(prefix); at != std::string::npos; at = r.body.find(prefix, at + 1)) {
      std::size_t space = r.body.find(' ', r.body.find('}', at));
      total += std::strtoull(r.body.c_str() + space + 1, nullptr, 10);
    }
  }
  return total;
}

}  // namespace

TEST_CASE("conditional writes through a node without a copy see the current version",
          "[integration][conditional]") {
  setenv("RINGSTORE_SECRET", conditional_secret, 1);
  NodeGroup g(5, {});
  REQUIRE(wait_for([&] { return g.agrees(5, 0); }, 30) >= 0);

  const std::string key = "cond/key";
  NodeProcess& via = *g.nodes[non_replica(g, key)];
  const std::string url = via.url(key);

  // Create-only, twice: the second finds the first on the replicas.
  Response r = request("PUT", url, "first", {"If-None-Match: *"});
  REQUIRE(r.status == 201);
  const std::string first = r.header("etag");
  CHECK(first == quoted_md5("first"));
  r = request("PUT", url, "second", {"If-None-Match: *"});
  CHECK(r.status == 412);
  CHECK(r.body.find("\"error\":\"precondition_failed\"") != std::string::npos);
  CHECK(request("GET", g.nodes[0]->url(key)).body == "first");

  // A write made through another node is what the next condition is checked against.
  std::size_t other = (&via == g.nodes[0].get()) ? 1 : 0;
  r = request("PUT", g.nodes[other]->url(key), "by another node");
  REQUIRE(r.status == 201);
  const std::string second = r.header("etag");
  CHECK(request("PUT", url, "stale", {"If-Match: " + first}).status == 412);
  r = request("PUT", url, "third", {"If-Match: " + second});
  CHECK(r.status == 201);
  const std::string third = r.header("etag");
  for (auto& n : g.nodes) CHECK(request("GET", n->url(key)).body == "third");

  // Reads through the same node: 304 and 412 from the replicas' answers.
  CHECK(request("GET", url, "", {"If-None-Match: " + third}).status == 304);
  CHECK(request("GET", url, "", {"If-Match: " + second}).status == 412);

  // DELETE with the wrong ETag is refused; with the right one it goes, and then the key
  // can be created again.
  CHECK(request("DELETE", url, "", {"If-Match: " + second}).status == 412);
  CHECK(request("GET", g.nodes[other]->url(key)).status == 200);
  CHECK(request("DELETE", url, "", {"If-Match: " + third}).status == 204);
  CHECK(request("GET", g.nodes[other]->url(key)).status == 404);
  CHECK(request("PUT", url, "reborn", {"If-Match: *"}).status == 412);
  CHECK(request("PUT", url, "reborn", {"If-None-Match: *"}).status == 201);
  CHECK(request("GET", g.nodes[other]->url(key)).body == "reborn");
}

TEST_CASE("only a conditional write reads the replicas first", "[integration][conditional]") {
  setenv("RINGSTORE_SECRET", conditional_secret, 1);
  NodeGroup g(5, {});
  REQUIRE(wait_for([&] { return g.agrees(5, 0); }, 30) >= 0);
  const std::string key = "cond/cost";
  NodeProcess& via = *g.nodes[non_replica(g, key)];  // /_/locate asks with HEADs too
  std::this_thread::sleep_for(200ms);
  std::uint64_t before = heads_answered(g);
  REQUIRE(request("PUT", via.url(key), "plain").status == 201);
  REQUIRE(request("DELETE", via.url(key)).status == 204);
  std::this_thread::sleep_for(200ms);  // a replica counts its answer once it is sent
  CHECK(heads_answered(g) == before);
  REQUIRE(request("PUT", via.url(key), "checked", {"If-None-Match: *"}).status == 201);
  // R = 2 remote replicas asked (a third if one was late).
  CHECK(wait_for([&] { return heads_answered(g) >= before + 2; }, 5) >= 0);
}
