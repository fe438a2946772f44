// Membership changes against the real binary: a node joins a cluster that holds data, a
// node leaves, a dead node is removed, a join interrupted by kill -9 resumes. After each
// change every key must be held by exactly the N members of its preference list
// (computed here from the members' ids with the ring code the nodes use), and the
// number of copies moved is compared with the optimum. Every wait has a deadline.
//
// The default run uses MEMBERSHIP_KEYS keys (2,000 unless set); the figures for 10,000
// keys come from running the same cases with MEMBERSHIP_KEYS=10000.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "integration/support.h"
#include "ring/ring.h"

using namespace itest;
using json = nlohmann::json;

namespace {

const char* secret = "membership-test-secret";
constexpr std::size_t replicas = 3;

std::size_t key_count() {
  const char* env = std::getenv("MEMBERSHIP_KEYS");
  long n = env ? std::atol(env) : 0;
  return n > 0 ? static_cast<std::size_t>(n) : 2'000;
}

std::string key_of(const std::string& prefix, std::size_t i) { return prefix + std::to_string(i); }

// ~1 KiB, different for every key.
std::string value_of(const std::string& key) {
  std::string v = key + ":";
  Prng p(std::hash<std::string>{}(key));
  while (v.size() < 1000) v += static_cast<char>('a' + p.next() % 26);
  return v;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string auth_header() { return internal_auth_header(secret); }

struct Members : NodeGroup {
  std::vector<std::string> extra;

  Members(int n, std::vector<std::string> extra_args = {})
      : NodeGroup(0, NodeOptions{}), extra(std::move(extra_args)) {
    setenv("RINGSTORE_SECRET", secret, 1);
    for (int i = 0; i < n; i++) add();
  }
  // Every node after the first gets the first as its seed (NodeGroup::add).
  NodeProcess& add(std::vector<std::string> more = {}) {
    NodeOptions o;
    o.disks = 1;
    o.extra_args = {"--gossip-interval-ms", "250", "--hint-interval-ms", "500"};
    for (const auto& a : extra) o.extra_args.push_back(a);
    for (const auto& a : more) o.extra_args.push_back(a);
    return NodeGroup::add(o);
  }
  std::string id(std::size_t i) {
    json s = status(i);
    return s.is_object() ? s["id"].get<std::string>() : "";
  }
};

// Which running node holds which keys: its own live rows, from /_/internal/list (the
// public listing is the cluster's, not one node's).
std::map<std::string, std::set<std::size_t>> holdings(Members& c) {
  std::map<std::string, std::set<std::size_t>> out;
  const std::string auth = auth_header();
  for (std::size_t i = 0; i < c.nodes.size(); i++) {
    if (!c.nodes[i]->running()) continue;
    std::string start;
    for (;;) {
      Response r = request("GET", c.nodes[i]->url("_/internal/list?limit=10000&start=" +
                                                  url_encode(start, false)), "", {auth});
      if (r.status != 200) break;
      json j = json::parse(r.body, nullptr, false);
      if (!j.is_object()) break;
      for (const auto& row : j["rows"]) {
        if (row[2] == 0) out[row[0].get<std::string>()].insert(i);
      }
      start = j.value("next", "");
      if (start.empty()) break;
    }
  }
  return out;
}

// The ring as node `from` sees it, for preference lists; node index by id.
struct RingView {
  std::shared_ptr<const ring::Ring> ring;
  std::map<std::string, std::size_t> index_of_id;  // hex id -> node index
};

RingView ring_view(Members& c, std::size_t from) {
  RingView v;
  std::map<std::string, std::size_t> by_port;
  for (std::size_t i = 0; i < c.nodes.size(); i++) {
    if (c.nodes[i]->running()) by_port["127.0.0.1:" + std::to_string(c.nodes[i]->port())] = i;
  }
  std::vector<ring::Member> members;
  json s = c.status(from);
  for (const auto& m : s["members"]) {
    ring::Member rm;
    std::string hex = m["id"].get<std::string>();
    for (std::size_t b = 0; b < rm.id.size(); b++) {
      rm.id[b] = static_cast<std::uint8_t>(std::stoi(hex.substr(2 * b, 2), nullptr, 16));
    }
    rm.vnodes = m["vnodes"].get<std::uint32_t>();
    std::string state = m.value("state", "normal");
    rm.state = state == "normal" ? ring::MemberState::normal : ring::MemberState::left;
    rm.addr = m["addr"].get<std::string>();
    members.push_back(rm);
    if (by_port.count(rm.addr)) v.index_of_id[hex] = by_port[rm.addr];
  }
  v.ring = ring::Ring::build(members).value();
  return v;
}

std::set<std::size_t> owners(const RingView& v, const std::string& key) {
  std::set<std::size_t> out;
  ring::PreferenceList p = v.ring->preference_list_for_key(key, replicas);
  for (std::uint32_t m : p.view()) {
    auto it = v.index_of_id.find(ring::hex_id(v.ring->members()[m].id));
    out.insert(it == v.index_of_id.end() ? SIZE_MAX : it->second);
  }
  return out;
}

// Keys not held by exactly their preference list (printed, up to a few).
std::size_t misplaced(Members& c, const std::vector<std::string>& keys, std::size_t from) {
  RingView v = ring_view(c, from);
  auto held = holdings(c);
  std::size_t bad = 0;
  for (const std::string& k : keys) {
    std::set<std::size_t> want = owners(v, k);
    const std::set<std::size_t>& got = held[k];
    if (got != want) {
      if (bad < 3) {
        std::string g, w;
        for (auto x : got) g += std::to_string(x) + " ";
        for (auto x : want) w += std::to_string(x) + " ";
        UNSCOPED_INFO("key " << k << " held by [" << g << "] owners [" << w << "]");
      }
      bad++;
    }
  }
  return bad;
}

// PUTs keys [from, to) with `threads` writers; returns the keys acknowledged.
std::vector<std::string> put_keys(NodeProcess& via, const std::string& prefix, std::size_t from,
                                  std::size_t to, int threads = 4) {
  std::vector<std::vector<std::string>> acked(threads);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; t++) {
    ts.emplace_back([&, t] {
      for (std::size_t i = from + t; i < to; i += threads) {
        std::string k = key_of(prefix, i);
        // A loaded machine (the sanitizer build, other tests beside) times some out.
        for (int attempt = 0; attempt < 10; attempt++) {
          if (request("PUT", via.url(k), value_of(k)).status == 201) {
            acked[t].push_back(k);
            break;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(50 * (attempt + 1)));
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  std::vector<std::string> all;
  for (auto& a : acked) all.insert(all.end(), a.begin(), a.end());
  std::sort(all.begin(), all.end());
  return all;
}

std::uint64_t sum_transfers(Members& c, const char* pass, const char* field) {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < c.nodes.size(); i++) {
    if (!c.nodes[i]->running()) continue;
    json s = c.status(i);
    if (s.is_object()) total += s["transfers"][pass].value(field, 0ull);
  }
  return total;
}

// Reads `keys` through node `via` with r=1 (its local copy when it is an owner).
std::size_t wrong_values(NodeProcess& via, const std::vector<std::string>& keys) {
  std::size_t wrong = 0;
  for (const std::string& k : keys) {
    Response r = request("GET", via.url(k + "?r=1"));
    if (r.status != 200 || r.body != value_of(k)) wrong++;
  }
  return wrong;
}

}  // namespace

TEST_CASE("a node joins a loaded cluster, streams its ranges, and one leaves",
          "[integration][membership]") {
  const std::size_t n_keys = key_count();
  Members c(4);
  REQUIRE(wait_for([&] { return c.settled(4); }, 20) >= 0);
  auto t_load = Clock::now();
  std::vector<std::string> keys = put_keys(*c.nodes[0], "k", 0, n_keys);
  std::printf("loaded %zu keys of ~1 KiB into 4 nodes in %.2f s\n", keys.size(), seconds_since(t_load));
  REQUIRE(keys.size() == n_keys);
  REQUIRE(wait_for([&] { return c.settled(4); }, 20) >= 0);
  // A replica write that timed out under load is on its third replica once the hint goes.
  REQUIRE(wait_for([&] { return misplaced(c, keys, 0) == 0; }, 30, Millis(500)) >= 0);

  // ---- join, with a writer running ----
  std::atomic<bool> writing{true};
  std::vector<std::string> during, tried;  // acknowledged; attempted (a timed-out one may have landed)
  // The node itself, not c.nodes[1]: c.add() below grows the vector while this runs.
  NodeProcess& coordinator = *c.nodes[1];
  std::thread writer([&] {
    std::size_t i = 0;
    while (writing && i < 2'000) {
      std::string k = key_of("during", i++);
      tried.push_back(k);
      if (request("PUT", coordinator.url(k), value_of(k)).status == 201) during.push_back(k);
    }
  });
  auto t_join = Clock::now();
  NodeProcess& joiner = c.add();
  const std::size_t j = c.nodes.size() - 1;
  double joined_s = wait_for([&] {
    json s = c.status(j);
    return s.is_object() && s["state"] == "normal";
  }, 300, Millis(50));
  writing = false;
  writer.join();
  REQUIRE(joined_s >= 0);
  double settled_s = wait_for([&] { return c.settled(5) && misplaced(c, keys, 0) == 0; }, 120, Millis(500));
  INFO(joiner.log());
  REQUIRE(settled_s >= 0);
  std::vector<std::string> all = keys;
  all.insert(all.end(), during.begin(), during.end());
  CHECK(misplaced(c, all, 0) == 0);
  CHECK(misplaced(c, all, j) == 0);

  // Optimum: every key whose preference list gains the new node moves one copy to it.
  RingView after = ring_view(c, 0);
  std::size_t optimum = 0;
  std::vector<std::string> joiner_keys;
  for (const std::string& k : keys) {
    if (owners(after, k).count(j)) {
      optimum++;
      joiner_keys.push_back(k);
    }
  }
  // Writes made while the joiner started may have reached the old owners only (before
  // every coordinator saw it joining): those are streamed too.
  std::size_t optimum_all = optimum;
  for (const std::string& k : tried) optimum_all += owners(after, k).count(j);
  json join_pass = c.status(j)["transfers"]["join"];
  std::printf("join pass: %s\n", join_pass.dump().c_str());
  std::uint64_t received = join_pass.value("keys_received", 0ull);
  std::uint64_t sent = sum_transfers(c, "join", "keys_sent") + sum_transfers(c, "handoff", "keys_sent");
  std::uint64_t dropped = sum_transfers(c, "handoff", "keys_dropped");
  std::printf("join of a 5th node with %zu keys: serving after %.2f s, every copy in place after "
              "%.2f s; copies moved %llu (received by the joiner %llu), optimum %zu (%.3f of %zu "
              "copies, 1/5 = 0.200); old copies dropped %llu; %zu writes acknowledged meanwhile\n",
              keys.size(), joined_s, seconds_since(t_join),
              static_cast<unsigned long long>(sent), static_cast<unsigned long long>(received),
              optimum, static_cast<double>(optimum) / static_cast<double>(replicas * keys.size()),
              replicas * keys.size(), static_cast<unsigned long long>(dropped), during.size());
  CHECK(received >= optimum);  // the keys written before the join all came by transfer
  CHECK(received <= optimum_all);
  CHECK(sent <= optimum_all);
  CHECK(dropped >= optimum);  // every copy the joiner took over left its old owner
  CHECK(wrong_values(joiner, joiner_keys) == 0);

  // ---- leave: node 1 streams its ranges out ----
  const std::size_t leaver = 1;
  std::size_t leave_optimum = 0;  // the copies it holds, acknowledged or not
  for (const auto& [k, who] : holdings(c)) leave_optimum += who.count(leaver);
  auto t_leave = Clock::now();
  RunResult r = run_binary({"leave", "--node", "127.0.0.1:" + std::to_string(c.nodes[leaver]->port())},
                           600s);
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  double left_s = seconds_since(t_leave);
  double leave_settled = wait_for([&] { return c.settled(4) && misplaced(c, all, 0) == 0; }, 120, Millis(500));
  INFO(c.nodes[leaver]->log());
  REQUIRE(leave_settled >= 0);
  auto held = holdings(c);
  std::size_t leaver_holds = 0;
  for (const auto& [k, who] : held) leaver_holds += who.count(leaver);
  CHECK(leaver_holds == 0);  // handed off, then dropped
  std::uint64_t leave_sent = c.status(leaver)["transfers"]["leave"].value("keys_sent", 0ull);
  std::printf("leave of 1 of 5 nodes with %zu keys: left after %.2f s, every copy in place after "
              "%.2f s; copies moved %llu, optimum %zu (the copies it held)\n",
              all.size(), left_s, seconds_since(t_leave), static_cast<unsigned long long>(leave_sent),
              leave_optimum);
  CHECK(leave_sent <= leave_optimum);
  CHECK(leave_sent >= leave_optimum * 9 / 10);
  CHECK(wrong_values(*c.nodes[0], std::vector<std::string>(all.begin(), all.begin() + 200)) == 0);

  // Leaving again is refused with a reason.
  r = run_binary({"leave", "--node", "127.0.0.1:" + std::to_string(c.nodes[leaver]->port())});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("not_normal") != std::string::npos);
}

TEST_CASE("a killed node is removed and its keys are re-replicated from the other copies",
          "[integration][membership]") {
  const std::size_t n_keys = key_count() / 2;
  Members c(4);
  REQUIRE(wait_for([&] { return c.settled(4); }, 20) >= 0);
  std::vector<std::string> keys = put_keys(*c.nodes[0], "r", 0, n_keys);
  REQUIRE(keys.size() == n_keys);
  const std::string dead_id = c.id(3);
  RingView before = ring_view(c, 0);
  std::size_t optimum = 0;  // each key that lost its copy on the dead node needs one
  for (const std::string& k : keys) optimum += owners(before, k).count(3);
  const std::string via = "127.0.0.1:" + std::to_string(c.nodes[1]->port());
  c.nodes[3]->kill9();

  // Bad input: a malformed id, an unknown one, a live one, a bad address.
  RunResult r = run_binary({"remove", "--node", "not-an-id", "--host", via});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("32 hex digits") != std::string::npos);
  r = run_binary({"remove", "--node", std::string(32, 'a'), "--host", via});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("unknown_node") != std::string::npos);
  r = run_binary({"remove", "--node", c.id(2), "--host", via});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("node_alive") != std::string::npos);
  r = run_binary({"remove", "--node", dead_id, "--host", "nonsense"});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("HOST:PORT") != std::string::npos);

  // Down first (phi), then removed.
  REQUIRE(wait_for([&] {
    json s = c.status(1);
    for (const auto& m : s["members"]) {
      if (m["id"] == dead_id) return !m["alive"].get<bool>();
    }
    return false;
  }, 30) >= 0);
  auto t0 = Clock::now();
  r = run_binary({"remove", "--node", dead_id, "--host", via});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  double s = wait_for([&] { return c.settled(3) && misplaced(c, keys, 0) == 0; }, 120, Millis(500));
  REQUIRE(s >= 0);
  std::uint64_t sent = sum_transfers(c, "handoff", "keys_sent");
  std::printf("remove of a killed node (1 of 4, %zu keys): every key back to 3 copies after %.2f s; "
              "copies sent %llu, optimum %zu (the copies it held)\n",
              keys.size(), seconds_since(t0), static_cast<unsigned long long>(sent), optimum);
  CHECK(sent == optimum);
  for (std::size_t i = 0; i < 3; i++) {
    json st = c.status(i);
    for (const auto& m : st["members"]) {
      if (m["id"] == dead_id) CHECK(m["state"] == "removed");
    }
  }
  CHECK(wrong_values(*c.nodes[2], std::vector<std::string>(keys.begin(), keys.begin() + 200)) == 0);
}

