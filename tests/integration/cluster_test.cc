// Multi-process cluster tests: real nodes on 127.0.0.1 gossiping over UDP, talking over
// HTTP, killed with SIGKILL. Every wait has a deadline; figures are printed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <catch2/catch.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "integration/support.h"

using namespace itest;
using json = nlohmann::json;

namespace {

const char* secret_arg = "cluster-test-secret";

struct Cluster {
  std::vector<std::unique_ptr<NodeProcess>> nodes;

  explicit Cluster(int n, std::vector<std::string> extra = {}) {
    for (int i = 0; i < n; i++) {
      NodeOptions o;
      o.disks = 2;
      o.extra_args = extra;
      if (std::find(extra.begin(), extra.end(), "--hint-interval-ms") == extra.end()) {
        o.extra_args.push_back("--hint-interval-ms");
        o.extra_args.push_back("200");
      }
      if (i > 0) {
        o.extra_args.push_back("--seeds");
        o.extra_args.push_back("127.0.0.1:" + std::to_string(nodes[0]->port()));
      }
      nodes.push_back(std::make_unique<NodeProcess>(o));
    }
  }
  json status(int i) {
    Response r = request("GET", nodes[i]->url("_/status"), "", {}, 3000);
    if (r.status != 200) return json();
    return json::parse(r.body, nullptr, false);
  }
  // Every running node sees `alive` members alive (and, with `joined`, done joining) and
  // `dead` members down.
  bool agrees(std::size_t alive, std::size_t dead, bool joined = true) {
    for (std::size_t i = 0; i < nodes.size(); i++) {
      if (!nodes[i]->running()) continue;
      json s = status(static_cast<int>(i));
      if (!s.is_object()) return false;
      std::size_t a = 0, d = 0;
      for (const auto& m : s["members"]) {
        if (joined && m["alive"].get<bool>() && m.value("state", "normal") != "normal") return false;
        (m["alive"].get<bool>() ? a : d)++;
      }
      if (a != alive || d != dead) return false;
    }
    return true;
  }
  std::uint64_t sum(const char* field) {
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < nodes.size(); i++) {
      if (!nodes[i]->running()) continue;
      json s = status(static_cast<int>(i));
      if (s.is_object()) total += s[field].get<std::uint64_t>();
    }
    return total;
  }
};

std::vector<std::string> secure() { return {}; }

// Node 3 misses 20 writes (PREFIX0..19, values v0..v19) while it is killed, then returns.
// A read leaves a stale replica to the version's own write for as long as that write may
// still reach it (the replica timeout): with `outlive_writes` node 3 stays down for 600 ms
// more, past a replica timeout of `short_replica_timeout_ms`, and well before the others
// would mark it down (its return would then set off hint and handoff deliveries).
const char* const short_replica_timeout_ms = "500";
void miss_writes_on_node3(Cluster& c, const std::string& prefix, bool outlive_writes = true) {
  REQUIRE(wait_for([&] { return c.agrees(3, 0); }, 10) >= 0);
  c.nodes[2]->kill9();
  for (int k = 0; k < 20; k++) {
    REQUIRE(request("PUT", c.nodes[0]->url(prefix + std::to_string(k)), "v" + std::to_string(k)).status == 201);
  }
  if (outlive_writes) std::this_thread::sleep_for(Millis(600));
  c.nodes[2]->restart();
  REQUIRE(wait_for([&] { return c.agrees(3, 0); }, 15) >= 0);
}

// A GET with r=3 (every replica asked) through node VIA. Right after a restart a node may
// still be reaching the restarted one at its old address: a 503 is tried again.
Response read_every_replica(Cluster& c, std::size_t via, const std::string& key) {
  Response r;
  for (int attempt = 0; attempt < 20; attempt++) {
    r = request("GET", c.nodes[via]->url(key + "?r=3"));
    if (r.status != 503) break;
    std::this_thread::sleep_for(Millis(250));
  }
  return r;
}

}  // namespace

