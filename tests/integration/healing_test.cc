// Self-healing against the real binary: a disk that disappears under a running node, blob
// files corrupted behind the node's back, the background scrub and its pace, and the
// hint window and caps. Every wait has a deadline; the figures are printed.
#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "integration/support.h"

using namespace itest;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// Faster gossip than the default, so a killed node is convicted in ~2 s, not ~8 s.
const std::vector<std::string> fast_gossip = {"--gossip-interval-ms", "200",
                                              "--hint-interval-ms", "200"};

NodeOptions healing_options(int disks, const std::vector<std::string>& extra) {
  setenv("RINGSTORE_SECRET", "healing-test-secret", 1);
  NodeOptions o;
  o.disks = disks;
  o.extra_args = fast_gossip;
  o.extra_args.insert(o.extra_args.end(), extra.begin(), extra.end());
  return o;
}

struct Nodes : NodeGroup {
  Nodes(int n, int disks, const std::vector<std::string>& extra)
      : NodeGroup(n, healing_options(disks, extra)) {}
};

std::string sha1_hex(const std::string& s) {
  unsigned char d[20];
  unsigned int n = 0;
  EVP_Digest(s.data(), s.size(), d, &n, EVP_sha1(), nullptr);
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < n; i++) {
    out.push_back(digits[d[i] >> 4]);
    out.push_back(digits[d[i] & 15]);
  }
  return out;
}

// Paths of the blob files of `key` on a node's disks (normally exactly one).
std::vector<std::string> blob_files(const NodeProcess& n, const std::string& key) {
  std::string h = sha1_hex(key);
  std::vector<std::string> out;
  for (const std::string& d : n.disks()) {
    std::string dir = d + "/blobs/" + h.substr(0, 2) + "/" + h.substr(2, 2);
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (e.path().filename().string().rfind(h + ".", 0) == 0) out.push_back(e.path().string());
    }
  }
  return out;
}

// Flips one byte of the value inside a blob file, bypassing the node.
void flip_byte(const std::string& path, off_t at) {
  int fd = ::open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  char c = 0;
  REQUIRE(pread(fd, &c, 1, at) == 1);
  c = static_cast<char>(c ^ 0x5a);
  REQUIRE(pwrite(fd, &c, 1, at) == 1);
  ::close(fd);
}

// The first `n` bytes of a file.
std::string file_head(const std::string& path, std::size_t n) {
  std::string out(n, '\0');
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return "";
  ssize_t got = pread(fd, out.data(), n, 0);
  ::close(fd);
  out.resize(got > 0 ? static_cast<std::size_t>(got) : 0);
  return out;
}

std::string value_of(int k, std::size_t bytes = 600) {
  Prng p(static_cast<std::uint64_t>(k) * 7919 + 1);
  return p.bytes(bytes);
}

std::size_t env_size(const char* name, std::size_t def) {
  const char* v = std::getenv(name);
  if (v == nullptr) return def;
  char* end = nullptr;
  unsigned long long x = std::strtoull(v, &end, 10);
  return end != v && x > 0 ? static_cast<std::size_t>(x) : def;
}

// Either the right bytes, or a failure: never a 200 with other bytes.
void check_never_wrong(const Response& r, const std::string& want) {
  INFO("status " << r.status << " error '" << r.error << "' bytes " << r.body.size());
  bool right = r.status == 200 && r.error.empty() && r.body == want;
  bool failed = r.status != 200 || !r.error.empty();
  CHECK((right || failed));
}

}  // namespace