TEST_CASE("a join interrupted by kill -9 resumes where it stopped", "[integration][membership]") {
  const std::size_t n_keys = key_count() / 2;
  Members c(3);
  REQUIRE(wait_for([&] { return c.settled(3); }, 20) >= 0);
  std::vector<std::string> keys = put_keys(*c.nodes[0], "i", 0, n_keys);
  REQUIRE(keys.size() == n_keys);
  // Slow enough to be caught in the middle: the joiner takes ~3/4 of the keys.
  const std::string rate = std::to_string(std::max<std::size_t>(200, n_keys / 4));
  NodeProcess& joiner = c.add({"--transfer-keys-per-s", rate});
  const std::size_t j = c.nodes.size() - 1;
  json seen;
  REQUIRE(wait_for([&] {
    seen = c.status(j);
    if (!seen.is_object()) return false;
    const json& p = seen["transfers"]["join"];
    return p.value("ranges_done", 0u) >= 16 && !p.value("done", true);
  }, 120, Millis(20)) >= 0);
  joiner.kill9();
  std::uint32_t ranges_at_kill = seen["transfers"]["join"].value("ranges_done", 0u);
  joiner.restart();
  json after;
  REQUIRE(wait_for([&] {
    after = c.status(j);
    return after.is_object();
  }, 10) >= 0);
  CHECK(after["state"] == "joining");
  // It goes on from the saved cursor: at least the ranges done before the kill, minus
  // the one in flight whose cursor had not been saved yet.
  CHECK(after["transfers"]["join"].value("ranges_done", 0u) + 1 >= ranges_at_kill);
  REQUIRE(wait_for([&] { return c.settled(4) && misplaced(c, keys, 0) == 0; }, 180, Millis(500)) >= 0);
  std::uint64_t received = c.status(j)["transfers"]["join"].value("keys_received", 0ull);
  std::printf("join interrupted at range %u/64 by kill -9, resumed: %llu keys received in all\n",
              ranges_at_kill, static_cast<unsigned long long>(received));
}

