// A restarted node must not serve on a partial ring: until gossip has described every
// member it remembers, its preference lists, N and W would be computed on too few
// members (a ring of one right after the start: writes acknowledged at W=1 on a node
// that may not own the key). The chaos test found that; this pins it down.
#include <catch2/catch.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "integration/support.h"

using namespace itest;
using json = nlohmann::json;

namespace {

std::size_t alive_members(NodeProcess& n) {
  Response r = request("GET", n.url("_/status"), "", {}, 3000);
  if (r.status != 200) return 0;
  json s = json::parse(r.body, nullptr, false);
  if (!s.is_object()) return 0;
  std::size_t alive = 0;
  for (const auto& m : s["members"]) alive += m["alive"].get<bool>();
  return alive;
}

}  // namespace

TEST_CASE("a restarted node answers 503 until its ring holds the members it remembers",
          "[integration][cluster]") {
  setenv("RINGSTORE_SECRET", "restart-test-secret", 1);
  std::vector<std::unique_ptr<NodeProcess>> nodes;
  for (int i = 0; i < 3; i++) {
    NodeOptions o;
    if (i > 0) o.extra_args = {"--seeds", "127.0.0.1:" + std::to_string(nodes[0]->port())};
    nodes.push_back(std::make_unique<NodeProcess>(o));
  }
  auto until = Clock::now() + 10s;
  while (Clock::now() < until) {
    bool all = true;
    for (auto& n : nodes) all = all && alive_members(*n) == 3;
    if (all) break;
    std::this_thread::sleep_for(100ms);
  }
  for (auto& n : nodes) REQUIRE(alive_members(*n) == 3);
  REQUIRE(request("PUT", nodes[0]->url("before"), "v").status == 201);
  std::this_thread::sleep_for(500ms);  // the member list reaches SQLite

  // Node 0 comes back alone: it remembers two members and hears from neither, so its
  // ring is itself only. Before the fix it acknowledged this PUT with one copy.
  nodes[1]->kill9();
  nodes[2]->kill9();
  nodes[0]->kill9();
  nodes[0]->restart();
  Response put = request("PUT", nodes[0]->url("after"), "v", {}, 10'000);
  INFO(put.body);
  CHECK(put.status == 503);
  CHECK(put.body.find("ring_incomplete") != std::string::npos);
  CHECK(put.seconds < 1);
  Response get = request("GET", nodes[0]->url("before?r=1"), "", {}, 10'000);
  CHECK(get.status == 503);
  // /_/status still answers: an operator can see why.
  CHECK(request("GET", nodes[0]->url("_/status")).status == 200);
}
