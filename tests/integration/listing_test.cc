// The cluster-wide listing (GET /{prefix}?list): through any node of a five-node cluster
// at N=3 it returns every live key once, in byte order, over pages; deleted keys and
// hint copies stay out; it stays complete with members down as long as every ring range
// keeps R owners, and answers 503 naming a range when one does not.
#include <openssl/hmac.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "integration/support.h"

using namespace itest;
using json = nlohmann::json;

namespace {

const char* list_secret = "listing-test-secret";

std::string auth_header() { return internal_auth_header(list_secret); }

NodeOptions list_options() {
  setenv("RINGSTORE_SECRET", list_secret, 1);
  NodeOptions o;
  // Hints stay where they are while their owner is down; no delivery attempts meanwhile.
  o.extra_args = {"--hint-interval-ms", "200"};
  return o;
}

struct Page {
  long status = 0;
  std::vector<std::string> keys;
  std::string next;
  json body;
};

Page list_page(NodeProcess& via, const std::string& prefix, const std::string& query) {
  Page p;
  Response r = request("GET", via.url(url_encode(prefix) + "?list" + query), "", {}, 10'000);
  p.status = r.status;
  p.body = json::parse(r.body, nullptr, false);
  if (r.status != 200 || !p.body.is_object()) return p;
  for (const auto& k : p.body["keys"]) p.keys.push_back(k.get<std::string>());
  p.next = p.body["next"].get<std::string>();
  return p;
}

// Every page of `prefix` through `via` with `limit` keys at most; `between` runs after
// each page. An error page ends it (its status is returned in *status).
std::vector<std::string> list_all(NodeProcess& via, const std::string& prefix, int limit,
                                  long* status, const std::function<void(int)>& between = {}) {
  std::vector<std::string> all;
  std::string start;
  *status = 0;
  for (int page = 0; page < 10'000; page++) {
    std::string q = "&limit=" + std::to_string(limit);
    if (!start.empty()) q += "&start=" + url_encode(start, false);
    Page p = list_page(via, prefix, q);
    *status = p.status;
    if (p.status != 200) return all;
    REQUIRE(p.keys.size() <= static_cast<std::size_t>(limit));
    all.insert(all.end(), p.keys.begin(), p.keys.end());
    if (p.next.empty()) return all;
    REQUIRE(p.next > start);  // paging moves forward
    start = p.next;
    if (between) between(page);
  }
  FAIL("paging did not end");
  return all;
}

// Index of the node serving at "127.0.0.1:PORT".
std::size_t node_at(NodeGroup& g, const std::string& addr) {
  for (std::size_t i = 0; i < g.nodes.size(); i++) {
    if (addr == "127.0.0.1:" + std::to_string(g.nodes[i]->port())) return i;
  }
  FAIL("no node at " << addr);
  return 0;
}

std::vector<std::size_t> owners_of(NodeGroup& g, std::size_t via, const std::string& key) {
  Response r = request("GET", g.nodes[via]->url("_/locate?key=" + url_encode(key, false)));
  REQUIRE(r.status == 200);
  json j = json::parse(r.body, nullptr, false);
  std::vector<std::size_t> out;
  for (const auto& o : j["preference_list"]) out.push_back(node_at(g, o["addr"].get<std::string>()));
  return out;
}

std::string key_name(const std::string& prefix, int k) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%03d", k);
  return prefix + buf;
}

}  // namespace