TEST_CASE("the internal range listing refuses bad input with a reason", "[integration][membership]") {
  Members c(1);
  const std::string auth = auth_header();
  NodeProcess& n = *c.nodes[0];
  CHECK(request("GET", n.url("_/internal/range?from=0&to=10")).status == 401);
  Response r = request("GET", n.url("_/internal/range?from=10&to=0"), "", {auth});
  CHECK(r.status == 400);
  CHECK(r.body.find("bad_range") != std::string::npos);
  r = request("GET", n.url("_/internal/range?from=x&to=1"), "", {auth});
  CHECK(r.status == 400);
  r = request("GET", n.url("_/internal/range?from=0&to=1&limit=0"), "", {auth});
  CHECK(r.status == 400);
  CHECK(r.body.find("bad_limit") != std::string::npos);
  r = request("POST", n.url("_/internal/range?from=0&to=1"), "", {auth});
  CHECK(r.status == 405);
  r = request("POST", n.url("_/internal/remove?id=zz"), "", {auth});
  CHECK(r.status == 400);
  CHECK(r.body.find("bad_node_id") != std::string::npos);
  // The only member cannot leave: nobody would take its data.
  r = request("POST", n.url("_/internal/leave"), "", {auth});
  CHECK(r.status == 409);
  CHECK(r.body.find("last_member") != std::string::npos);
  RunResult bad = run_binary({"leave", "--node", "127.0.0.1:1"});
  CHECK(bad.exit_code == 1);
  CHECK(bad.err.find("cannot connect") != std::string::npos);
  bad = run_binary({"leave", "--node", "no-port"});
  CHECK(bad.exit_code == 1);
  CHECK(bad.err.find("HOST:PORT") != std::string::npos);
  r = request("GET", n.url("?list&limit=10"));
  CHECK(r.status == 200);
  json st = json::parse(request("GET", n.url("_/status")).body);
  CHECK(st["state"] == "normal");  // a first node without seeds is normal at once
  CHECK(st["transfers"]["join"]["ranges_total"] == 64);
}