TEST_CASE("a disk removed under a running node is marked failed and its blobs come back from replicas",
          "[integration][disks][slow]") {
  const std::size_t keys = env_size("HEAL_KEYS", 600);
  Nodes c(3, 2, {"--repair-keys-per-s", "5000", "--scrub-files-per-s", "0"});
  REQUIRE(wait_for([&] { return c.agrees(3, 0); }, 15) >= 0);
  for (std::size_t k = 0; k < keys; k++) {
    Response r = request("PUT", c.nodes[k % 3]->url("disk-" + std::to_string(k)), value_of(static_cast<int>(k)));
    REQUIRE(r.status == 201);
  }
  REQUIRE(wait_for([&] { return c.sum("keys") == 3 * keys; }, 20) >= 0);
  REQUIRE(c.written_out());
  NodeProcess& n0 = *c.nodes[0];
  std::size_t on_lost = files_under(n0.disks()[1] + "/blobs").size();
  std::printf("node 1 holds %zu of %zu keys on the disk about to go\n", on_lost, keys);
  REQUIRE(on_lost > 0);

  auto t0 = Clock::now();
  fs::remove_all(n0.disks()[1]);
  double marked = wait_for([&] {
    json s = c.status(0);
    return s.is_object() && !s["disks"][1]["healthy"].get<bool>();
  }, 10);
  REQUIRE(marked >= 0);
  json s = c.status(0);
  CHECK(s["disks"][1]["state"] == "failed");
  CHECK(s["disks"][0]["healthy"].get<bool>());
  std::printf("the removed disk was marked failed after %.2f s (%s)\n", marked,
              s["disks"][1]["failure"].get<std::string>().c_str());
  // The node keeps serving every key meanwhile, whatever disk it lived on.
  for (std::size_t k = 0; k < keys; k += keys / 20) {
    Response r = request("GET", n0.url("disk-" + std::to_string(k)));
    REQUIRE(r.status == 200);
    REQUIRE(r.body == value_of(static_cast<int>(k)));
  }
  // And fetches what it lost by itself.
  double drained = wait_for([&] {
    json st = c.status(0);
    if (!st.is_object()) return false;
    for (const auto& d : st["repair"]["failed_disks"]) {
      if (d["disk"] == 1 && d["drained"].get<bool>()) return true;
    }
    return false;
  }, 60);
  double total_s = std::chrono::duration<double>(Clock::now() - t0).count();
  json after = c.status(0);
  INFO(after["repair"].dump());
  REQUIRE(drained >= 0);
  std::printf("refetched %zu lost blobs from replicas in %.2f s after the disk went (%.0f keys/s); "
              "repair: %s\n", on_lost, total_s, on_lost / total_s, after["repair"].dump().c_str());
  CHECK(after["repair"]["fetched"].get<std::uint64_t>() + 20 >= on_lost);
  CHECK(after["repair"]["unrecoverable"].get<std::uint64_t>() == 0);
  // Every key is on the healthy disk now: r=1 reads only this node's copy.
  REQUIRE(c.written_out());
  CHECK(files_under(n0.disks()[0] + "/blobs").size() == keys);
  for (std::size_t k = 0; k < keys; k++) {
    Response r = request("GET", n0.url("disk-" + std::to_string(k) + "?r=1"));
    INFO("key " << k);
    REQUIRE(r.status == 200);
    REQUIRE(r.body == value_of(static_cast<int>(k)));
  }
  // The directory comes back empty: re-checked and taken back into service.
  fs::create_directories(n0.disks()[1]);
  double back = wait_for([&] {
    json st = c.status(0);
    return st.is_object() && st["disks"][1]["healthy"].get<bool>();
  }, 10);
  CHECK(back >= 0);
  CHECK(request("PUT", n0.url("after-disk"), "v").status == 201);
}

