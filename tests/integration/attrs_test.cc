// Stored headers, expiry and UNLINK across a five-node cluster at N=3: read back through
// a coordinator that holds no copy, and carried by hinted handoff to a replica that was
// down when they were written.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <set>

#include "support.h"

using namespace itest;
using json = nlohmann::json;

namespace {

struct Cluster : NodeGroup {
  Cluster() : NodeGroup(5, NodeOptions{}) {}
  // Index of the node listening on "127.0.0.1:PORT", or -1.
  int index_of(const std::string& addr) {
    for (std::size_t i = 0; i < nodes.size(); i++) {
      if (nodes[i]->running() && addr == "127.0.0.1:" + std::to_string(nodes[i]->port())) {
        return static_cast<int>(i);
      }
    }
    return -1;
  }
  // The running nodes in `key`'s preference list, as asked of node `via`.
  std::set<int> owners(const std::string& key, std::size_t via = 0) {
    Response r = request("GET", nodes[via]->url("_/locate?key=" + url_encode(key, false)));
    std::set<int> out;
    json j = json::parse(r.body, nullptr, false);
    if (!j.is_object()) return out;
    for (const auto& p : j["preference_list"]) out.insert(index_of(p["addr"].get<std::string>()));
    return out;
  }
  int non_owner(const std::string& key) {
    std::set<int> o = owners(key);
    for (std::size_t i = 0; i < nodes.size(); i++) {
      if (!o.count(static_cast<int>(i))) return static_cast<int>(i);
    }
    return -1;
  }
};

const std::vector<std::string> stored = {"X-Ringstore-Meta-Color: blue", "Cache-Control: max-age=30",
                                         "Content-Disposition: inline"};

void check_stored(const Response& r, const std::string& expires_ms) {
  CHECK(r.status == 200);
  CHECK(r.header("x-ringstore-meta-color") == "blue");
  CHECK(r.header("cache-control") == "max-age=30");
  CHECK(r.header("content-disposition") == "inline");
  CHECK(r.header("x-ringstore-expires-ms") == expires_ms);
  CHECK(!r.header("x-ringstore-expires").empty());
}

}  // namespace

TEST_CASE("stored headers and expiry travel to every replica, through handoff too",
          "[integration][metadata]") {
  Cluster g;
  REQUIRE(wait_for([&] { return g.agrees(5, 0); }, 30) >= 0);

  // Written and read through a node that holds no copy: the replicas' answers carry it.
  const std::string key = "attrs/one";
  int coord = g.non_owner(key);
  REQUIRE(coord >= 0);
  std::vector<std::string> h = stored;
  h.push_back("X-Ringstore-TTL: 600");
  REQUIRE(request("PUT", g.nodes[coord]->url(key), "value one", h).status == 201);
  Response got = request("GET", g.nodes[coord]->url(key));
  CHECK(got.body == "value one");
  const std::string expires = got.header("x-ringstore-expires-ms");
  REQUIRE(!expires.empty());
  check_stored(got, expires);
  check_stored(request("HEAD", g.nodes[coord]->url(key)), expires);
  // Every owner holds the same block and expiry (read from its own copy alone).
  for (int o : g.owners(key)) {
    INFO("owner " << o);
    check_stored(request("GET", g.nodes[o]->url(key + "?r=1")), expires);
  }

  // A replica down during the write gets it from the stand-in's hint, headers included.
  const std::string key2 = "attrs/two";
  std::set<int> owners2 = g.owners(key2);
  int down = *owners2.begin();
  int via = g.non_owner(key2);
  REQUIRE(via >= 0);
  g.nodes[down]->kill9();
  REQUIRE(wait_for([&] { return g.agrees(4, 1); }, 30) >= 0);
  REQUIRE(request("PUT", g.nodes[via]->url(key2), "value two", h).status == 201);
  const std::string expires2 = request("HEAD", g.nodes[via]->url(key2)).header("x-ringstore-expires-ms");
  REQUIRE(!expires2.empty());
  g.nodes[down]->restart();
  REQUIRE(wait_for([&] { return g.agrees(5, 0) && g.sum("hints") == 0; }, 45) >= 0);
  Response back = request("GET", g.nodes[down]->url(key2 + "?r=1"));
  CHECK(back.body == "value two");
  check_stored(back, expires2);
}

TEST_CASE("an expired value is gone cluster-wide; UNLINK lists until DELETE", "[integration][metadata]") {
  Cluster g;
  REQUIRE(wait_for([&] { return g.agrees(5, 0); }, 30) >= 0);
  const std::string key = "ttl/short";
  int coord = g.non_owner(key);
  REQUIRE(coord >= 0);
  REQUIRE(request("PUT", g.nodes[coord]->url(key), "brief", {"X-Ringstore-TTL: 1"}).status == 201);
  REQUIRE(request("PUT", g.nodes[coord]->url("ttl/long"), "stays").status == 201);
  CHECK(request("GET", g.nodes[coord]->url(key)).status == 200);
  CHECK(json::parse(request("GET", g.nodes[0]->url("ttl/?list")).body)["keys"].size() == 2);
  REQUIRE(wait_for([&] { return request("GET", g.nodes[coord]->url(key)).status == 404; }, 5) >= 0);
  for (std::size_t i = 0; i < g.nodes.size(); i++) {
    CHECK(request("GET", g.nodes[i]->url(key)).status == 404);
    CHECK(request("HEAD", g.nodes[i]->url(key)).status == 404);
  }
  CHECK(json::parse(request("GET", g.nodes[1]->url("ttl/?list")).body)["keys"] == json::array({"ttl/long"}));

  REQUIRE(request("PUT", g.nodes[0]->url("un/a"), "a").status == 201);
  REQUIRE(request("PUT", g.nodes[0]->url("un/b"), "b").status == 201);
  CHECK(request("UNLINK", g.nodes[2]->url("un/a")).status == 204);
  CHECK(request("GET", g.nodes[3]->url("un/a")).status == 404);
  CHECK(json::parse(request("GET", g.nodes[4]->url("un/?list")).body)["keys"] == json::array({"un/b"}));
  CHECK(json::parse(request("GET", g.nodes[1]->url("un/?unlinked")).body)["keys"] == json::array({"un/a"}));
  CHECK(request("DELETE", g.nodes[3]->url("un/a")).status == 204);
  CHECK(json::parse(request("GET", g.nodes[4]->url("un/?unlinked")).body)["keys"] == json::array());
}
