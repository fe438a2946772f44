// Anti-entropy between real nodes: replicas that diverged (a node down while writes went
// on, with hints unable to help; a node whose disks were wiped) converge without any
// client read; tombstones are purged only once every replica holds them; the internal
// endpoints refuse requests without the secret and with bad parameters.
// Convergence is checked with /_/locate, which asks each replica for its version and
// repairs nothing, and with the nodes' key counts.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <atomic>
#include <cstring>
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "integration/support.h"

using namespace itest;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const char* ae_secret = "anti-entropy-test-secret";

std::string auth_header() { return internal_auth_header(ae_secret); }

NodeOptions ae_options(const std::vector<std::string>& extra) {
  setenv("RINGSTORE_SECRET", ae_secret, 1);
  NodeOptions o;
  o.disks = 2;
  o.extra_args = extra;
  return o;
}

struct AeCluster : NodeGroup {
  AeCluster(int n, const std::vector<std::string>& extra) : NodeGroup(n, ae_options(extra)) {}
  // Every node of the group is a member, `alive` of them up.
  bool agrees(std::size_t alive) { return NodeGroup::agrees(alive, nodes.size() - alive); }
  std::uint64_t keys(std::size_t i) {
    json s = status(i);
    return s.is_object() ? s["keys"].get<std::uint64_t>() : 0;
  }
};

// PUTs keys [0, count) of `value_bytes` each from `threads` clients spread over the
// nodes; returns the versions acknowledged.
std::vector<std::string> put_keys(AeCluster& c, const std::string& prefix, int count,
                                  std::size_t value_bytes, int threads = 8) {
  std::vector<std::string> versions(count);
  std::atomic<int> next{0}, failed{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; t++) {
    ts.emplace_back([&, t] {
      Prng prng(static_cast<std::uint64_t>(t) + 1);
      for (int k = next++; k < count; k = next++) {
        NodeProcess* n = c.nodes[static_cast<std::size_t>(k) % c.nodes.size()].get();
        if (!n->running()) n = c.nodes[0].get();
        Response r = request("PUT", n->url(prefix + std::to_string(k)), prng.bytes(value_bytes));
        if (r.status != 201) {
          failed++;
          continue;
        }
        versions[static_cast<std::size_t>(k)] = r.header("x-ringstore-version");
      }
    });
  }
  for (auto& th : ts) th.join();
  REQUIRE(failed.load() == 0);
  return versions;
}

// Stops node i, empties its disks and rebuilds its index from them (which keeps the
// node id), as an operator does after replacing a node's disks; then starts it again.
void wipe_disks_and_restart(AeCluster& c, std::size_t i) {
  REQUIRE(c.nodes[i]->terminate() == 0);
  std::vector<std::string> args = {"rebuild", "--data", c.nodes[i]->data_dir()};
  for (const std::string& d : c.nodes[i]->disks()) {
    fs::remove_all(d);
    fs::create_directories(d);
    args.push_back("--disk");
    args.push_back(d);
  }
  RunResult r = run_binary(args);
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  c.nodes[i]->restart();
}