TEST_CASE("a corrupted blob file is never served and is fetched again without another read",
          "[integration][bitrot]") {
  Nodes c(3, 1, {"--scrub-files-per-s", "0", "--cache-bytes", "0"});
  REQUIRE(wait_for([&] { return c.agrees(3, 0); }, 15) >= 0);
  const std::string small = value_of(1, 1000), large = value_of(2, 300 * 1024);
  REQUIRE(request("PUT", c.nodes[1]->url("rot-small"), small).status == 201);
  REQUIRE(request("PUT", c.nodes[1]->url("rot-large"), large).status == 201);
  REQUIRE(wait_for([&] { return c.sum("keys") == 6; }, 10) >= 0);
  REQUIRE(c.written_out());
  NodeProcess& n0 = *c.nodes[0];
  for (const char* key : {"rot-small", "rot-large"}) {
    auto files = blob_files(n0, key);
    REQUIRE(files.size() == 1);
    flip_byte(files[0], 100);
  }
  // r=1 asks this node's copy first: it fails its checksum, so another replica's is
  // served, or the response is cut short; never the damaged bytes.
  for (int i = 0; i < 3; i++) {
    check_never_wrong(request("GET", n0.url("rot-small?r=1")), small);
    check_never_wrong(request("GET", n0.url("rot-large?r=1")), large);
    check_never_wrong(request("GET", n0.url("rot-large?r=2")), large);
  }
  // The node fetched both again by itself: its own copy (r=1) is whole again, and its
  // repair queue has dealt with both (a read repair of the r=2 reads above may have
  // brought a copy back first: the queued fetch then finds it already good).
  json st;
  double s = wait_for([&] {
    if (request("GET", n0.url("rot-small?r=1")).body != small ||
        request("GET", n0.url("rot-large?r=1")).body != large) {
      return false;
    }
    st = c.status(0);
    return st.is_object() && st["repair"]["pending"] == 0 && st["repair"]["in_flight"] == 0;
  }, 15);
  INFO(st.dump());
  REQUIRE(s >= 0);
  CHECK(st["corrupt_reads"].get<std::uint64_t>() >= 2);
  CHECK(st["repair"]["fetched"].get<std::uint64_t>() + st["repair"]["already_good"].get<std::uint64_t>() >= 2);
  CHECK(st["repair"]["fetched"].get<std::uint64_t>() >= 1);
  REQUIRE(c.written_out());
  for (const char* key : {"rot-small", "rot-large"}) {
    auto files = blob_files(n0, key);
    REQUIRE(files.size() == 1);
    CHECK(file_head(files[0], 1000) == (std::string(key) == "rot-small" ? small : large.substr(0, 1000)));
  }
}

TEST_CASE("the scrub finds corrupted files and they are repaired without a client read",
          "[integration][bitrot][scrub]") {
  Nodes c(3, 2, {"--scrub-files-per-s", "200", "--scrub-bytes-per-s", "67108864",
                 "--cache-bytes", "0"});
  REQUIRE(wait_for([&] { return c.agrees(3, 0); }, 15) >= 0);
  const int keys = 40;
  for (int k = 0; k < keys; k++) {
    REQUIRE(request("PUT", c.nodes[k % 3]->url("scrub-" + std::to_string(k)), value_of(k, 2000)).status == 201);
  }
  REQUIRE(wait_for([&] { return c.sum("keys") == 3 * keys; }, 10) >= 0);
  REQUIRE(c.written_out());
  NodeProcess& n0 = *c.nodes[0];
  const std::vector<int> rotten = {3, 17, 31};
  for (int k : rotten) {
    auto files = blob_files(n0, "scrub-" + std::to_string(k));
    REQUIRE(files.size() == 1);
    flip_byte(files[0], 1234);
  }
  auto t0 = Clock::now();
  double s = wait_for([&] {
    json st = c.status(0);
    return st.is_object() && st["scrub"]["damaged"].get<std::uint64_t>() >= rotten.size() &&
           st["repair"]["fetched"].get<std::uint64_t>() >= rotten.size();
  }, 20);
  json st = c.status(0);
  INFO(st["scrub"].dump() << " " << st["repair"].dump());
  REQUIRE(s >= 0);
  std::printf("the scrub found %zu damaged files and they were refetched in %.2f s (scrub %s)\n",
              rotten.size(), std::chrono::duration<double>(Clock::now() - t0).count(),
              st["scrub"].dump().c_str());
  REQUIRE(c.written_out());
  for (int k : rotten) {
    auto files = blob_files(n0, "scrub-" + std::to_string(k));
    REQUIRE(files.size() == 1);
    CHECK(file_head(files[0], 2000) == value_of(k, 2000));
  }
  // No client read went to node 1 before this point; its own copies are right now.
  for (int k : rotten) CHECK(request("GET", n0.url("scrub-" + std::to_string(k) + "?r=1")).body == value_of(k, 2000));
}

