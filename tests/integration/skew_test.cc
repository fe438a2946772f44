// Clocks that disagree: five nodes at N=3 (more nodes than replicas, so a coordinator is
// often no replica of the key it writes), one of them 30 s behind and one 20 s ahead
// under libfaketime. A write acknowledged after another write of the same key was
// acknowledged must win over it, whatever the two coordinators' clocks say; versions
// too far ahead of a node's clock are refused there; a write that loses anyway says so.
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "integration/support.h"

using namespace itest;
using json = nlohmann::json;

namespace {

const char* skew_secret = "skew-test-secret";
constexpr std::size_t normal_a = 0, normal_b = 1, normal_c = 2, slow = 3, fast = 4;

// Nodes 0-2 keep the machine's clock, node 3 runs 30 s behind it, node 4 20 s ahead
// (50 s from the slow one: within the default 60 s version drift of every pair).
struct SkewedCluster {
  NodeGroup group{0, {}};
  SkewedCluster() {
    setenv("RINGSTORE_SECRET", skew_secret, 1);
    for (std::size_t i = 0; i < 5; i++) {
      NodeOptions o;
      if (i == slow) o.env = faketime_env("-30s");
      if (i == fast) o.env = faketime_env("+20s");
      group.add(o);
    }
  }
  NodeProcess& node(std::size_t i) { return *group.nodes[i]; }
};

std::string version_of(const Response& r) { return r.header("x-ringstore-version"); }

// "<16 hex hlc>-<32 hex node>" with the wall-clock ms of the machine plus `ahead_ms`.
std::string version_ahead(long long ahead_ms) {
  auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::system_clock::now().time_since_epoch()).count();
  char buf[64];
  std::snprintf(buf, sizeof buf, "%016llx-%032x", static_cast<unsigned long long>(now + ahead_ms) << 16, 7);
  return buf;
}

}  // namespace