TEST_CASE("five nodes converge, place every key on exactly three, survive a kill -9",
          "[integration][cluster]") {
  setenv("RINGSTORE_SECRET", secret_arg, 1);
  Cluster c(5, secure());
  double converge_s = wait_for([&] { return c.agrees(5, 0, /*joined=*/false); }, 10);
  std::printf("membership of 5 nodes converged in %.2f s\n", converge_s);
  REQUIRE(converge_s >= 0);
  REQUIRE(converge_s < 5);
  double joined_s = wait_for([&] { return c.agrees(5, 0); }, 20);
  std::printf("all 5 nodes done joining after %.2f s\n", joined_s);
  REQUIRE(joined_s >= 0);

  std::mt19937 rng(42);
  for (int k = 0; k < 300; k++) {
    auto& n = c.nodes[rng() % 5];
    Response r = request("PUT", n->url("key-" + std::to_string(k)), "value-" + std::to_string(k));
    REQUIRE(r.status == 201);
  }
  // W=2 acknowledges before the third copy lands: give it a moment.
  CHECK(wait_for([&] { return c.sum("keys") == 900; }, 5) >= 0);
  for (int k = 0; k < 300; k += 37) {
    for (auto& n : c.nodes) {
      Response r = request("GET", n->url("key-" + std::to_string(k)));
      REQUIRE(r.status == 200);
      REQUIRE(r.body == "value-" + std::to_string(k));
    }
    Response loc = request("GET", c.nodes[0]->url("_/locate?key=key-" + std::to_string(k)));
    json j = json::parse(loc.body);
    REQUIRE(j["replicas"].size() == 3);
    for (const auto& rep : j["replicas"]) CHECK(rep["version"].is_string());
  }

  // kill -9 one node: marked down everywhere, writes at W=2 go on.
  c.nodes[4]->kill9();
  double down_s = wait_for([&] { return c.agrees(4, 1); }, 15);
  std::printf("a killed node was marked down everywhere in %.2f s\n", down_s);
  REQUIRE(down_s >= 0);
  CHECK(down_s < 10);
  for (int k = 300; k < 400; k++) {
    auto& n = c.nodes[rng() % 4];
    Response r = request("PUT", n->url("key-" + std::to_string(k)), "value-" + std::to_string(k));
    REQUIRE(r.status == 201);
  }
  // It comes back and gets what it missed; stand-in copies go away.
  c.nodes[4]->restart();
  double heal_s = wait_for([&] { return c.agrees(5, 0) && c.sum("keys") == 1200 && c.sum("hints") == 0; }, 45);
  std::printf("the returning node held its missed writes after %.2f s (keys %llu, hints %llu)\n",
              heal_s, static_cast<unsigned long long>(c.sum("keys")),
              static_cast<unsigned long long>(c.sum("hints")));
  REQUIRE(heal_s >= 0);
  CHECK(heal_s < 30);
  for (int k = 0; k < 400; k += 13) {
    Response r = request("GET", c.nodes[4]->url("key-" + std::to_string(k)) + "?r=1");
    CHECK(r.status == 200);
  }
}

TEST_CASE("the internal API demands the cluster secret", "[integration][cluster]") {
  setenv("RINGSTORE_SECRET", secret_arg, 1);
  Cluster c(1, secure());
  Response r = request("GET", c.nodes[0]->url("_/internal/blob/x"));
  CHECK(r.status == 401);
  r = request("PUT", c.nodes[0]->url("_/internal/blob/x"), "v",
              {"X-Ringstore-Auth: wrong", "X-Ringstore-Version: 0000000000000001-00000000000000000000000000000000"});
  CHECK(r.status == 401);
  CHECK(request("GET", c.nodes[0]->url("x")).status == 404);  // the node is fine
}

TEST_CASE("random datagrams change nothing", "[integration][cluster]") {
  setenv("RINGSTORE_SECRET", secret_arg, 1);
  Cluster c(3, secure());
  REQUIRE(wait_for([&] { return c.agrees(3, 0); }, 10) >= 0);
  REQUIRE(request("PUT", c.nodes[0]->url("stable"), "v").status == 201);
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  std::mt19937 rng(7);
  for (auto& n : c.nodes) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<std::uint16_t>(n->port()));
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < 2000; i++) {
      std::string junk(rng() % 1600, '\0');
      for (char& ch : junk) ch = static_cast<char>(rng());
      if (i % 3 == 0 && junk.size() > 4) junk[0] = 1;  // a plausible version byte
      sendto(fd, junk.data(), junk.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
      // Paced, so that the kernel's receive buffer does not drop them before the node can.
      if (i % 50 == 49) std::this_thread::sleep_for(Millis(5));
    }
  }
  close(fd);
  std::this_thread::sleep_for(Millis(1500));
  CHECK(c.agrees(3, 0));
  json s = c.status(0);
  std::uint64_t dropped = s["gossip"]["dropped_bad_mac"].get<std::uint64_t>() +
                          s["gossip"]["dropped_malformed"].get<std::uint64_t>() +
                          s["gossip"]["dropped_oversize"].get<std::uint64_t>() +
                          s["gossip"]["dropped_bad_version"].get<std::uint64_t>();
  std::printf("node 1 dropped and counted %llu bad datagrams\n", static_cast<unsigned long long>(dropped));
  CHECK(dropped >= 1900);
  for (auto& n : c.nodes) CHECK(request("GET", n->url("stable")).body == "v");
}

