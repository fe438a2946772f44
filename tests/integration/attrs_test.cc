// Stored headers, expiry and UNLINK across a five-node cluster at N=3: read back through
// a coordinator that holds no copy, and carried by every path that copies a value to
// another node (hinted handoff, anti-entropy, a joining node's transfers) byte for byte;
// a value that expired is purged in the background once the grace has passed.
#include <catch2/catch.hpp>
#include <cctype>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "support.h"

using namespace itest;
using json = nlohmann::json;

namespace {

const char* attrs_secret = "attrs-test-secret";

NodeOptions attrs_options(const std::vector<std::string>& extra) {
  setenv("RINGSTORE_SECRET", attrs_secret, 1);  // for the internal reads of one copy
  NodeOptions o;
  o.extra_args = extra;
  return o;
}

struct Cluster : NodeGroup {
  explicit Cluster(const std::vector<std::string>& extra = {})
      : NodeGroup(5, attrs_options(extra)) {}
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
  // Node i's own copy of `key` as it answers a replica read: its stored block as
  // X-Ringstore-Attr-* headers and its expiry, whatever the other replicas hold.
  Response own_copy(std::size_t i, const std::string& key) {
    return request("GET", nodes[i]->url("_/internal/blob/" + url_encode(key)), "",
                   {internal_auth_header(attrs_secret)});
  }
};

// A value with spaces and quotes, and every kind of header the native API keeps.
const std::vector<std::string> stored = {
    "X-Ringstore-Meta-Color: blue", "Cache-Control: max-age=30", "Content-Disposition: inline",
    "X-Ringstore-Meta-Owner: Ann \"B.\" Smith", "Content-Encoding: identity"};

std::vector<std::string> stored_with_ttl(int seconds) {
  std::vector<std::string> h = stored;
  h.push_back("X-Ringstore-TTL: " + std::to_string(seconds));
  return h;
}

// `stored` as the node keeps it: lower-case name -> value.
std::map<std::string, std::string> stored_block() {
  std::map<std::string, std::string> out;
  for (const std::string& line : stored) {
    std::size_t colon = line.find(": ");
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out[name] = line.substr(colon + 2);
  }
  return out;
}

// A client's read carries every stored header and the expiry exactly as `written`
// (the answer to a HEAD just after the PUT) showed them.
void check_stored(const Response& r, const Response& written) {
  CHECK(r.status == 200);
  REQUIRE(!written.header("x-ringstore-expires-ms").empty());
  for (const auto& [name, value] : stored_block()) {
    INFO(name);
    CHECK(r.header(name) == value);
  }
  CHECK(r.header("x-ringstore-expires-ms") == written.header("x-ringstore-expires-ms"));
  CHECK(r.header("x-ringstore-expires") == written.header("x-ringstore-expires"));
}

// One node's own copy (Cluster::own_copy) holds exactly the stored block, no line more
// or less, and the expiry `written` showed.
void check_copy(const Response& r, const Response& written) {
  CHECK(r.status == 200);
  std::map<std::string, std::string> block;
  const std::string prefix = "x-ringstore-attr-";
  for (const auto& [name, value] : r.headers) {
    if (name.compare(0, prefix.size(), prefix) == 0) block[name.substr(prefix.size())] = value;
  }
  CHECK(block == stored_block());
  CHECK(r.header("x-ringstore-expires-ms") == written.header("x-ringstore-expires-ms"));
}

}  // namespace