TEST_CASE("a write acknowledged after another wins over it, clocks 30 s apart or not",
          "[integration][skew]") {
  SkewedCluster c;
  REQUIRE(wait_for([&] { return c.group.agrees(5, 0); }, 30) >= 0);

  // Each pair: the first write through one node, then the second through another, then a
  // read through a third. Behind → after: the slow node's versions start 30 s lower.
  struct Order {
    std::size_t first, second, reader;
    const char* what;
  };
  const Order orders[] = {{normal_a, slow, normal_b, "normal then 30 s behind"},
                          {fast, normal_a, normal_c, "20 s ahead then normal"},
                          {fast, normal_b, slow, "20 s ahead then normal, read by the slow one"},
                          {normal_c, slow, fast, "normal then 30 s behind, read by the fast one"}};
  int lost = 0, rewrites_seen = 0;
  for (const Order& o : orders) {
    for (int k = 0; k < 15; k++) {
      std::string key = std::string("skew/") + std::to_string(o.first) + std::to_string(o.second) + "/" +
                        std::to_string(k);
      Response a = request("PUT", c.node(o.first).url(key), "first");
      REQUIRE(a.status == 201);
      Response b = request("PUT", c.node(o.second).url(key), "second");
      REQUIRE(b.status == 201);
      CHECK(b.header("x-ringstore-superseded-by").empty());
      if (version_of(b) > version_of(a)) rewrites_seen++;
      Response g = request("GET", c.node(o.reader).url(key));
      REQUIRE(g.status == 200);
      if (g.body != "second") {
        lost++;
        UNSCOPED_INFO(o.what << ": " << key << " read back \"" << g.body << "\" (first " << version_of(a)
                              << ", second " << version_of(b) << ")");
      }
    }
  }
  CHECK(lost == 0);
  CHECK(rewrites_seen == 60);  // every second write's version is above the first's

  // DELETE through the slow node after a PUT through the fast one: gone.
  for (int k = 0; k < 10; k++) {
    std::string key = "skew/delete/" + std::to_string(k);
    REQUIRE(request("PUT", c.node(fast).url(key), "doomed").status == 201);
    Response d = request("DELETE", c.node(slow).url(key));
    REQUIRE(d.status == 204);
    CHECK(request("GET", c.node(normal_a).url(key)).status == 404);
    CHECK(request("GET", c.node(fast).url(key)).status == 404);
  }
  json slow_status = c.group.status(slow);
  REQUIRE(slow_status.is_object());
  std::printf("the slow node rewrote %llu writes above a newer version\n",
              static_cast<unsigned long long>(slow_status["writes_rewritten"].get<std::uint64_t>()));
  // Once a coordinator has written above a newer version its clock is past it, and a
  // replica's clock moves past every version it stores: after the first rewrites the
  // slow node's versions are mostly high enough by themselves.
  CHECK(slow_status["writes_rewritten"].get<std::uint64_t>() >= 1);

  // Each skewed node hears of it from its peers' Date headers; the others are fine. The
  // offset is the median over the peers sampled so far: with two of them (the other
  // skewed node and a normal one) it is their mean, -35 s for the fast node. From three
  // on, the one other skewed peer is never the median.
  auto sampled = [](const json& s) { return s["clock"]["peers_sampled"].get<long long>(); };
  REQUIRE(wait_for([&] {
            json s = c.group.status(slow), f = c.group.status(fast), n = c.group.status(normal_a);
            return s.is_object() && f.is_object() && n.is_object() && s["clock"]["far_off"] == true &&
                   f["clock"]["far_off"] == true && n["clock"]["far_off"] == false && sampled(s) >= 3 &&
                   sampled(f) >= 3;
          }, 20) >= 0);
  json sc = c.group.status(slow)["clock"];
  json fc = c.group.status(fast)["clock"];
  std::printf("clock offsets from peers: slow %lld ms, fast %lld ms\n",
              sc["offset_from_peers_ms"].get<long long>(), fc["offset_from_peers_ms"].get<long long>());
  CHECK(std::llabs(sc["offset_from_peers_ms"].get<long long>() - 30'000) < 2'500);
  CHECK(std::llabs(fc["offset_from_peers_ms"].get<long long>() + 20'000) < 2'500);
  CHECK(c.node(slow).log().find("this node's clock is about") != std::string::npos);
}

TEST_CASE("versions too far ahead are refused on every node, and a write that loses says so",
          "[integration][skew]") {
  SkewedCluster c;
  REQUIRE(wait_for([&] { return c.group.agrees(5, 0); }, 30) >= 0);
  const std::string auth = internal_auth_header(skew_secret);

  // An hour ahead, and the top of the range (it wrapped every clock it reached before).
  for (const std::string& v : {version_ahead(3'600'000), std::string("ffffffffffffffff-") + std::string(32, '0')}) {
    Response r = request("PUT", c.node(normal_a).url("_/internal/blob/far"), "x",
                         {auth, "X-Ringstore-Version: " + v});
    CHECK(r.status == 400);
    CHECK(r.body.find("version_too_far_ahead") != std::string::npos);
  }
  CHECK(c.group.status(normal_a)["clock"]["versions_refused"].get<std::uint64_t>() == 2);
  // The clock did not move: a client's write still gets a version of now.
  Response ok = request("PUT", c.node(normal_a).url("after-refusal"), "v");
  REQUIRE(ok.status == 201);
  CHECK(version_of(ok) < version_ahead(60'000));
  CHECK(request("GET", c.node(normal_b).url("after-refusal")).body == "v");

  // 55 s ahead is within the drift of the normal and fast nodes, not of the slow one (85 s ahead
  // of its clock): written straight to the key's replicas, it beats the slow node's
  // write, which cannot take a version that far ahead and answers that it lost.
  const std::string key = "superseded";
  json loc = json::parse(request("GET", c.node(normal_a).url("_/locate?key=" + key)).body);
  const std::string ahead = version_ahead(55'000);
  int placed = 0;
  for (const auto& rep : loc["preference_list"]) {
    Response r = request("PUT", "http://" + rep["addr"].get<std::string>() + "/_/internal/blob/" + key,
                         "from-the-future", {auth, "X-Ringstore-Version: " + ahead});
    if (r.status == 201) placed++;
  }
  REQUIRE(placed >= 2);  // the slow node refuses it when it is a replica
  Response lost = request("PUT", c.node(slow).url(key), "from-the-past", {"Accept: application/json"});
  REQUIRE(lost.status == 201);
  CHECK(lost.header("x-ringstore-superseded-by") == ahead);
  CHECK(json::parse(lost.body)["superseded_by"] == ahead);
  CHECK(request("GET", c.node(normal_b).url(key)).body == "from-the-future");
  // A normal node can write above it (55 s ahead is within its drift): it wins.
  Response won = request("PUT", c.node(normal_c).url(key), "now");
  REQUIRE(won.status == 201);
  CHECK(won.header("x-ringstore-superseded-by").empty());
  CHECK(version_of(won) > ahead);
  // Every replica asked: the slow one refused the version and a stand-in holds it for it.
  CHECK(request("GET", c.node(normal_a).url(key + "?r=3")).body == "now");
}