TEST_CASE("listing through any of five nodes is cluster-wide, paged, and refuses to be short",
          "[integration][listing]") {
  NodeGroup g(5, list_options());
  REQUIRE(wait_for([&] { return g.agrees(5, 0); }, 30) >= 0);

  // 100 keys through four different nodes, a few deleted, and keys beside the prefix.
  std::vector<std::string> expected;
  for (int k = 0; k < 100; k++) {
    std::string key = key_name("k/", k);
    REQUIRE(request("PUT", g.nodes[k % 4]->url(key), "v").status == 201);
    if (k % 10 != 3) expected.push_back(key);
  }
  for (int k = 3; k < 100; k += 10) {
    REQUIRE(request("DELETE", g.nodes[4]->url(key_name("k/", k))).status == 204);
  }
  REQUIRE(request("PUT", g.nodes[1]->url("j/x"), "v").status == 201);
  REQUIRE(request("PUT", g.nodes[2]->url("l/x"), "v").status == 201);
  std::sort(expected.begin(), expected.end());

  for (std::size_t via = 0; via < g.nodes.size(); via++) {
    INFO("through node " << via);
    long status = 0;
    CHECK(list_all(*g.nodes[via], "k/", 7, &status) == expected);
    CHECK(status == 200);
    CHECK(list_all(*g.nodes[via], "k/", 1000, &status) == expected);
    Page first = list_page(*g.nodes[via], "k/", "&limit=1");
    CHECK(first.keys == std::vector<std::string>{"k/000"});
    CHECK(first.next == "k/001");
  }
  CHECK(list_page(*g.nodes[0], "", "&limit=0").status == 400);
  CHECK(list_page(*g.nodes[0], "", "&limit=x").status == 400);
  CHECK(list_page(*g.nodes[0], "", "&r=9").status == 400);
  Page everything = list_page(*g.nodes[3], "", "");
  CHECK(everything.keys.size() == expected.size() + 2);
  CHECK(everything.keys.front() == "j/x");
  CHECK(everything.keys.back() == "l/x");

  // The first owner of k/000 dies between two pages of a listing: the listing goes on,
  // complete, each key once.
  std::vector<std::size_t> owners = owners_of(g, 0, "k/000");
  REQUIRE(owners.size() == 3);
  std::size_t via = 0;
  while (std::find(owners.begin(), owners.end(), via) != owners.end()) via++;
  long status = 0;
  auto paged = list_all(*g.nodes[via], "k/", 9, &status, [&](int page) {
    if (page == 2) g.nodes[owners[0]]->kill9();
  });
  CHECK(status == 200);
  CHECK(paged == expected);
  REQUIRE(!g.nodes[owners[0]]->running());

  // Writes while it is down leave hints on stand-ins. A hint is not its holder's copy:
  // no node's own listing shows a key it does not own.
  std::vector<std::string> hinted;
  for (int k = 0; k < 40; k++) {
    std::string key = key_name("h/", k);
    std::vector<std::size_t> o = owners_of(g, via, key);
    REQUIRE(request("PUT", g.nodes[via]->url(key), "v").status == 201);
    if (std::find(o.begin(), o.end(), owners[0]) != o.end()) hinted.push_back(key);
  }
  REQUIRE(!hinted.empty());
  REQUIRE(g.sum("hints") > 0);
  for (std::size_t i = 0; i < g.nodes.size(); i++) {
    if (!g.nodes[i]->running()) continue;
    Response r = request("GET", g.nodes[i]->url("_/internal/list?prefix=h/&limit=1000"), "",
                         {auth_header()});
    REQUIRE(r.status == 200);
    json j = json::parse(r.body, nullptr, false);
    REQUIRE(j.is_object());
    for (const auto& row : j["rows"]) {
      std::string key = row[0].get<std::string>();
      std::vector<std::size_t> o = owners_of(g, via, key);
      INFO("node " << i << " lists " << key);
      CHECK(std::find(o.begin(), o.end(), i) != o.end());
    }
  }
  CHECK(request("GET", g.nodes[via]->url("_/internal/list?prefix=h/&limit=10")).status == 401);

  // One node down: every range keeps two owners (R=2): complete through every live node.
  for (std::size_t i = 0; i < g.nodes.size(); i++) {
    if (!g.nodes[i]->running()) continue;
    INFO("through node " << i << " with one node down");
    CHECK(list_all(*g.nodes[i], "k/", 13, &status) == expected);
    CHECK(status == 200);
    CHECK(list_all(*g.nodes[i], "h/", 6, &status).size() == 40);
  }

  // Two owners of k/000 down: its range has one owner left, short of R=2, so a page is a
  // 503 that names a range; at r=1 every range still has an owner and the page is whole.
  g.nodes[owners[1]]->kill9();
  Page p = list_page(*g.nodes[via], "k/", "&limit=5");
  CHECK(p.status == 503);
  REQUIRE(p.body.is_object());
  CHECK(p.body["error"] == "ring_range_unavailable");
  CHECK(p.body["range"].contains("from"));
  CHECK(p.body["range"].contains("to"));
  CHECK(p.body["needed"] == 2);
  CHECK(list_all(*g.nodes[via], "k/", 11, &status) != expected);
  CHECK(status == 503);
  std::string r1;
  for (std::size_t i = 0; i < g.nodes.size(); i++) {
    if (!g.nodes[i]->running()) continue;
    INFO("through node " << i << " with two nodes down, r=1");
    std::vector<std::string> all;
    std::string start;
    for (;;) {
      Page q = list_page(*g.nodes[i], "k/", "&r=1&limit=20" + (start.empty() ? "" : "&start=" + start));
      REQUIRE(q.status == 200);
      all.insert(all.end(), q.keys.begin(), q.keys.end());
      if (q.next.empty()) break;
      start = q.next;
    }
    CHECK(all == expected);
  }

  // All three owners of k/000 down: no owner of its range answers, even at r=1: a 503
  // naming a range with none of its owners answering, never a short page.
  g.nodes[owners[2]]->kill9();
  p = list_page(*g.nodes[via], "k/", "&r=1&limit=5");
  CHECK(p.status == 503);
  REQUIRE(p.body.is_object());
  CHECK(p.body["error"] == "ring_range_unavailable");
  CHECK(p.body["answered"] == 0);
  CHECK(p.body["needed"] == 1);
  for (const auto& o : p.body["owners"]) CHECK(o["answered"] == false);
  std::printf("503 with three of five nodes down: %s\n", p.body.dump().c_str());
}