TEST_CASE("stored headers and expiry travel to every replica, through handoff too",
          "[integration][metadata]") {
  // Anti-entropy off: only the hint can bring the write to the replica that missed it.
  Cluster g({"--gossip-interval-ms", "200", "--hint-interval-ms", "200",
             "--anti-entropy-interval-ms", "0"});
  REQUIRE(wait_for([&] { return g.agrees(5, 0); }, 30) >= 0);

  // Written and read through a node that holds no copy: the replicas' answers carry it.
  const std::string key = "attrs/one";
  int coord = g.non_owner(key);
  REQUIRE(coord >= 0);
  std::vector<std::string> h = stored_with_ttl(600);
  REQUIRE(request("PUT", g.nodes[coord]->url(key), "value one", h).status == 201);
  Response got = request("GET", g.nodes[coord]->url(key));
  CHECK(got.body == "value one");
  check_stored(got, got);
  check_stored(request("HEAD", g.nodes[coord]->url(key)), got);
  // Every owner holds the same block and expiry (read from its own copy alone). At W=2
  // the PUT may be answered before the third owner has committed its copy.
  for (int o : g.owners(key)) {
    INFO("owner " << o);
    REQUIRE(wait_for([&] { return g.own_copy(static_cast<std::size_t>(o), key).status == 200; }, 10) >= 0);
    check_stored(request("GET", g.nodes[o]->url(key + "?r=1")), got);
    check_copy(g.own_copy(static_cast<std::size_t>(o), key), got);
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
  const Response written2 = request("HEAD", g.nodes[via]->url(key2));
  g.nodes[down]->restart();
  REQUIRE(wait_for([&] { return g.agrees(5, 0) && g.sum("hints") == 0; }, 45) >= 0);
  CHECK(g.sum("hints_delivered") >= 1);
  Response back = request("GET", g.nodes[down]->url(key2 + "?r=1"));
  CHECK(back.body == "value two");
  check_stored(back, written2);
  check_copy(g.own_copy(static_cast<std::size_t>(down), key2), written2);
}

TEST_CASE("an expired value is gone cluster-wide; UNLINK lists until DELETE", "[integration][metadata]") {
  Cluster g({"--gossip-interval-ms", "200"});
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

TEST_CASE("a value that expired is purged from every replica once the grace has passed",
          "[integration][metadata][expiry]") {
  // Passes every 300 ms; with a 1 s grace they look for values due every 100 ms.
  Cluster g({"--gossip-interval-ms", "200", "--anti-entropy-interval-ms", "300",
             "--tombstone-grace-s", "1"});
  REQUIRE(wait_for([&] { return g.agrees(5, 0); }, 30) >= 0);
  // One value that expires in a second, one that expires in an hour, one that never does.
  const std::string gone = "exp/gone", later = "exp/later", kept = "exp/kept";
  const int coord = g.non_owner(gone);
  REQUIRE(coord >= 0);
  Response put_gone = request("PUT", g.nodes[coord]->url(gone), "brief", stored_with_ttl(1));
  Response put_later = request("PUT", g.nodes[coord]->url(later), "hour", stored_with_ttl(3600));
  Response put_kept = request("PUT", g.nodes[coord]->url(kept), "always", stored);
  REQUIRE(put_gone.status == 201);
  REQUIRE(put_later.status == 201);
  REQUIRE(put_kept.status == 201);
  const std::string expires_ms =
      request("HEAD", g.nodes[coord]->url(gone)).header("x-ringstore-expires-ms");
  REQUIRE(!expires_ms.empty());
  const Response written_later = request("HEAD", g.nodes[coord]->url(later));
  REQUIRE(wait_for([&] { return g.sum("keys") == 9; }, 10) >= 0);
  REQUIRE(g.replicas_hold(gone, put_gone.header("x-ringstore-version"), false, 3));

  REQUIRE(wait_for([&] { return request("GET", g.nodes[coord]->url(gone)).status == 404; }, 5,
                   Millis(20)) >= 0);
  // Expired but within the grace, every replica keeps its row (a replica that missed
  // the write could otherwise be offered nothing and keep an older value): looked at
  // until 200 ms before the grace ends by this machine's clock, which the nodes share.
  const auto wall_ms = [] {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch())
            .count());
  };
  const std::uint64_t grace_end_ms = std::stoull(expires_ms) + 1000;
  int looks = 0, held = 0;
  while (wall_ms() + 200 < grace_end_ms) {
    looks++;
    held += g.replicas_hold(gone, put_gone.header("x-ringstore-version"), false, 3);
    std::this_thread::sleep_for(Millis(50));
  }
  CHECK(held == looks);
  REQUIRE(wait_for([&] { return g.replicas_hold(gone, nullptr, false, 3); }, 20) >= 0);
  std::printf("an expired value left 3 replicas %.2f s after its grace (1 s) ended\n",
              (static_cast<double>(wall_ms()) - static_cast<double>(grace_end_ms)) / 1000);
  // Its rows are gone, not turned into tombstones: each replica counted one purge (a
  // node that held a stand-in's or a repair's extra copy counts one more).
  CHECK(g.sum("keys") == 6);
  const std::uint64_t purged = g.sum("tombstones_purged", "anti_entropy");
  CHECK(purged >= 3);
  CHECK(purged <= 5);

  // Two more passes on every node purge nothing else and bring nothing back.
  auto passes = [&](std::size_t i) {
    return g.status(i)["anti_entropy"]["passes"].get<std::uint64_t>();
  };
  std::vector<std::uint64_t> before;
  for (std::size_t i = 0; i < g.nodes.size(); i++) before.push_back(passes(i));
  auto two_more = [&] {
    for (std::size_t i = 0; i < g.nodes.size(); i++) {
      if (passes(i) < before[i] + 2) return false;
    }
    return true;
  };
  REQUIRE(wait_for(two_more, 10) >= 0);
  CHECK(g.sum("tombstones_purged", "anti_entropy") == purged);
  CHECK(g.sum("keys") == 6);
  CHECK(g.replicas_hold(gone, nullptr, false, 3));
  CHECK(g.replicas_hold(later, put_later.header("x-ringstore-version"), false, 3));
  CHECK(g.replicas_hold(kept, put_kept.header("x-ringstore-version"), false, 3));
  for (std::size_t i = 0; i < g.nodes.size(); i++) {
    INFO("node " << i);
    CHECK(request("GET", g.nodes[i]->url(gone)).status == 404);
    Response l = request("GET", g.nodes[i]->url(later));
    CHECK(l.body == "hour");
    check_stored(l, written_later);
    Response k = request("GET", g.nodes[i]->url(kept));
    CHECK(k.body == "always");
    CHECK(k.header("x-ringstore-meta-color") == "blue");
    CHECK(k.header("x-ringstore-expires-ms").empty());
  }
}

