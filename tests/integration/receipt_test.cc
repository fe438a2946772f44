// A write's answer says what happened to it: how many durable copies were made, on
// which nodes, and which of them are stand-ins holding a hint for a down owner.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "integration/support.h"

using namespace itest;
using json = nlohmann::json;

namespace {
const char* receipt_secret = "receipt-test-secret";

// The preference list of `key` as /_/locate names it: ids in order.
std::vector<std::string> owners_of(NodeProcess& via, const std::string& key) {
  json loc = json::parse(request("GET", via.url("_/locate?key=" + key)).body, nullptr, false);
  std::vector<std::string> ids;
  for (const auto& r : loc["preference_list"]) ids.push_back(r["id"].get<std::string>());
  return ids;
}
}  // namespace

TEST_CASE("a write's answer names its acknowledged copies and the stand-ins among them",
          "[integration][receipt]") {
  setenv("RINGSTORE_SECRET", receipt_secret, 1);
  NodeGroup g(5, NodeOptions{});
  REQUIRE(wait_for([&] { return g.agrees(5, 0); }, 30) >= 0);

  // The receipt is in the headers; the JSON body only for a client that asks for it, so
  // one that closes an answer unread (Go's net/http) keeps its keep-alive connection.
  Response plain = request("PUT", g.nodes[0]->url("receipt/plain"), "v");
  REQUIRE(plain.status == 201);
  CHECK(plain.body.empty());
  CHECK(plain.header("content-length") == "0");
  CHECK(plain.header("content-type").empty());
  CHECK(!plain.header("x-ringstore-acks").empty());
  CHECK(!plain.header("x-ringstore-replicas").empty());

  Response r = request("PUT", g.nodes[0]->url("receipt/a"), "v", {"Accept: application/json"});
  REQUIRE(r.status == 201);
  CHECK(r.header("content-type") == "application/json");
  std::string acks = r.header("x-ringstore-acks");
  INFO("X-Ringstore-Acks: " << acks << ", X-Ringstore-Replicas: " << r.header("x-ringstore-replicas"));
  CHECK((acks == "2/3" || acks == "3/3"));
  json body = json::parse(r.body);
  CHECK(body["n"] == 3);
  CHECK(body["acks"].get<int>() >= 2);
  REQUIRE(body["replicas"].size() == 3);
  std::set<std::string> named, owners;
  for (const auto& rep : body["replicas"]) {
    named.insert(rep["id"].get<std::string>());
    CHECK(!rep.contains("hint_for"));
    CHECK(r.header("x-ringstore-replicas").find(rep["id"].get<std::string>() + "@" +
                                                rep["addr"].get<std::string>()) != std::string::npos);
  }
  for (const auto& id : owners_of(*g.nodes[0], "receipt/a")) owners.insert(id);
  CHECK(named == owners);

  // A DELETE carries the same headers.
  Response d = request("DELETE", g.nodes[1]->url("receipt/a"));
  REQUIRE(d.status == 204);
  CHECK(!d.header("x-ringstore-acks").empty());

  // An owner down (and known to be): its copy goes to a stand-in that says for whom.
  json dead_status = g.status(4);
  const std::string dead_id = dead_status["id"].get<std::string>();
  g.nodes[4]->kill9();
  REQUIRE(wait_for([&] { return g.agrees(4, 1); }, 20) >= 0);
  int with_standin = 0;
  for (int k = 0; k < 40 && with_standin < 3; k++) {
    std::string key = "receipt/down/" + std::to_string(k);
    std::vector<std::string> own = owners_of(*g.nodes[0], key);
    bool dead_owns = std::find(own.begin(), own.end(), dead_id) != own.end();
    Response w = request("PUT", g.nodes[k % 4]->url(key), "v", {"Accept: text/html, application/json;q=0.9"});
    REQUIRE(w.status == 201);
    json b = json::parse(w.body);
    bool hint_named = false;
    for (const auto& rep : b["replicas"]) {
      CHECK(rep["id"] != dead_id);  // a dead owner is not asked
      if (rep.contains("hint_for")) {
        CHECK(rep["hint_for"] == dead_id);
        hint_named = true;
      }
    }
    CHECK(hint_named == dead_owns);
    if (dead_owns) {
      with_standin++;
      CHECK(w.header("x-ringstore-replicas").find(";hint-for=" + dead_id) != std::string::npos);
    }
  }
  CHECK(with_standin == 3);
}
