// Full disks lose nothing: three nodes whose only disk is an 8 MiB tmpfs are written
// past their capacity. A disk out of room (ENOSPC) or remounted read-only (EROFS) is
// full, not failed: it keeps serving what it holds, takes no new file (507 with a
// one-line reason), and takes writes again once room returns. Needs root (mount);
// skipped otherwise.
#include <sys/mount.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <nlohmann/json.hpp>
#include <string>

#include "integration/support.h"

using namespace itest;
using json = nlohmann::json;

namespace {

const char* full_secret = "full-disk-test-secret";

// An 8 MiB tmpfs, unmounted (lazily, in case a node still has files open) at the end.
struct SmallDisk {
  std::string path;
  bool mounted = false;
  explicit SmallDisk(const std::string& at) : path(at) {
    std::filesystem::create_directories(path);
    mounted = mount("tmpfs", path.c_str(), "tmpfs", 0, "size=8m") == 0;
  }
  bool remount_read_only() const {
    return mount("tmpfs", path.c_str(), "tmpfs", MS_REMOUNT | MS_RDONLY, "size=8m") == 0;
  }
  bool remount_writable() const { return mount("tmpfs", path.c_str(), "tmpfs", MS_REMOUNT, "size=8m") == 0; }
  ~SmallDisk() {
    if (mounted) umount2(path.c_str(), MNT_DETACH);
  }
};

// A directory for the test's small disks, and the cluster secret set.
std::string test_root() {
  setenv("RINGSTORE_SECRET", full_secret, 1);
  char tmpl[] = "/tmp/ringstore-full.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

std::string disk_state(NodeGroup& g, std::size_t i) {
  json s = g.status(i);
  if (!s.is_object() || s["disks"].empty()) return "?";
  return s["disks"][0]["state"].get<std::string>();
}

}  // namespace

TEST_CASE("full disks on every node lose no acknowledged write and take writes again once there is room",
          "[integration][disks]") {
  if (geteuid() != 0) {
    WARN("skipped: mounting a small tmpfs needs root");
    return;
  }
  const std::string root = test_root();
  std::vector<std::unique_ptr<SmallDisk>> disks;
  NodeGroup g(0, {});
  for (int i = 0; i < 3; i++) {
    disks.push_back(std::make_unique<SmallDisk>(root + "/disk" + std::to_string(i)));
    REQUIRE(disks.back()->mounted);
    NodeOptions o;
    o.disks = 0;
    o.extra_args = {"--disk", disks.back()->path};
    g.add(o);
  }
  REQUIRE(wait_for([&] { return g.agrees(3, 0); }, 30) >= 0);

  // 80 values of 200 KB through all three nodes: every copy is on every node (N=3), so
  // about 40 fit.
  Prng prng(27);
  std::map<std::string, std::string> acked;
  int refused = 0, other = 0;
  for (int k = 0; k < 80; k++) {
    std::string key = "full/" + std::to_string(k);
    std::string value = prng.bytes(200'000);
    Response r = request("PUT", g.nodes[k % 3]->url(key), value);
    if (r.status == 201) {
      acked[key] = value;
    } else if (r.status == 507 || r.status == 503) {
      refused++;
      CHECK(r.body.find("/tmp") == std::string::npos);  // no internal path in the answer
      CHECK(r.body.find("\"error\"") != std::string::npos);
    } else {
      other++;
      UNSCOPED_INFO("PUT " << key << " answered " << r.status << ": " << r.body);
    }
  }
  std::printf("full disks: %zu of 80 PUTs acknowledged, %d refused (507/503), %d other\n", acked.size(),
              refused, other);
  CHECK(other == 0);
  REQUIRE(refused > 0);  // the disks did fill
  REQUIRE(acked.size() >= 10);
  for (std::size_t i = 0; i < 3; i++) CHECK(disk_state(g, i) == "full");

  // Every acknowledged key reads back byte-exact through every node, now and after the
  // repair and scrub timers had their time: nothing was dropped or deleted.
  auto all_read_back = [&] {
    int bad = 0;
    for (const auto& [key, value] : acked) {
      for (std::size_t i = 0; i < 3; i++) {
        Response r = request("GET", g.nodes[i]->url(key));
        if (r.status != 200 || r.body != value) {
          bad++;
          UNSCOPED_INFO("GET " << key << " via node " << i << ": " << r.status << " (" << r.body.size() << " bytes)");
        }
      }
    }
    return bad;
  };
  CHECK(all_read_back() == 0);
  std::this_thread::sleep_for(std::chrono::seconds(5));
  CHECK(all_read_back() == 0);
  CHECK(g.sum("unrecoverable", "repair") == 0);

  // Room again: delete half of them; the disks come back and take new writes.
  int deleted = 0;
  for (auto it = acked.begin(); it != acked.end() && deleted * 2 < static_cast<int>(acked.size());) {
    REQUIRE(request("DELETE", g.nodes[deleted % 3]->url(it->first)).status == 204);
    it = acked.erase(it);
    deleted++;
  }
  double back_s = wait_for([&] {
    for (std::size_t i = 0; i < 3; i++) {
      if (disk_state(g, i) != "healthy") return false;
    }
    return true;
  }, 20);
  std::printf("disks writable again %.2f s after %d deletes\n", back_s, deleted);
  REQUIRE(back_s >= 0);
  std::string fresh = prng.bytes(200'000);
  Response r = request("PUT", g.nodes[1]->url("full/after"), fresh);
  REQUIRE(r.status == 201);
  acked["full/after"] = fresh;
  CHECK(all_read_back() == 0);

  // A read-only remount of one node's disk: it keeps serving, refuses new files, and
  // writes through it still succeed on the other replicas.
  REQUIRE(disks[0]->remount_read_only());
  Response ro = request("PUT", g.nodes[1]->url("full/while-read-only"), "small");
  CHECK(ro.status == 201);
  CHECK(wait_for([&] { return disk_state(g, 0) == "full"; }, 10) >= 0);
  CHECK(all_read_back() == 0);
  REQUIRE(disks[0]->remount_writable());
  CHECK(wait_for([&] { return disk_state(g, 0) == "healthy"; }, 20) >= 0);
  for (auto& n : g.nodes) n->terminate();
  disks.clear();
  std::filesystem::remove_all(root);
}

TEST_CASE("a node whose only disk is full coordinates through the others and serves what it holds",
          "[integration][disks]") {
  if (geteuid() != 0) {
    WARN("skipped: mounting a small tmpfs needs root");
    return;
  }
  const std::string root = test_root();
  auto small = std::make_unique<SmallDisk>(root + "/small");
  REQUIRE(small->mounted);
  NodeGroup g(0, {});
  NodeOptions full_node;
  full_node.disks = 0;
  full_node.extra_args = {"--disk", small->path};
  g.add(full_node);
  g.add(NodeOptions{});
  g.add(NodeOptions{});
  REQUIRE(wait_for([&] { return g.agrees(3, 0); }, 30) >= 0);

  // Fill node 0's disk through node 1: every write still gets W=2 from nodes 1 and 2.
  Prng prng(28);
  std::map<std::string, std::string> acked;
  for (int k = 0; k < 60 && disk_state(g, 0) != "full"; k++) {
    std::string key = "one-full/" + std::to_string(k);
    std::string value = prng.bytes(200'000);
    Response r = request("PUT", g.nodes[1]->url(key), value);
    INFO("PUT " << key << ": " << r.body << "\n" << g.nodes[1]->log());
    REQUIRE(r.status == 201);
    acked[key] = value;
  }
  REQUIRE(wait_for([&] { return disk_state(g, 0) == "full"; }, 10) >= 0);

  // Through the full node: writes succeed on the other replicas, with a receipt that
  // says which. A small one is held in memory as always; a larger one has nowhere to be
  // spooled and is relayed from memory too, up to limits::relay_bytes_max (8 MiB);
  // beyond that, 507 with a one-line reason and no path.
  for (int k = 0; k < 10; k++) {
    std::string key = "one-full/small/" + std::to_string(k);
    Response r = request("PUT", g.nodes[0]->url(key), "small value " + std::to_string(k));
    REQUIRE(r.status == 201);
    CHECK(r.header("x-ringstore-replicas").find("=failed") != std::string::npos);
    acked[key] = "small value " + std::to_string(k);
  }
  for (std::size_t bytes : {std::size_t{1'000'000}, std::size_t{6'000'000}}) {
    std::string key = "one-full/relayed/" + std::to_string(bytes);
    std::string value = prng.bytes(bytes);
    Response r = request("PUT", g.nodes[0]->url(key), value);
    INFO(r.body);
    REQUIRE(r.status == 201);
    CHECK(r.header("x-ringstore-acks").rfind("2/", 0) == 0);
    acked[key] = value;
  }
  Response big = request("PUT", g.nodes[0]->url("one-full/big"), prng.bytes(9'000'000));
  CHECK(big.status == 507);
  CHECK(big.body.find("insufficient_storage") != std::string::npos);
  CHECK(big.body.find("/tmp") == std::string::npos);
  CHECK(request("GET", g.nodes[1]->url("one-full/big")).status == 404);

  // Every acknowledged key reads back byte-exact through every node, the full one too:
  // what it holds, and what only the others hold, relayed from memory (none of these
  // is larger than the relay limit).
  int bad = 0;
  for (const auto& [key, value] : acked) {
    for (std::size_t i = 0; i < 3; i++) {
      Response r = request("GET", g.nodes[i]->url(key));
      if (r.status != 200 || r.body != value) {
        bad++;
        UNSCOPED_INFO("GET " << key << " via node " << i << ": " << r.status);
      }
    }
  }
  std::printf("one full node: %zu keys read back through every node\n", acked.size());
  CHECK(bad == 0);
  CHECK(g.sum("unrecoverable", "repair") == 0);
  for (auto& n : g.nodes) n->terminate();
  small.reset();
  std::filesystem::remove_all(root);
}