TEST_CASE("a listing stays complete while a fifth node joins and after it", "[integration][listing]") {
  NodeGroup g(4, list_options());
  REQUIRE(wait_for([&] { return g.agrees(4, 0); }, 30) >= 0);
  std::vector<std::string> expected;
  for (int k = 0; k < 400; k++) {
    std::string key = key_name("join/", k);
    REQUIRE(request("PUT", g.nodes[k % 4]->url(key), "v").status == 201);
    expected.push_back(key);
  }
  std::sort(expected.begin(), expected.end());

  // A joiner slow enough to be listed through in the middle of its join: it gets the
  // writes of its future ranges at once and owns them only once it turns normal.
  NodeOptions o = list_options();
  o.extra_args.push_back("--transfer-keys-per-s");
  o.extra_args.push_back("100");
  NodeProcess& joiner = g.add(o);
  const std::size_t j = g.nodes.size() - 1;
  int during = 0, added = 0;
  auto joining = [&] {
    json s = g.status(j);
    return s.is_object() && s["state"] == "joining";
  };
  REQUIRE(wait_for(joining, 10, Millis(20)) >= 0);
  while (joining() && during < 6) {
    // Writes go on during the join, through the joiner too.
    std::string key = key_name("join/w", added);
    REQUIRE(request("PUT", g.nodes[added % 5]->url(key), "v").status == 201);
    expected.insert(std::upper_bound(expected.begin(), expected.end(), key), key);
    added++;
    for (std::size_t via = 0; via < g.nodes.size(); via++) {
      long status = 0;
      std::vector<std::string> got = list_all(*g.nodes[via], "join/", 97, &status);
      INFO("during the join, via node " << via << " (" << during << ")");
      REQUIRE(status == 200);
      CHECK(got == expected);
    }
    during++;
  }
  std::printf("listed through all 5 nodes %d times while the fifth joined\n", during);
  CHECK(during >= 1);
  REQUIRE(wait_for([&] {
    json s = g.status(j);
    return s.is_object() && s["state"] == "normal";
  }, 60) >= 0);
  (void)joiner;
  for (std::size_t via = 0; via < g.nodes.size(); via++) {
    long status = 0;
    CHECK(list_all(*g.nodes[via], "join/", 1000, &status) == expected);
    CHECK(status == 200);
  }
}