// Heals a wiped node of `nodes` nodes holding `count` keys; returns seconds.
double heal_wiped_node(int nodes, int count) {
  AeCluster c(nodes, {"--anti-entropy-interval-ms", "500"});
  REQUIRE(wait_for([&] { return c.agrees(static_cast<std::size_t>(nodes)); }, 15) >= 0);
  auto t_put = Clock::now();
  std::vector<std::string> versions = put_keys(c, "wipe-", count, 1024);
  std::printf("wrote %d keys of 1 KiB to %d nodes in %.2f s\n", count, nodes,
              std::chrono::duration<double>(Clock::now() - t_put).count());
  const std::uint64_t copies = 3ull * static_cast<std::uint64_t>(count);
  REQUIRE(wait_for([&] { return c.sum("keys") == copies; }, 60) >= 0);
  const std::size_t victim = static_cast<std::size_t>(nodes) - 1;
  std::uint64_t own = c.keys(victim);
  REQUIRE(own > 0);
  // Keys written by anti-entropy transfers: pushed or pulled, less those the receiver
  // answered it held already (both other replicas offer a wiped node every key).
  auto written = [&](bool with_victim) {
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < c.nodes.size(); i++) {
      if (i == victim && !with_victim) continue;
      nlohmann::json a = c.status(i)["anti_entropy"];
      n += a["keys_pushed"].get<std::uint64_t>() + a["keys_pulled"].get<std::uint64_t>() -
           a["offers_already_held"].get<std::uint64_t>();
    }
    return n;
  };
  const std::uint64_t written_before = written(false);  // the victim's own counts restart
  wipe_disks_and_restart(c, victim);
  auto t0 = Clock::now();
  REQUIRE(wait_for([&] { return c.status(victim).is_object(); }, 10) >= 0);
  CHECK(c.keys(victim) < own);  // it came back without its keys
  double healed = wait_for([&] { return c.keys(victim) == own && c.sum("keys") == copies; },
                           300, Millis(200));
  double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("a node with wiped disks (%d nodes, %d keys, %llu its own) held all its keys "
              "again %.2f s after its restart (pushed %llu, pulled %llu)\n",
              nodes, count, static_cast<unsigned long long>(own), seconds,
              static_cast<unsigned long long>(c.sum("keys_pushed", "anti_entropy")),
              static_cast<unsigned long long>(c.sum("keys_pulled", "anti_entropy")));
  REQUIRE(healed >= 0);
  CHECK(c.sum("read_repairs") == 0);  // no client read did it
  // Every offer of a key the victim held already was told apart from a write: once no
  // transfer is queued or in flight anywhere, the writes are the victim's keys, no more.
  CHECK(wait_for([&] { return c.sum("queued", "anti_entropy") + c.sum("in_flight", "anti_entropy") == 0; },
                 30) >= 0);
  std::uint64_t wrote = written(true) - written_before;
  std::printf("transfers that wrote a key: %llu for %llu keys (%llu offers already held, %llu failed)\n",
              static_cast<unsigned long long>(wrote), static_cast<unsigned long long>(own),
              static_cast<unsigned long long>(c.sum("offers_already_held", "anti_entropy")),
              static_cast<unsigned long long>(c.sum("transfer_errors", "anti_entropy")));
  CHECK(wrote <= own);
  // The others may still be reaching the restarted node at its old address for a moment.
  REQUIRE(wait_for([&] { return c.agrees(static_cast<std::size_t>(nodes)); }, 30) >= 0);
  REQUIRE(wait_for([&] { return c.replicas_hold("wipe-0", versions[0], false, 3); }, 30) >= 0);
  for (int k = 0; k < count; k += std::max(1, count / 100)) {
    std::string key = "wipe-" + std::to_string(k);
    INFO(key << " " << versions[static_cast<std::size_t>(k)] << " "
              << request("GET", c.nodes[0]->url("_/locate?key=" + key)).body);
    CHECK(c.replicas_hold(key, versions[static_cast<std::size_t>(k)], false, 3));
  }
  return seconds;
}

}  // namespace