TEST_CASE("the scrub keeps to its rate and resumes where it stopped", "[integration][scrub]") {
  setenv("RINGSTORE_SECRET", "healing-test-secret", 1);
  NodeOptions by_files;
  by_files.extra_args = {"--scrub-files-per-s", "20", "--scrub-bytes-per-s", "1073741824"};
  NodeProcess a(by_files);
  NodeOptions by_bytes;
  by_bytes.extra_args = {"--scrub-files-per-s", "1000", "--scrub-bytes-per-s", "262144"};
  NodeProcess b(by_bytes);
  // 400 files at 20/s: one pass takes 20 s, longer than this test looks.
  for (int k = 0; k < 400; k++) REQUIRE(request("PUT", a.url("f-" + std::to_string(k)), "x").status == 201);
  for (int k = 0; k < 40; k++) {
    REQUIRE(request("PUT", b.url("b-" + std::to_string(k)), value_of(k, 64 * 1024)).status == 201);
  }
  auto verified = [](NodeProcess& n, const char* field) {
    Response r = request("GET", n.url("_/status"));
    json j = json::parse(r.body, nullptr, false);
    return j.is_object() ? j["scrub"][field].get<std::uint64_t>() : 0;
  };
  std::uint64_t f0 = verified(a, "files_verified"), b0 = verified(b, "bytes_verified");
  auto t0 = Clock::now();
  std::this_thread::sleep_for(Millis(4000));
  double dt = std::chrono::duration<double>(Clock::now() - t0).count();
  double files_rate = (verified(a, "files_verified") - f0) / dt;
  double bytes_rate = (verified(b, "bytes_verified") - b0) / dt;
  std::printf("scrub throughput: %.1f files/s at --scrub-files-per-s 20; %.0f KiB/s at "
              "--scrub-bytes-per-s 256 KiB\n", files_rate, bytes_rate / 1024);
  CHECK(files_rate > 20 * 0.6);
  CHECK(files_rate < 20 * 1.4);
  CHECK(bytes_rate > 262144 * 0.6);
  CHECK(bytes_rate < 262144 * 1.4);
  // The position survives a restart: the next life starts where this one stopped.
  // Between two passes (a slow load lets the scrub reach the last key) the position is
  // empty for a second: wait for the next pass to be under way.
  Response r;
  std::string before;
  REQUIRE(wait_for([&] {
    r = request("GET", a.url("_/status"));
    json j = json::parse(r.body, nullptr, false);
    if (j.is_object()) before = j["scrub"]["position"].get<std::string>();
    return !before.empty();
  }, 10) >= 0);
  REQUIRE(a.terminate() == 0);
  a.restart();
  r = request("GET", a.url("_/status"));
  std::string after = json::parse(r.body)["scrub"]["position"].get<std::string>();
  INFO(before << " -> " << after);
  CHECK(after >= before);
}