TEST_CASE("stored headers and expiry come back with a copy that anti-entropy refills",
          "[integration][metadata]") {
  // Hints never go out: only anti-entropy can bring the returning owner up to date.
  Cluster g({"--gossip-interval-ms", "200", "--hint-interval-ms", "600000",
             "--anti-entropy-interval-ms", "300"});
  REQUIRE(wait_for([&] { return g.agrees(5, 0); }, 30) >= 0);
  const std::string key = "attrs/refilled";
  const std::set<int> owners = g.owners(key);
  REQUIRE(owners.size() == 3);
  const int down = *owners.begin();
  const int via = g.non_owner(key);
  REQUIRE(via >= 0);
  g.nodes[down]->kill9();
  REQUIRE(wait_for([&] { return g.agrees(4, 1); }, 30) >= 0);
  Response put = request("PUT", g.nodes[via]->url(key), "refilled", stored_with_ttl(3600));
  REQUIRE(put.status == 201);
  const Response written = request("HEAD", g.nodes[via]->url(key));
  g.nodes[down]->restart();
  REQUIRE(wait_for([&] { return g.agrees(5, 0); }, 30) >= 0);
  const std::string version = put.header("x-ringstore-version");
  double s = wait_for([&] { return g.replicas_hold(key, version, false, 3); }, 30);
  REQUIRE(s >= 0);
  std::printf("anti-entropy refilled a returning owner %.2f s after the cluster saw it back\n", s);
  CHECK(g.sum("read_repairs") == 0);
  CHECK(g.sum("hints_delivered") == 0);
  CHECK(g.sum("keys_pushed", "anti_entropy") + g.sum("keys_pulled", "anti_entropy") >= 1);
  check_copy(g.own_copy(static_cast<std::size_t>(down), key), written);
  // The owners that had it from the write go: the refilled node answers from its copy alone.
  for (int o : owners) {
    if (o != down) g.nodes[o]->kill9();
  }
  Response got = request("GET", g.nodes[down]->url(key + "?r=1"));
  CHECK(got.body == "refilled");
  check_stored(got, written);
  check_stored(request("HEAD", g.nodes[down]->url(key + "?r=1")), written);
}

TEST_CASE("keys a joining node takes over keep their stored headers and expiry",
          "[integration][metadata]") {
  // Anti-entropy off: only the join's transfers move copies to the newcomer.
  const std::vector<std::string> flags = {"--gossip-interval-ms", "200",
                                          "--anti-entropy-interval-ms", "0"};
  Cluster g(flags);
  REQUIRE(wait_for([&] { return g.agrees(5, 0); }, 30) >= 0);
  constexpr int count = 30;
  auto key_of = [](int k) { return "join/" + std::to_string(k); };
  std::vector<Response> written;
  for (int k = 0; k < count; k++) {
    NodeProcess& via = *g.nodes[static_cast<std::size_t>(k) % g.nodes.size()];
    Response put = request("PUT", via.url(key_of(k)), "value " + key_of(k), stored_with_ttl(3600));
    REQUIRE(put.status == 201);
    written.push_back(request("HEAD", via.url(key_of(k))));
  }
  REQUIRE(wait_for([&] { return g.sum("keys") == 3 * count; }, 10) >= 0);

  auto t0 = Clock::now();
  g.add(attrs_options(flags));
  const std::size_t j = g.nodes.size() - 1;
  auto serving = [&] {
    json st = g.status(j);
    return st.is_object() && st["state"] == "normal";
  };
  REQUIRE(wait_for(serving, 60) >= 0);
  REQUIRE(wait_for([&] { return g.settled(6); }, 60) >= 0);
  std::printf("a sixth node joined and every transfer ended %.2f s after its start\n",
              std::chrono::duration<double>(Clock::now() - t0).count());
  std::vector<int> taken;  // keys whose preference list gained the newcomer
  for (int k = 0; k < count; k++) {
    if (g.owners(key_of(k)).count(static_cast<int>(j))) taken.push_back(k);
  }
  REQUIRE(!taken.empty());
  CHECK(g.status(j)["transfers"]["join"].value("keys_received", 0ull) >= taken.size());
  for (int k : taken) {
    INFO(key_of(k));
    check_copy(g.own_copy(j, key_of(k)), written[static_cast<std::size_t>(k)]);
  }
  // The other owners of one of them go: the newcomer answers from its copy alone.
  const int k = taken.front();
  for (int o : g.owners(key_of(k))) {
    if (o != static_cast<int>(j)) g.nodes[static_cast<std::size_t>(o)]->kill9();
  }
  Response got = request("GET", g.nodes[j]->url(key_of(k) + "?r=1"));
  CHECK(got.body == "value " + key_of(k));
  check_stored(got, written[static_cast<std::size_t>(k)]);
}