TEST_CASE("replicas that diverged converge without a client read and stale copies are replaced",
          "[integration][anti-entropy]") {
  // Hints never go out here: only anti-entropy can bring the returning node up to date.
  AeCluster c(3, {"--hint-interval-ms", "600000", "--anti-entropy-interval-ms", "300"});
  REQUIRE(wait_for([&] { return c.agrees(3); }, 15) >= 0);
  std::vector<std::string> v1 = put_keys(c, "d-", 120, 100);
  REQUIRE(wait_for([&] { return c.sum("keys") == 360; }, 10) >= 0);

  REQUIRE(c.nodes[2]->terminate() == 0);
  // While node 3 is away: 40 new keys, 40 overwritten, 20 deleted.
  std::vector<std::string> v2(160);
  for (int k = 0; k < 160; k++) {
    if (k < 120 && k >= 60) continue;
    std::string key = "d-" + std::to_string(k);
    if (k < 20) {
      Response r = request("DELETE", c.nodes[k % 2]->url(key));
      REQUIRE(r.status == 204);
      v2[static_cast<std::size_t>(k)] = r.header("x-ringstore-version");
    } else {
      Response r = request("PUT", c.nodes[k % 2]->url(key), "new-" + std::to_string(k));
      REQUIRE(r.status == 201);
      v2[static_cast<std::size_t>(k)] = r.header("x-ringstore-version");
    }
  }
  c.nodes[2]->restart();
  auto t0 = Clock::now();
  auto converged = [&] {
    for (int k = 0; k < 160; k++) {
      std::string key = "d-" + std::to_string(k);
      bool changed = k < 60 || k >= 120;
      const std::string& v = changed ? v2[static_cast<std::size_t>(k)] : v1[static_cast<std::size_t>(k)];
      if (!c.replicas_hold(key, v, k < 20, 3)) return false;
    }
    return true;
  };
  double s = wait_for(converged, 60, Millis(250));
  std::printf("3 replicas converged on 100 changed keys %.2f s after the restart\n",
              std::chrono::duration<double>(Clock::now() - t0).count());
  REQUIRE(s >= 0);
  CHECK(c.sum("read_repairs") == 0);
  // A transfer is counted when its answer comes back, just after the copy is in place;
  // one whose answer timed out on a loaded machine is counted as an error, and the copy
  // it made is not sent again.
  // A handoff pass still under way since the cluster formed (a slow machine) sends what
  // an owner lacks too: that is background repair as well, and counted with it.
  auto handoff_sent = [&] {
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < c.nodes.size(); i++) {
      json st = c.status(i);
      if (st.is_object()) total += st["transfers"]["handoff"].value("keys_sent", 0ull);
    }
    return total;
  };
  auto background = [&] {
    return c.sum("keys_pushed", "anti_entropy") + c.sum("keys_pulled", "anti_entropy") + c.sum("transfer_errors", "anti_entropy") +
           handoff_sent();
  };
  CHECK(wait_for([&] { return background() >= 100; }, 10) >= 0);
  INFO("pushed " << c.sum("keys_pushed", "anti_entropy") << " pulled " << c.sum("keys_pulled", "anti_entropy") << " errors "
                 << c.sum("transfer_errors", "anti_entropy") << " handoff " << handoff_sent());
  CHECK(background() >= 100);
  CHECK(c.keys(2) == 140);  // 160 keys, 20 deleted
  // The overwritten copies on node 3 were replaced by the newest ones.
  for (int k = 20; k < 60; k += 7) {
    CHECK(request("GET", c.nodes[2]->url("d-" + std::to_string(k) + "?r=1")).body == "new-" + std::to_string(k));
  }
  json st = c.status(2)["anti_entropy"];
  CHECK(st["passes"].get<std::uint64_t>() > 0);
  // Of two nodes only one compares (which one depends on their ids): count them all.
  CHECK(c.sum("ranges_compared", "anti_entropy") > 0);
  Response m = request("GET", c.nodes[2]->url("_/metrics"));
  CHECK(m.body.find("ringstore_anti_entropy_keys_pulled_total") != std::string::npos);
}

TEST_CASE("a node whose disks were wiped holds all its keys again: 1000 keys on 3 nodes",
          "[integration][anti-entropy]") {
  heal_wiped_node(3, 1000);
}

TEST_CASE("a node whose disks were wiped holds all its keys again: 10000 keys on 4 nodes",
          "[integration][anti-entropy][slow]") {
  heal_wiped_node(4, 10000);
}

