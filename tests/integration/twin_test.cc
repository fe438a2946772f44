// Two live processes under one node id (a data dir copied by mistake): the newer one
// stops with a message naming the other's address, the older one keeps serving, and the
// peers saw both addresses.
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "integration/support.h"

using namespace itest;
using json = nlohmann::json;

namespace {
const char* twin_secret = "twin-test-secret";
// Short enough for a test, long enough that a copy hears of the conflict inside it.
const char* const window_ms = "8000";

NodeOptions twin_options() {
  NodeOptions o;
  o.extra_args = {"--id-conflict-window-ms", window_ms};
  return o;
}

// Whether some running node other than `skip` lists a conflict for `id`.
bool peers_name_conflict(NodeGroup& g, std::size_t skip, const std::string& id) {
  for (std::size_t i = 0; i < g.nodes.size(); i++) {
    if (i == skip || !g.nodes[i]->running()) continue;
    json s = g.status(i);
    if (!s.is_object()) continue;
    for (const auto& m : s["id_conflicts"]["members"]) {
      if (m["id"] == id) return true;
    }
  }
  return false;
}
}  // namespace

TEST_CASE("a second process under a node's id stops, naming the other's address",
          "[integration][twins]") {
  setenv("RINGSTORE_SECRET", twin_secret, 1);
  NodeGroup g(3, twin_options());
  REQUIRE(wait_for([&] { return g.agrees(3, 0); }, 30) >= 0);
  NodeProcess& original = *g.nodes[1];
  const std::string id = g.status(1)["id"].get<std::string>();
  const std::string original_addr = "127.0.0.1:" + std::to_string(original.port());

  SECTION("copied while it ran: the original keeps its id under a higher generation") {
    // Past the window the original is the older: the copy, one generation up, is told.
    std::this_thread::sleep_for(Millis(std::stoi(window_ms) + 500));
    std::uint64_t before = g.status(1)["generation"].get<std::uint64_t>();
    NodeOptions o = twin_options();
    o.copy_from = original.root();
    o.extra_args.push_back("--seeds");
    o.extra_args.push_back("127.0.0.1:" + std::to_string(g.nodes[0]->port()));
    NodeProcess copy(o);
    auto t0 = Clock::now();
    // The peers see both addresses send while the two run.
    bool named = wait_for([&] { return peers_name_conflict(g, 1, id); }, 6, Millis(200)) >= 0;
    int rc = copy.wait_exit(30s);
    std::printf("the copy stopped %.2f s after its start (peers named the conflict: %s)\n",
                std::chrono::duration<double>(Clock::now() - t0).count(), named ? "yes" : "no");
    INFO(copy.log());
    REQUIRE(rc == 1);
    CHECK(copy.log().find("another live process at " + original_addr) != std::string::npos);
    CHECK(original.running());
    json s = g.status(1);
    REQUIRE(s.is_object());
    CHECK(s["generation"].get<std::uint64_t>() > before + 1);  // above the copy's
    CHECK(s["id_conflicts"]["claims_on_this_node"].get<std::uint64_t>() >= 1);
    CHECK(original.log().find("claimed this node's id") != std::string::npos);
  }

  SECTION("copied while it was stopped, both started: the later one stops") {
    original.terminate();
    // The copy is taken now, while the node is stopped: it starts later than the node's
    // own restart, under the same generation.
    char tmpl[] = "/tmp/ringstore-twin.XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    const std::string saved = tmpl;
    std::filesystem::copy(original.root(), saved, std::filesystem::copy_options::recursive);
    NodeOptions o = twin_options();
    o.copy_from = saved;
    o.extra_args.push_back("--seeds");
    o.extra_args.push_back("127.0.0.1:" + std::to_string(g.nodes[0]->port()));
    original.restart();
    const std::string restarted_addr = "127.0.0.1:" + std::to_string(original.port());
    REQUIRE(wait_for([&] { return g.agrees(3, 0); }, 30) >= 0);
    NodeProcess copy(o);
    auto t0 = Clock::now();
    int rc = copy.wait_exit(30s);
    std::printf("the copy stopped %.2f s after its start\n",
                std::chrono::duration<double>(Clock::now() - t0).count());
    INFO(copy.log());
    INFO(original.log());
    REQUIRE(rc == 1);
    CHECK(copy.log().find("another live process at " + restarted_addr) != std::string::npos);
    CHECK(original.running());
    std::filesystem::remove_all(saved);
  }

  // The original serves on, and the cluster agrees on three members again.
  REQUIRE(request("PUT", g.nodes[1]->url("twin/after"), "v").status == 201);
  CHECK(request("GET", g.nodes[0]->url("twin/after")).body == "v");
  CHECK(wait_for([&] { return g.agrees(3, 0); }, 30) >= 0);
}