TEST_CASE("fewer than W reachable replicas answer 503 promptly", "[integration][cluster]") {
  setenv("RINGSTORE_SECRET", secret_arg, 1);
  Cluster c(3, secure());
  REQUIRE(wait_for([&] { return c.agrees(3, 0); }, 10) >= 0);
  c.nodes[1]->kill9();
  c.nodes[2]->kill9();
  Response r = request("PUT", c.nodes[0]->url("lonely"), "v", {}, 10'000);
  CHECK(r.status == 503);
  CHECK(r.seconds < 5);
  CHECK(r.body.find("not_enough_replicas") != std::string::npos);
  r = request("PUT", c.nodes[0]->url("lonely?w=1"), "v", {}, 10'000);
  CHECK(r.status == 201);
  r = request("GET", c.nodes[0]->url("lonely"), "", {}, 10'000);
  CHECK(r.status == 503);
  CHECK(request("GET", c.nodes[0]->url("lonely?r=1")).body == "v");
}

TEST_CASE("a restarted node rejoins through the members it remembers when its seed is down",
          "[integration][cluster]") {
  setenv("RINGSTORE_SECRET", secret_arg, 1);
  Cluster c(3, secure());
  REQUIRE(wait_for([&] { return c.agrees(3, 0); }, 10) >= 0);
  std::this_thread::sleep_for(Millis(500));  // the member list reaches SQLite
  c.nodes[2]->terminate();
  c.nodes[0]->kill9();  // node 2's only seed
  c.nodes[2]->restart();
  // Node 2 knows node 1 from its last life: they find each other without the seed.
  double s = wait_for([&] {
    json st = c.status(2);
    if (!st.is_object()) return false;
    std::size_t alive = 0;
    for (const auto& m : st["members"]) alive += m["alive"].get<bool>();
    return alive == 2;
  }, 15);
  std::printf("rejoined without its seed in %.2f s\n", s);
  CHECK(s >= 0);
  CHECK(request("PUT", c.nodes[2]->url("after-restart"), "v").status == 201);
  CHECK(request("GET", c.nodes[1]->url("after-restart")).body == "v");
}

TEST_CASE("ringstore status prints the members like nodetool status", "[integration][cluster]") {
  setenv("RINGSTORE_SECRET", secret_arg, 1);
  Cluster c(3, secure());
  REQUIRE(wait_for([&] { return c.agrees(3, 0); }, 10) >= 0);
  RunResult r = run_binary({"status", "--node", "127.0.0.1:" + std::to_string(c.nodes[1]->port())});
  REQUIRE(r.exit_code == 0);
  std::size_t up = 0;
  for (std::size_t p = r.out.find("\nUN  "); p != std::string::npos; p = r.out.find("\nUN  ", p + 1)) up++;
  CHECK(up == 3);
  for (auto& n : c.nodes) CHECK(r.out.find("127.0.0.1:" + std::to_string(n->port())) != std::string::npos);
  c.nodes[2]->kill9();
  REQUIRE(wait_for([&] { return c.agrees(2, 1); }, 15) >= 0);
  r = run_binary({"status", "--node", "127.0.0.1:" + std::to_string(c.nodes[0]->port())});
  CHECK(r.out.find("\nDN  127.0.0.1:" + std::to_string(c.nodes[2]->port())) != std::string::npos);
  r = run_binary({"status", "--node", "127.0.0.1:1"});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("cannot connect") != std::string::npos);
}

TEST_CASE("a read repairs the replicas it finds stale", "[integration][cluster]") {
  setenv("RINGSTORE_SECRET", secret_arg, 1);
  // Hints never go out here and anti-entropy is off, so only read repair can bring the
  // returning node up to date.
  Cluster c(3, {"--hint-interval-ms", "600000", "--anti-entropy-interval-ms", "0",
                "--replica-timeout-ms", short_replica_timeout_ms});
  miss_writes_on_node3(c, "rr-");
  json before = c.status(2);
  CHECK(before["keys"].get<std::uint64_t>() == 0);
  // r=3 asks every replica, so every read sees node 3 stale. A third of them go through
  // node 3 itself, which serves the copy it fetches and repairs its own with it.
  for (int k = 0; k < 20; k++) {
    Response r = read_every_replica(c, k % 3, "rr-" + std::to_string(k));
    INFO(r.body);
    REQUIRE(r.status == 200);
    REQUIRE(r.body == "v" + std::to_string(k));
    CHECK(r.header("etag") == quoted_md5(r.body));
  }
  double s = wait_for([&] { return c.status(2)["keys"].get<std::uint64_t>() == 20; }, 10);
  std::printf("read repair brought 20 keys to the stale replica in %.2f s\n", s);
  CHECK(s >= 0);
  // Most by read repair; the node's return may hand it a few first (seen under ASan).
  CHECK(c.sum("read_repairs") >= 10);
  // And it serves them itself now.
  CHECK(request("GET", c.nodes[2]->url("rr-7?r=1")).body == "v7");
}

TEST_CASE("a read leaves a stale replica to a write still within its replica timeout",
          "[integration][cluster]") {
  setenv("RINGSTORE_SECRET", secret_arg, 1);
  // A long replica timeout: the writes node 3 missed stay young for the whole test.
  Cluster c(3, {"--hint-interval-ms", "600000", "--anti-entropy-interval-ms", "0",
                "--replica-timeout-ms", "60000"});
  miss_writes_on_node3(c, "ry-", /*outlive_writes=*/false);
  for (int k = 0; k < 20; k++) {  // through node 3 too, which serves a copy it fetches
    Response r = read_every_replica(c, k % 3, "ry-" + std::to_string(k));
    REQUIRE(r.status == 200);
    REQUIRE(r.body == "v" + std::to_string(k));  // the answer is the newest all the same
    CHECK(r.header("etag") == quoted_md5(r.body));
  }
  CHECK(c.sum("read_repairs") == 0);
  CHECK(c.status(2)["keys"] == 0);
  CHECK(c.sum("read_repairs_skipped") >= 20);
}

TEST_CASE("read repairs over the node's budget are left to anti-entropy", "[integration][cluster]") {
  setenv("RINGSTORE_SECRET", secret_arg, 1);
  Cluster c(3, {"--hint-interval-ms", "600000", "--anti-entropy-interval-ms", "0",
                "--read-repairs-per-sec", "1", "--replica-timeout-ms", short_replica_timeout_ms});
  miss_writes_on_node3(c, "rb-");
  auto started = std::chrono::steady_clock::now();
  for (int k = 0; k < 20; k++) {  // through node 1 only: one budget
    Response r = read_every_replica(c, 0, "rb-" + std::to_string(k));
    REQUIRE(r.status == 200);
    REQUIRE(r.body == "v" + std::to_string(k));  // a deferred repair never costs the answer
  }
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::uint64_t repairs = c.sum("read_repairs"), deferred = c.sum("read_repairs_deferred");
  std::printf("20 stale reads in %.2f s at 1 repair/s: %llu repaired, %llu left to anti-entropy\n", took,
              static_cast<unsigned long long>(repairs), static_cast<unsigned long long>(deferred));
  CHECK(repairs + deferred == 20);
  CHECK(static_cast<double>(repairs) <= 1 + took + 1);  // the bucket's one token, then 1/s
  CHECK(deferred >= 1);
  CHECK(wait_for([&] { return c.status(2)["keys"].get<std::uint64_t>() == repairs; }, 10) >= 0);
}

TEST_CASE("a read does not wait for a stalled replica: it asks one more", "[integration][cluster]") {
  setenv("RINGSTORE_SECRET", secret_arg, 1);
  Cluster c(3, {"--anti-entropy-interval-ms", "0"});
  REQUIRE(wait_for([&] { return c.agrees(3, 0); }, 10) >= 0);
  for (int k = 0; k < 20; k++) {
    REQUIRE(request("PUT", c.nodes[0]->url("stall-" + std::to_string(k) + "?w=3"), "v" + std::to_string(k)).status == 201);
  }
  // Node 3 stops answering without closing anything, as a stalled or overloaded process
  // does, and long before gossip calls it down: each read through node 1 (R=2, its own
  // copy plus one remote) that asks node 3 first must turn to node 2 within milliseconds,
  // not after the replica timeout (2 s).
  c.nodes[2]->signal(SIGSTOP);
  double slowest = 0;
  for (int k = 0; k < 20; k++) {
    Response r = request("GET", c.nodes[0]->url("stall-" + std::to_string(k)), "", {}, 10'000);
    INFO(r.body);
    CHECK(r.status == 200);
    CHECK(r.body == "v" + std::to_string(k));
    slowest = std::max(slowest, r.seconds);
  }
  std::uint64_t speculative = c.status(0)["speculative_reads"].get<std::uint64_t>();
  c.nodes[2]->signal(SIGCONT);
  std::printf("20 reads with one replica stalled: slowest %.3f s, %llu asked one more replica\n",
              slowest, static_cast<unsigned long long>(speculative));
  CHECK(slowest < 0.5);
  CHECK(speculative >= 1);
}