TEST_CASE("tombstones are purged once every replica holds them and never before",
          "[integration][anti-entropy]") {
  AeCluster c(3, {"--hint-interval-ms", "600000", "--anti-entropy-interval-ms", "300",
                  "--tombstone-grace-s", "1"});
  REQUIRE(wait_for([&] { return c.agrees(3); }, 15) >= 0);
  put_keys(c, "t-", 20, 50, 2);
  REQUIRE(wait_for([&] { return c.sum("keys") == 60; }, 10) >= 0);
  // Node 3 is down while keys 0..9 are deleted: it keeps their old values, so the others
  // must not purge their tombstones, or those values would come back.
  REQUIRE(c.nodes[2]->terminate() == 0);
  std::vector<std::string> tomb(10);
  for (int k = 0; k < 10; k++) {
    Response r = request("DELETE", c.nodes[k % 2]->url("t-" + std::to_string(k)));
    REQUIRE(r.status == 204);
    tomb[static_cast<std::size_t>(k)] = r.header("x-ringstore-version");
  }
  std::this_thread::sleep_for(Millis(3000));  // the grace passed, passes ran
  CHECK(c.sum("tombstones_purged", "anti_entropy") == 0);
  for (int k = 0; k < 10; k++) {
    Response r = request("GET", c.nodes[0]->url("_/locate?key=t-" + std::to_string(k)));
    json j = json::parse(r.body);
    int holding = 0;
    for (const auto& rep : j["replicas"]) holding += rep["version"] == tomb[static_cast<std::size_t>(k)];
    CHECK(holding == 2);
  }
  c.nodes[2]->restart();
  // Node 3 gets the tombstones (its old values lose), then all three purge them.
  double s = wait_for([&] {
    for (int k = 0; k < 10; k++) {
      if (!c.replicas_hold("t-" + std::to_string(k), nullptr, false, 3)) return false;
    }
    return true;
  }, 60, Millis(250));
  std::printf("10 tombstones purged from 3 replicas %.2f s after the third came back\n", s);
  REQUIRE(s >= 0);
  CHECK(c.sum("tombstones_purged", "anti_entropy") == 30);
  for (int k = 0; k < 20; k++) {
    for (std::size_t i = 0; i < 3; i++) {
      Response r = request("GET", c.nodes[i]->url("t-" + std::to_string(k) + "?r=3"));
      CHECK(r.status == (k < 10 ? 404 : 200));
    }
  }
  CHECK(c.sum("keys") == 30);
}

TEST_CASE("the anti-entropy endpoints demand the secret and check their parameters",
          "[integration][anti-entropy]") {
  AeCluster c(1, {"--anti-entropy-interval-ms", "200"});
  const std::string auth = auth_header();
  NodeProcess& n = *c.nodes[0];
  REQUIRE(request("PUT", n.url("k1"), "v").status == 201);
  json st = c.status(0);
  const std::string self = st["id"].get<std::string>();
  // Without the secret, or with a wrong one: 401.
  CHECK(request("GET", n.url("_/internal/ae/keys?from=0&to=18446744073709551615")).status == 401);
  CHECK(request("GET", n.url("_/internal/ae/summary?ring=0000000000000000&with=" + self), "",
                {"X-Ringstore-Auth: 00"}).status == 401);
  // With it: bad parameters are 400, other methods 405, unknown endpoints 404.
  for (const char* bad : {"_/internal/ae/keys", "_/internal/ae/keys?from=5&to=4",
                          "_/internal/ae/keys?from=x&to=9", "_/internal/ae/keys?from=0&to=18446744073709551616",
                          "_/internal/ae/summary?with=00", "_/internal/ae/summary?ring=zz",
                          "_/internal/ae/summary?ring=0000000000000000&with=nothex"}) {
    Response r = request("GET", n.url(bad), "", {auth});
    INFO(bad << " -> " << r.body);
    CHECK(r.status == 400);
    CHECK(json::parse(r.body, nullptr, false).contains("error"));
  }
  CHECK(request("POST", n.url("_/internal/ae/keys?from=0&to=1"), "", {auth}).status == 405);
  CHECK(request("GET", n.url("_/internal/ae/nothing"), "", {auth}).status == 404);
  // The key list of the whole ring holds the key; a summary on another ring is refused.
  Response keys = request("GET", n.url("_/internal/ae/keys?from=0&to=18446744073709551615"), "", {auth});
  REQUIRE(keys.status == 200);
  json j = json::parse(keys.body);
  REQUIRE(j["entries"].size() == 1);
  CHECK(j["entries"][0][0] == "6b31");  // "k1" in hex
  CHECK(j["next"].is_null());
  // Summaries answer 503 until they are built (at start and after the ring changes).
  REQUIRE(wait_for([&] {
            json ae = c.status(0)["anti_entropy"];
            return ae["arcs"].get<std::uint64_t>() > 0 && ae["rebuilding"] == false;
          }, 10) >= 0);
  Response other = request("GET", n.url("_/internal/ae/summary?ring=0000000000000000&with=" + self), "", {auth});
  INFO(other.body);
  CHECK(other.status == 409);
  std::string ring = json::parse(other.body)["ring"].get<std::string>();
  Response mine = request("GET", n.url("_/internal/ae/summary?ring=" + ring + "&with=" + self), "", {auth});
  REQUIRE(mine.status == 200);
  json sj = json::parse(mine.body);
  std::uint64_t total = 0;
  for (const auto& g : sj["groups"]) total += g[1].get<std::uint64_t>();
  CHECK(total == 1);
  CHECK(request("GET", n.url("_/internal/ae/summary?ring=" + ring + "&with=" + self + "&group=999999"), "",
                {auth}).status == 400);
  CHECK(request("GET", n.url("k1")).status == 200);  // the node is fine
}