TEST_CASE("hints respect their caps and window, and /_/status lists them per target",
          "[integration][hints]") {
  Nodes c(4, 1, {"--hints-max-per-target", "5", "--hint-window-ms", "4000", "--scrub-files-per-s", "0"});
  REQUIRE(wait_for([&] { return c.agrees(4, 0); }, 15) >= 0);
  std::string down_id = c.status(3)["id"].get<std::string>();
  c.nodes[3]->kill9();
  REQUIRE(wait_for([&] { return c.agrees(3, 1); }, 15) >= 0);
  auto pending_for_down = [&](std::size_t i) {
    json s = c.status(i);
    for (const auto& t : s["hints_by_target"]) {
      if (t["id"] == down_id) return t;
    }
    return json();
  };
  for (int k = 0; k < 40; k++) {
    REQUIRE(request("PUT", c.nodes[k % 3]->url("hint-" + std::to_string(k)), "v").status == 201);
  }
  // W=2 answers before the third copy (or its hint) lands: let those settle first.
  std::this_thread::sleep_for(Millis(1000));
  std::uint64_t held = 0, dropped_cap = 0;
  for (std::size_t i = 0; i < 3; i++) {
    json t = pending_for_down(i);
    json s = c.status(i);
    dropped_cap += s["hint_policy"]["dropped_cap"].get<std::uint64_t>();
    if (t.is_null()) continue;
    INFO(t.dump());
    CHECK(t["count"].get<std::uint64_t>() <= 5);
    CHECK(t["alive"] == false);
    CHECK(!t["addr"].get<std::string>().empty());
    CHECK(t["oldest_age_ms"].get<std::uint64_t>() < 60'000);
    held += t["count"].get<std::uint64_t>();
  }
  std::printf("hints held for the down node: %llu (cap 5 per holder), not stored over the cap: %llu\n",
              static_cast<unsigned long long>(held), static_cast<unsigned long long>(dropped_cap));
  CHECK(held > 0);
  CHECK(dropped_cap > 0);
  // Past the window the target gets no new hints at all.
  std::this_thread::sleep_for(Millis(3500));
  std::uint64_t window_before = 0, window_after = 0;
  for (std::size_t i = 0; i < 3; i++) window_before += c.status(i)["hint_policy"]["dropped_window"].get<std::uint64_t>();
  for (int k = 100; k < 120; k++) {
    REQUIRE(request("PUT", c.nodes[k % 3]->url("late-" + std::to_string(k)), "v").status == 201);
  }
  std::this_thread::sleep_for(Millis(1000));
  std::uint64_t held_after = 0;
  for (std::size_t i = 0; i < 3; i++) {
    json t = pending_for_down(i);
    if (!t.is_null()) held_after += t["count"].get<std::uint64_t>();
    window_after += c.status(i)["hint_policy"]["dropped_window"].get<std::uint64_t>();
  }
  CHECK(held_after == held);
  CHECK(window_after > window_before);
  // Metrics count them too.
  Response m = request("GET", c.nodes[0]->url("_/metrics"));
  CHECK(m.body.find("ringstore_hints_dropped_total{reason=\"window\"}") != std::string::npos);
  CHECK(m.body.find("ringstore_hints_pending_by_target{target=\"" + down_id + "\"}") != std::string::npos);
}

TEST_CASE("a lone node that loses a disk keeps serving the other and counts what is gone",
          "[integration][disks]") {
  setenv("RINGSTORE_SECRET", "healing-test-secret", 1);
  NodeOptions o;
  o.disks = 2;
  o.extra_args = {"--scrub-files-per-s", "0"};
  NodeProcess n(o);
  for (int k = 0; k < 40; k++) REQUIRE(request("PUT", n.url("solo-" + std::to_string(k)), "v" + std::to_string(k)).status == 201);
  auto status = [&] { return json::parse(request("GET", n.url("_/status")).body, nullptr, false); };
  REQUIRE(wait_for([&] {  // the small files written out of memory by a sync round
    json st = status();
    return st.is_object() && st["pending_files"]["files"] == 0;
  }, 10) >= 0);
  std::size_t lost = files_under(n.disks()[1] + "/blobs").size();
  REQUIRE(lost > 0);
  fs::remove_all(n.disks()[1]);
  double s = wait_for([&] {
    json st = status();
    return st.is_object() && st["repair"]["unrecoverable"].get<std::uint64_t>() == lost;
  }, 15);
  json st = status();
  INFO(lost << " files were on the disk; repair: " << st["repair"].dump());
  REQUIRE(s >= 0);
  CHECK_FALSE(st["disks"][1]["healthy"].get<bool>());
  std::size_t ok = 0, missing = 0;
  for (int k = 0; k < 40; k++) {
    Response r = request("GET", n.url("solo-" + std::to_string(k)));
    if (r.status == 200) {
      CHECK(r.body == "v" + std::to_string(k));
      ok++;
    } else {
      CHECK(r.status == 404);
      missing++;
    }
  }
  CHECK(missing == lost);
  CHECK(ok + missing == 40);
  CHECK(request("PUT", n.url("solo-new"), "w").status == 201);  // onto the healthy disk
  CHECK(request("GET", n.url("solo-new")).body == "w");
}