TEST_CASE("a replica offered a version it already holds keeps its copy and makes no file",
          "[integration][anti-entropy]") {
  AeCluster c(1, {"--anti-entropy-interval-ms", "0"});
  NodeProcess& n = *c.nodes[0];
  const std::string auth = auth_header();
  // As repairs, hint deliveries and transfers send them: background copies.
  auto offer = [&](const std::string& hlc, const std::string& body, bool background = true) {
    std::vector<std::string> h = {auth, "X-Ringstore-Version: " + hlc + "-000000000000000000000000000000aa"};
    if (background) h.push_back("X-Ringstore-Background: 1");
    return request("PUT", n.url("_/internal/blob/dup"), body, h);
  };
  auto held = [&] { return c.status(0)["puts_already_held"].get<std::uint64_t>(); };
  Response first = offer("0000000000100000", "first");
  REQUIRE(first.status == 201);
  CHECK(first.body.find("\"applied\":true") != std::string::npos);
  CHECK(held() == 0);
  // The same version again (two replicas repairing one node), an older one, and a body
  // larger than any ignored one: each answered 201, not applied, its body drained.
  Response again = offer("0000000000100000", "first");
  CHECK(again.status == 201);
  CHECK(again.body.find("\"applied\":false") != std::string::npos);
  CHECK(offer("00000000000f0000", "older").status == 201);
  CHECK(offer("0000000000100000", std::string(200'000, 'x')).status == 201);
  CHECK(held() == 3);
  // A client's write (no background mark) skips the check, and the committer drops it.
  Response client = offer("0000000000100000", "client", /*background=*/false);
  CHECK(client.status == 201);
  CHECK(client.body.find("\"applied\":false") != std::string::npos);
  CHECK(held() == 3);
  Response got = request("GET", n.url("dup"));
  CHECK(got.status == 200);
  CHECK(got.body == "first");
  // A newer version is written as usual, and the connection is still in step.
  Response newer = offer("0000000000110000", "second");
  CHECK(newer.status == 201);
  CHECK(newer.body.find("\"applied\":true") != std::string::npos);
  CHECK(request("GET", n.url("dup")).body == "second");
  CHECK(held() == 3);
}

TEST_CASE("keys a node holds but no longer owns go to their owner and only then leave",
          "[integration][anti-entropy]") {
  // One copy per key: the first node owns everything until the second joins, then
  // about half of its keys belong to the newcomer.
  std::vector<std::string> one = {"--replicas", "1", "--read-quorum", "1", "--write-quorum", "1",
                                  "--anti-entropy-interval-ms", "300"};
  AeCluster c(1, one);
  std::vector<std::string> versions = put_keys(c, "h-", 200, 100, 4);
  REQUIRE(c.keys(0) == 200);
  c.add(ae_options(one));
  REQUIRE(wait_for([&] { return c.agrees(2); }, 15) >= 0);
  // Done when nothing moves any more: 200 keys in all, and the same a second later
  // (the joiner's transfer or anti-entropy's hand-off moves them, in batches).
  std::uint64_t last = 0;
  double s = wait_for([&] {
    std::uint64_t k0 = c.keys(0), k1 = c.keys(1);
    bool settled = k1 > 0 && k0 + k1 == 200;
    bool same = settled && k1 == last;
    last = settled ? k1 : 0;
    return same;
  }, 60, Millis(1000));
  std::printf("%llu of 200 keys handed to a new owner in %.2f s\n",
              static_cast<unsigned long long>(c.keys(1)), s);
  REQUIRE(s >= 0);
  CHECK(c.keys(1) > 50);
  CHECK(c.keys(1) < 150);
  for (int k = 0; k < 200; k += 5) {
    std::string key = "h-" + std::to_string(k);
    INFO(key);
    CHECK(c.replicas_hold(key, versions[static_cast<std::size_t>(k)], false, 1));
    CHECK(request("GET", c.nodes[static_cast<std::size_t>(k) % 2]->url(key)).status == 200);
  }
}
