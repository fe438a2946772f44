#include "blobstore/blob_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <deque>
#include <functional>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "blobstore/commit_log.h"
#include "blobstore/file_pool.h"
#include "blobstore/limits.h"
#include "ring/hash.h"
#include "support/test_server.h"

using namespace blobstore;
namespace fs = std::filesystem;

namespace {

NodeId node_a() {
  NodeId n{};
  n[0] = 0xaa;
  return n;
}

Version ver(std::uint64_t hlc) { return Version{hlc << 16, node_a()}; }

struct Store {
  testing::TempDir dir;
  std::unique_ptr<BlobStore> store;
  FaultHook fault;
  std::uint64_t pool_cool_ms = limits::pooled_file_cool_ms;
  bool stock_files = false;  // most tests count the files in tmp/
  std::uint64_t linger_ms = limits::background_linger_ms;
  SyncPolicy sync;
  std::uint64_t commit_log_bytes = limits::commit_log_bytes;
  ScrubConfig scrub{0, 0};

  explicit Store(FaultHook f = nullptr, std::uint64_t cool_ms = limits::pooled_file_cool_ms)
      : fault(std::move(f)), pool_cool_ms(cool_ms) {
    reopen();
  }
  std::vector<std::string> disks() const { return {dir.path() + "/d1", dir.path() + "/d2"}; }
  void reopen() {
    store.reset();
    Options o;
    o.data_dir = dir.path() + "/data";
    o.disks = disks();
    o.fault = fault;
    o.pool_cool_ms = pool_cool_ms;
    o.stock_files = stock_files;
    o.background_linger_ms = linger_ms;
    o.sync = sync;
    o.commit_log_bytes = commit_log_bytes;
    o.scrub = scrub;
    auto s = BlobStore::open(o);
    REQUIRE(s.is_ok());
    store = std::move(s.value());
  }
  // Runs completions the way the node's loop would until `done` holds (10 s at most).
  bool run_until(const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      store->run_completions();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return done();
  }
  // Waits for one callback.
  Status wait(bool& ran, Status& st) {
    REQUIRE(run_until([&] { return ran; }));
    return st;
  }
  Status put(const std::string& key, const std::string& value, Version v, bool* applied = nullptr,
             const std::function<void(BlobWriter&)>& mark = nullptr) {
    auto w = store->begin_write(key, "text/plain", 0);
    REQUIRE(w.is_ok());
    if (mark) mark(*w.value());
    for (std::size_t off = 0; off < value.size(); off += 7) {
      REQUIRE(w.value()->append(value.data() + off, std::min<std::size_t>(7, value.size() - off)).is_ok());
    }
    bool ran = false;
    Status st;
    Status s = store->commit(std::move(w.value()), v, [&](Status r, CommitResult res) {
      ran = true;
      st = std::move(r);
      if (applied) *applied = res.applied;
    });
    if (!s.is_ok()) return s;
    return wait(ran, st);
  }
  Status del(const std::string& key, Version v) {
    bool ran = false;
    Status st;
    Status s = store->remove(key, v, 0, [&](Status r, CommitResult) {
      ran = true;
      st = std::move(r);
    });
    if (!s.is_ok()) return s;
    return wait(ran, st);
  }
  // The value, "<absent>", "<tombstone>" or "<error: ...>".
  std::string get(const std::string& key) {
    auto h = store->open_read(key);
    if (!h.is_ok()) {
      if (h.status().code() == Code::not_found) return "<absent>";
      return "<error: " + h.status().message() + ">";
    }
    if (h.value().meta.tombstone) return "<tombstone>";
    auto body = store->read_verified(h.value());
    if (!body.is_ok()) return "<error: " + body.status().message() + ">";
    return body.value();
  }
  std::size_t files_under(const std::string& sub) {
    std::size_t n = 0;
    for (const auto& d : disks()) {
      if (!fs::exists(d + "/" + sub)) continue;
      for (const auto& e : fs::recursive_directory_iterator(d + "/" + sub)) n += e.is_regular_file();
    }
    return n;
  }
  std::size_t pooled() const {
    std::size_t n = 0;
    for (std::size_t i = 0; i < disks().size(); i++) n += store->pooled_files(static_cast<int>(i));
    return n;
  }
  // The inode of the file holding `key` at `v`, or 0.
  ino_t inode_of(const std::string& key, Version v) const {
    for (const auto& d : disks()) {
      struct stat st;
      if (stat((d + "/" + blob_relative_path(key, v)).c_str(), &st) == 0) return st.st_ino;
    }
    return 0;
  }
};

}  // namespace

// A sync round every hour: in a test's time the small files stay in memory.
constexpr std::uint64_t no_round_ms = 3'600'000;

TEST_CASE("a blob round-trips with its MD5, content type and version", "[blobstore]") {
  Store s;
  REQUIRE(s.put("k1", "hello world", ver(1)).is_ok());
  auto h = s.store->open_read("k1");
  REQUIRE(h.is_ok());
  CHECK(md5_hex(h.value().meta.md5) == "5eb63bbbe01eeed093cb22bb8f5acdc3");
  CHECK(h.value().meta.content_type == "text/plain");
  CHECK(h.value().meta.version == ver(1));
  CHECK(h.value().meta.size == 11);
  CHECK(s.get("k1") == "hello world");
  CHECK(s.get("nope") == "<absent>");
  CHECK(s.store->live_keys() == 1);
  // Durable in the commit log, its file not written yet: served from memory.
  CHECK(s.files_under("tmp") == 0);
  CHECK(s.files_under("blobs") == 0);
  CHECK(s.store->pending_files() == 1);
  CHECK(h.value().held() != nullptr);
  s.store->flush();  // a sync round writes it out
  CHECK(s.store->pending_files() == 0);
  CHECK(s.store->pending_bytes() == 0);
  CHECK(s.files_under("tmp") == 0);
  CHECK(s.files_under("blobs") == 1);
  CHECK(s.store->committer().files_written_out() == 1);
  auto again = s.store->open_read("k1");
  REQUIRE(again.is_ok());
  CHECK(again.value().held() == nullptr);
  CHECK(again.value().fd() >= 0);
  CHECK(s.get("k1") == "hello world");
}

TEST_CASE("a small version superseded before its sync round never becomes a file",
          "[blobstore]") {
  Store s;
  REQUIRE(s.put("k", "first", ver(1)).is_ok());
  REQUIRE(s.put("k", "second", ver(2)).is_ok());
  CHECK(s.store->pending_files() == 1);  // "first" left without a file
  CHECK(s.get("k") == "second");
  REQUIRE(s.del("k", ver(3)).is_ok());
  CHECK(s.store->pending_files() == 0);
  CHECK(s.store->committer().files_never_written() == 2);
  REQUIRE(s.put("other", "stays", ver(1)).is_ok());
  s.store->flush();
  CHECK(s.store->committer().files_written_out() == 1);
  CHECK(s.files_under("blobs") == 1);
  CHECK(s.files_under("tmp") == 0);
  CHECK(s.get("k") == "<tombstone>");
  CHECK(s.get("other") == "stays");
  // Reopened (a clean stop checkpoints the log), nothing comes back.
  s.reopen();
  CHECK(s.store->replayed_files() == 0);
  CHECK(s.get("k") == "<tombstone>");
  CHECK(s.get("other") == "stays");
}

TEST_CASE("last writer wins and older writes are ignored", "[blobstore]") {
  Store s;
  bool applied = false;
  REQUIRE(s.put("k", "v2", ver(2), &applied).is_ok());
  CHECK(applied);
  REQUIRE(s.put("k", "v1", ver(1), &applied).is_ok());
  CHECK_FALSE(applied);
  CHECK(s.get("k") == "v2");
  REQUIRE(s.put("k", "v2-again", ver(2), &applied).is_ok());  // same version: idempotent
  CHECK_FALSE(applied);
  REQUIRE(s.put("k", "v3", ver(3), &applied).is_ok());
  CHECK(applied);
  CHECK(s.get("k") == "v3");
  s.store->flush();
  CHECK(s.files_under("blobs") == 1);  // v3 only: v2 was superseded before it had a file
  REQUIRE(s.del("k", ver(4)).is_ok());
  CHECK(s.get("k") == "<tombstone>");
  CHECK(s.store->live_keys() == 0);
  CHECK(s.files_under("blobs") == 0);  // the value's file went; a tombstone is a row
  REQUIRE(s.put("k", "old", ver(3), &applied).is_ok());  // cannot resurrect
  CHECK(s.get("k") == "<tombstone>");
  s.reopen();
  CHECK(s.get("k") == "<tombstone>");
  CHECK(s.store->live_keys() == 0);
  REQUIRE(s.put("k", "v5", ver(5), &applied).is_ok());  // a newer write replaces it
  CHECK(applied);
  CHECK(s.get("k") == "v5");
  s.store->flush();
  CHECK(s.files_under("blobs") == 1);
}

TEST_CASE("writes submitted together commit together", "[blobstore]") {
  Store s;
  int done = 0;
  for (int i = 0; i < 200; i++) {
    auto w = s.store->begin_write("key" + std::to_string(i), "", 0);
    REQUIRE(w.is_ok());
    std::string v = "value" + std::to_string(i);
    REQUIRE(w.value()->append(v.data(), v.size()).is_ok());
    REQUIRE(s.store->commit(std::move(w.value()), ver(1), [&](Status st, CommitResult r) {
      CHECK(st.is_ok());
      CHECK(r.applied);
      done++;
    }).is_ok());
  }
  // Only once all 200 are in: a tombstone in the same batch as key0's write would win
  // over it there (last writer wins within a batch too), and that write would report
  // not applied, which happens whenever the committer is slow to take the first write.
  CHECK(s.run_until([&] { return done == 200; }));
  bool ran = false;
  Status st;
  REQUIRE(s.store->remove("key0", ver(2), 0, [&](Status r, CommitResult) { ran = true; st = r; }).is_ok());
  CHECK(s.wait(ran, st).is_ok());
  CHECK(s.get("key7") == "value7");
  CHECK(s.get("key0") == "<tombstone>");
  CHECK(s.store->live_keys() == 199);
}

TEST_CASE("background writes wait for company, and a foreground write ends the wait", "[blobstore]") {
  Store s;
  s.linger_ms = 60'000;  // far longer than the test: only company ends the wait
  s.reopen();
  int done = 0;
  auto background_put = [&](const std::string& key) {
    auto w = s.store->begin_write(key, "", 0);
    REQUIRE(w.is_ok());
    REQUIRE(w.value()->append("v", 1).is_ok());
    w.value()->set_background();
    REQUIRE(s.store->commit(std::move(w.value()), ver(1), [&](Status st, CommitResult r) {
      CHECK(st.is_ok());
      CHECK(r.applied);
      done++;
    }).is_ok());
  };
  auto settle = [&](int ms) {
    for (int i = 0; i < ms; i++) {
      s.store->run_completions();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  std::uint64_t batches = s.store->committer().batches();
  static_assert(limits::syncfs_batch_min == 3, "the steps below make a batch of three");
  background_put("bg0");
  background_put("bg1");
  settle(300);
  CHECK(done == 0);  // two are fewer than one syncfs() is worth: they wait
  background_put("bg2");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (done < 3 && std::chrono::steady_clock::now() < deadline) settle(1);
  CHECK(done == 3);
  CHECK(s.store->committer().batches() == batches + 1);
  CHECK(s.get("bg1") == "v");

  background_put("bg3");
  settle(100);
  CHECK(done == 3);
  CHECK(s.put("fg", "x", ver(1)).is_ok());  // a client's write takes the waiting one along
  settle(50);
  CHECK(done == 4);
  CHECK(s.store->committer().batches() == batches + 2);
  CHECK(s.get("bg3") == "v");
}

TEST_CASE("the periodic sync mode acknowledges writes unsynced and syncs them within a period",
          "[blobstore]") {
  Store s;
  const Committer& always = s.store->committer();
  std::uint64_t before = always.batch_syncs();
  REQUIRE(s.put("a", "1", ver(1)).is_ok());
  CHECK(always.batch_syncs() > before);  // the default syncs every batch
  CHECK(always.periodic_syncs() == 0);

  s.sync.mode = SyncMode::periodic;
  s.sync.period_ms = 100;
  s.reopen();
  const Committer& c = s.store->committer();
  for (int i = 0; i < 5; i++) REQUIRE(s.put("k" + std::to_string(i), "v", ver(2)).is_ok());
  REQUIRE(s.del("a", ver(3)).is_ok());
  CHECK(c.batch_syncs() == 0);
  CHECK(s.get("k4") == "v");
  CHECK(s.get("a") == "<tombstone>");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (c.periodic_syncs() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK(c.periodic_syncs() > 0);
  CHECK(c.periodic_sync_errors() == 0);
  // Nothing written since: the next periods sync nothing.
  std::uint64_t synced = c.periodic_syncs();
  std::this_thread::sleep_for(std::chrono::milliseconds(350));
  CHECK(c.periodic_syncs() == synced);
  CHECK(c.batch_syncs() == 0);

  // What the index holds survives a restart, in either mode.
  s.sync = SyncPolicy{};
  s.reopen();
  CHECK(s.get("k0") == "v");
  CHECK(s.get("a") == "<tombstone>");
}

TEST_CASE("the always mode logs small writes, and after a power cut the log restores their files",
          "[blobstore]") {
  Store s;
  s.sync.period_ms = 60'000;  // no sync round while the test runs: the records stay
  s.reopen();
  const std::string log = s.dir.path() + "/data/commit.log";
  std::uint64_t syncs = s.store->committer().batch_syncs();
  std::map<std::string, std::string> values;
  for (int i = 0; i < 10; i++) {
    values["k" + std::to_string(i)] = "value " + std::to_string(i) + std::string(i * 100, 'x');
    REQUIRE(s.put("k" + std::to_string(i), values["k" + std::to_string(i)], ver(1)).is_ok());
  }
  REQUIRE(s.put("k1", "newer", ver(2)).is_ok());  // the older record is not replayed
  values["k1"] = "newer";
  REQUIRE(s.del("k3", ver(2)).is_ok());
  values.erase("k3");
  const std::string big(limits::small_value_bytes_max + 1000, 'b');  // synced in place
  REQUIRE(s.put("big", big, ver(1)).is_ok());
  CHECK(s.store->committer().batch_syncs() >= syncs + 12);  // the tombstone syncs no file
  CHECK(s.store->committer().log_checkpoints() == 0);
  CHECK(fs::file_size(log) > CommitLog::header_bytes + 10 * CommitLog::record_fixed_bytes);

  // A power cut now: the log and the index are durable, the small files need not be.
  // The copy is the log as it is; the clean stop below checkpoints it.
  fs::copy_file(log, log + ".cut");
  std::vector<std::string> paths;
  for (const auto& [k, v] : values) paths.push_back(s.store->blob_path(s.store->lookup(k).value()));
  s.store.reset();
  fs::rename(log + ".cut", log);
  for (std::size_t i = 0; i < paths.size(); i++) {
    if (i % 2 == 0) {
      fs::resize_file(paths[i], 0);  // the bytes never reached the disk
    } else {
      fs::remove(paths[i]);  // nor the name
    }
  }
  fs::remove_all(fs::path(paths[1]).parent_path());  // nor a new directory

  s.reopen();
  // k0..k9 at their last version but k3, whose tombstone is its index row alone.
  CHECK(s.store->replayed_files() == 9);
  for (const auto& [k, v] : values) CHECK(s.get(k) == v);
  CHECK(s.get("k3") == "<tombstone>");
  CHECK(s.get("big") == big);
  // The replay synced what it wrote and dropped the records.
  s.reopen();
  CHECK(s.store->replayed_files() == 0);

  // Without the log the same loss is a damaged copy: the test above needs the replay.
  s.commit_log_bytes = 0;
  s.reopen();
  fs::resize_file(s.store->blob_path(s.store->lookup("k0").value()), 0);
  CHECK(s.get("k0").rfind("<error", 0) == 0);
}

// A power cut after which the index is as copied to DATA/index.db{,-wal}.cut earlier
// and the commit log as it is now: the clean stop's sync and checkpoint are undone.
void power_cut_to_index_copy(Store& s) {
  const std::string data = s.dir.path() + "/data";
  const std::string log = data + "/commit.log";
  fs::copy_file(log, log + ".cut");
  s.store.reset();
  fs::rename(log + ".cut", log);
  for (const char* f : {"/index.db", "/index.db-wal"}) {
    fs::remove(data + f);
    fs::rename(data + f + ".cut", data + f);
  }
  fs::remove(data + "/index.db-shm");
  s.reopen();
}

TEST_CASE("the commit log is the index's write-ahead record: rows an unsynced index commit lost come back",
          "[blobstore]") {
  Store s;
  s.sync.period_ms = no_round_ms;
  s.reopen();
  const std::string data = s.dir.path() + "/data";
  for (int i = 0; i < 6; i++) REQUIRE(s.put("k" + std::to_string(i), "one " + std::to_string(i), ver(1)).is_ok());
  s.store->flush();  // a sync round: the index and the files are durable up to here
  // The index as a power cut after this point could leave it: its WAL as synced.
  for (const char* f : {"/index.db", "/index.db-wal"}) fs::copy_file(data + f, data + f + ".cut");

  const std::uint64_t checkpoints = s.store->committer().log_checkpoints();
  std::map<std::string, std::string> want;
  for (int i = 0; i < 6; i++) want["k" + std::to_string(i)] = "one " + std::to_string(i);
  REQUIRE(s.put("k1", "two", ver(2)).is_ok());  // an overwrite
  want["k1"] = "two";
  REQUIRE(s.del("k2", ver(2)).is_ok());  // a delete: its tombstone is only a row
  want["k2"] = "<tombstone>";
  REQUIRE(s.put("new", "fresh", ver(2)).is_ok());  // a key the old index never had
  want["new"] = "fresh";
  NodeId owner{};
  owner[0] = 0x42;
  REQUIRE(s.put("h", "hinted", ver(2), nullptr, [&](BlobWriter& w) { w.set_hint_for(owner); }).is_ok());
  want["h"] = "hinted";
  // None of these commits synced the index: the log made them durable.
  CHECK(s.store->committer().log_checkpoints() == checkpoints);
  power_cut_to_index_copy(s);
  CHECK(s.store->replayed_rows() == 4);
  for (const auto& [k, v] : want) CHECK(s.get(k) == v);
  auto h = s.store->lookup("h");
  REQUIRE(h.is_ok());
  CHECK(h.value().is_hint);
  CHECK(h.value().hint_for == owner);
  CHECK(s.store->lookup("k1").value().version == ver(2));
  // The replay synced the rows and dropped the records: a second start replays nothing.
  s.reopen();
  CHECK(s.store->replayed_rows() == 0);
  for (const auto& [k, v] : want) CHECK(s.get(k) == v);
}

TEST_CASE("a sync round keeps the records of a batch that has not committed its index rows yet",
          "[blobstore]") {
  std::function<void()> at_synced;  // runs once on the committer thread, before the COMMIT
  Store s([&](WriteStep step) {
    if (step == WriteStep::synced && at_synced) {
      auto f = std::move(at_synced);
      at_synced = nullptr;
      f();
    }
    return FaultAction::proceed;
  });
  s.sync.period_ms = no_round_ms;
  s.reopen();
  const std::string data = s.dir.path() + "/data";
  REQUIRE(s.put("a", "one", ver(1)).is_ok());
  at_synced = [&] {
    // A round while "b" is in the log but not in the index, and then a power cut: the
    // index as that round made it durable.
    s.store->flush();
    for (const char* f : {"/index.db", "/index.db-wal"}) fs::copy_file(data + f, data + f + ".cut");
  };
  REQUIRE(s.put("b", "two", ver(1)).is_ok());
  REQUIRE(at_synced == nullptr);
  power_cut_to_index_copy(s);
  CHECK(s.store->replayed_rows() == 1);
  CHECK(s.get("a") == "one");
  CHECK(s.get("b") == "two");
}

TEST_CASE("a full commit log takes a sync round and goes on, lap after lap", "[blobstore]") {
  Store s;
  s.sync.period_ms = 60'000;
  s.commit_log_bytes = 64 * 1024;  // the smallest: a dozen 5 KiB records fill it
  s.store.reset();
  fs::remove(s.dir.path() + "/data/commit.log");  // a log keeps the size it was made with
  s.reopen();
  for (int i = 0; i < 60; i++) {
    REQUIRE(s.put("k" + std::to_string(i % 20), std::string(5000, static_cast<char>('a' + i % 26)),
                  ver(static_cast<std::uint64_t>(1 + i))).is_ok());
  }
  CHECK(s.store->committer().log_checkpoints() >= 3);
  for (int i = 40; i < 60; i++) {
    CHECK(s.get("k" + std::to_string(i % 20)) == std::string(5000, static_cast<char>('a' + i % 26)));
  }
  s.reopen();
  CHECK(s.get("k5") == std::string(5000, static_cast<char>('a' + 45 % 26)));
}

TEST_CASE("the commit log replays the records after its checkpoint, in order, and no further",
          "[blobstore]") {
  testing::TempDir dir;
  const std::string path = dir.path() + "/commit.log";
  std::deque<std::string> keys;  // the entries' views point here
  auto entry = [&](std::uint64_t i, std::string* file) {
    *file = "file " + std::to_string(i) + std::string(i % 7 * 300, 'f');
    keys.push_back("key" + std::to_string(i));
    return CommitLog::Entry{"/disk", keys.back(), ver(i), *file};
  };
  auto replayed = [&](std::vector<std::uint64_t>* hlcs) {
    auto log = CommitLog::open(path, 64 * 1024);
    REQUIRE(log.is_ok());
    hlcs->clear();
    REQUIRE(log.value()->replay([&](const CommitLog::Entry& e) {
      std::string f;
      CommitLog::Entry want = entry(e.version.hlc >> 16, &f);
      CHECK(e.key == want.key);
      CHECK(e.disk_path == "/disk");
      CHECK(e.file == f);
      hlcs->push_back(e.version.hlc >> 16);
    }).is_ok());
    return std::move(log.value());
  };
  std::vector<std::uint64_t> got;
  std::uint64_t next = 1, checkpointed = 1;
  {
    // A new log keeps its first records through a crash, before any checkpoint.
    auto log = replayed(&got);
    CHECK(got.empty());
    std::string f;
    REQUIRE(log->append({entry(next++, &f)}).is_ok());
  }
  {
    auto log = replayed(&got);
    CHECK(got == std::vector<std::uint64_t>{1});
    // Many laps of the 64 KiB ring, a checkpoint every few batches.
    for (int batch = 0; batch < 200; batch++) {
      std::vector<std::string> files(3);
      std::vector<CommitLog::Entry> entries;
      for (auto& f : files) entries.push_back(entry(next++, &f));
      if (!log->fits(entries)) {
        log->checkpoint(log->head()).is_ok();
        checkpointed = next - 3;
      }
      REQUIRE(log->fits(entries));
      REQUIRE(log->append(entries).is_ok());
      if (batch % 5 == 4 && batch < 195) {
        REQUIRE(log->checkpoint(log->head()).is_ok());
        checkpointed = next;
      }
    }
    CHECK(log->records() == 600);
  }
  auto log = replayed(&got);
  REQUIRE(!got.empty());
  CHECK(got.front() == checkpointed);
  CHECK(got.back() == next - 1);
  CHECK(got.size() == next - checkpointed);
  log.reset();

  // A torn record ends the replay there.
  {
    std::FILE* f = std::fopen(path.c_str(), "r+b");
    REQUIRE(f != nullptr);
    auto l = replayed(&got);
    REQUIRE(l->checkpoint(l->head()).is_ok());
    std::vector<std::string> files(3);
    std::vector<CommitLog::Entry> entries;
    for (auto& file : files) entries.push_back(entry(next++, &file));
    CommitLog::Mark before = l->head();
    REQUIRE(l->append(entries).is_ok());
    std::fseek(f, static_cast<long>(CommitLog::header_bytes + before.pos % (64 * 1024) +
                                    CommitLog::record_fixed_bytes + entries[0].file.size() + 60),
               SEEK_SET);
    std::fputc('!', f);  // inside the second record
    std::fclose(f);
  }
  replayed(&got);
  REQUIRE(got.size() == 1);
  CHECK(got[0] == next - 3);

  // Random bytes over the whole ring: the replay takes at most what still checks out,
  // and never more than the records there were.
  {
    auto l = replayed(&got);
    REQUIRE(l->checkpoint(l->head()).is_ok());
    std::FILE* f = std::fopen(path.c_str(), "r+b");
    REQUIRE(f != nullptr);
    std::fseek(f, static_cast<long>(CommitLog::header_bytes), SEEK_SET);
    std::uint32_t x = 12345;
    for (int i = 0; i < 64 * 1024; i++) {
      x = x * 1103515245u + 12345u;
      std::fputc(static_cast<int>(x >> 24), f);
    }
    std::fclose(f);
  }
  replayed(&got);
  CHECK(got.empty());

  // A record that ends exactly at the ring's end: the next one, in the same append,
  // starts the next lap at the ring's start.
  {
    const std::string lap_path = dir.path() + "/lap.log";
    auto l = CommitLog::open(lap_path, 64 * 1024);
    REQUIRE(l.is_ok());
    std::deque<std::string> files;
    auto sized = [&](std::uint64_t i, std::size_t record) {
      keys.push_back("k");
      files.push_back(std::string(record - CommitLog::record_fixed_bytes - 5 - 1, 'z'));
      return CommitLog::Entry{"/disk", keys.back(), ver(i), files.back()};
    };
    std::vector<CommitLog::Entry> first, second;
    for (int i = 0; i < 4; i++) first.push_back(sized(1 + i, 8192));
    REQUIRE(l.value()->append(first).is_ok());
    REQUIRE(l.value()->checkpoint(l.value()->head()).is_ok());
    for (int i = 0; i < 4; i++) second.push_back(sized(5 + i, 8192));  // up to 64 KiB exactly
    second.push_back(sized(9, 1000));
    REQUIRE(l.value()->fits(second));
    REQUIRE(l.value()->append(second).is_ok());
    l.value().reset();
    auto again = CommitLog::open(lap_path, 64 * 1024);
    REQUIRE(again.is_ok());
    std::vector<std::uint64_t> seen;
    REQUIRE(again.value()->replay([&](const CommitLog::Entry& e) {
      seen.push_back(e.version.hlc >> 16);
    }).is_ok());
    CHECK(seen == std::vector<std::uint64_t>{5, 6, 7, 8, 9});
  }

  // A damaged header refuses to open, with a reason.
  {
    std::FILE* f = std::fopen(path.c_str(), "r+b");
    std::fputc('X', f);
    std::fclose(f);
  }
  auto bad = CommitLog::open(path, 64 * 1024);
  REQUIRE(!bad.is_ok());
  CHECK(bad.status().message().find("header") != std::string::npos);
}

TEST_CASE("a failure or crash at any step of the write path leaves the key absent or whole",
          "[blobstore]") {
  const WriteStep steps[] = {WriteStep::written, WriteStep::renamed, WriteStep::synced,
                             WriteStep::indexed};
  for (FaultAction action : {FaultAction::fail, FaultAction::crash}) {
    for (WriteStep step : steps) {
      for (bool overwrite : {false, true}) {
        INFO("action " << static_cast<int>(action) << " step " << static_cast<int>(step)
                       << " overwrite " << overwrite);
        bool armed = false;
        Store s([&](WriteStep at) { return armed && at == step ? action : FaultAction::proceed; });
        if (overwrite) REQUIRE(s.put("k", "old value", ver(1)).is_ok());
        armed = true;
        Status st = s.put("k", std::string(100'000, 'n'), ver(2));
        CHECK_FALSE(st.is_ok());  // never acknowledged
        armed = false;
        s.fault = nullptr;
        s.reopen();  // as after a restart
        std::string got = s.get("k");
        std::string before = overwrite ? "old value" : "<absent>";
        if (step == WriteStep::indexed) {
          CHECK(got == std::string(100'000, 'n'));  // committed before the fault
        } else {
          CHECK(got == before);
        }
        // What a crash leaves in tmp/ is reused, never read: every file there is pooled.
        CHECK(s.files_under("tmp") == s.pooled());
        // The store still works after the restart.
        REQUIRE(s.put("k", "new", ver(3)).is_ok());
        CHECK(s.get("k") == "new");
      }
    }
  }
}

TEST_CASE("an upload abandoned midway leaves nothing behind", "[blobstore]") {
  Store s;
  {
    auto w = s.store->begin_write("k", "", 0);
    REQUIRE(w.is_ok());
    REQUIRE(w.value()->append("partial", 7).is_ok());
    CHECK(s.files_under("tmp") == 0);  // a small body stays in memory
    std::string more(limits::small_value_bytes_max, 'm');
    REQUIRE(w.value()->append(more.data(), more.size()).is_ok());
    CHECK(s.files_under("tmp") == 1);  // a larger one spills to a temp file
  }
  CHECK(s.files_under("tmp") == 0);
  CHECK(s.get("k") == "<absent>");
}

TEST_CASE("a file pool holds files up to its count and its blocks, and a taken file frees its share",
          "[blobstore]") {
  // Two disks; at most 3 files and 12 KiB of whole 4 KiB blocks per disk; 100 ms cooling.
  FilePool pool(2, 3, 12 * 1024, 100);
  CHECK(pool.wants(0, 4096));
  CHECK_FALSE(pool.wants(0, limits::pooled_file_bytes_max + 1));
  pool.add(0, "a", 4097, 1000);  // two blocks
  CHECK(pool.wants(0, 4096));
  CHECK_FALSE(pool.wants(0, 4097));  // 2 + 2 blocks > 3
  pool.add(0, "b", 1, 1000);
  CHECK_FALSE(pool.wants(0, 1));  // 12 KiB held
  CHECK(pool.wants(0, 0));        // an empty file holds no block
  CHECK(pool.wants(1, 4096));     // each disk has its own budget
  pool.add_ready(0, "c", 0);
  CHECK_FALSE(pool.wants(0, 0));  // three files
  CHECK(pool.size(0) == 3);
  // The ready one first; the others only once they have cooled, oldest first.
  CHECK(pool.take(0, 1000).path == "c");
  CHECK(pool.take(0, 1099).path.empty());
  FilePool::Taken t = pool.take(0, 1100);
  CHECK(t.path == "a");
  CHECK(t.bytes == 4097);
  CHECK(pool.wants(0, 8192));  // a's two blocks are free again
  CHECK_FALSE(pool.wants(0, 8193));
}

TEST_CASE("orphan temp files from a crash are reused when small and removed when large",
          "[blobstore]") {
  Store s;
  std::string small = s.disks()[1] + "/tmp/12345-1.tmp";
  std::string large = s.disks()[1] + "/tmp/12345-2.tmp";
  {
    std::FILE* f = std::fopen(small.c_str(), "w");
    REQUIRE(f);
    std::fputs(std::string(5000, 'j').c_str(), f);  // longer than what will be written
    std::fclose(f);
    f = std::fopen(large.c_str(), "w");
    REQUIRE(f);
    std::fputs(std::string(limits::pooled_file_bytes_max + 1, 'j').c_str(), f);
    std::fclose(f);
  }
  s.reopen();
  CHECK_FALSE(fs::exists(large));
  CHECK(fs::exists(small));
  CHECK(s.pooled() == 1);
  // Every key lands on disk 1 or 2; keep writing until one takes the pooled file.
  int written = 0;
  for (; written < 64 && s.pooled() == 1; written++) {
    REQUIRE(s.put("k" + std::to_string(written), "short", ver(1)).is_ok());
    s.store->flush();  // its file is written out: from the pool when the disk is right
  }
  CHECK(s.pooled() == 0);
  CHECK(s.files_under("tmp") == 0);
  for (int i = 0; i < written; i++) CHECK(s.get("k" + std::to_string(i)) == "short");
}

TEST_CASE("an overwrite reuses the superseded file once it has cooled", "[blobstore]") {
  for (std::uint64_t cool_ms : {std::uint64_t{0}, limits::pooled_file_cool_ms}) {
    INFO("cool_ms " << cool_ms);
    Store s(nullptr, cool_ms);
    REQUIRE(s.put("k", std::string(3000, 'a'), ver(1)).is_ok());
    s.store->flush();
    ino_t old_inode = s.inode_of("k", ver(1));
    REQUIRE(old_inode != 0);
    REQUIRE(s.del("k", ver(2)).is_ok());  // v1 is superseded and pooled
    CHECK(s.pooled() == 1);
    CHECK(s.files_under("blobs") == 0);
    // A write to the pooled file's disk takes it when it has cooled, else a new inode.
    bool reused = false;
    for (int i = 0; i < 64 && !reused; i++) {
      std::string key = "j" + std::to_string(i);
      REQUIRE(s.put(key, "c", ver(3)).is_ok());
      s.store->flush();
      CHECK(s.get(key) == "c");  // truncated: nothing of the old 3,000 bytes is left
      reused = s.inode_of(key, ver(3)) == old_inode;
    }
    CHECK(reused == (cool_ms == 0));
    CHECK(s.get("k") == "<tombstone>");
  }
}

TEST_CASE("a damaged blob is an error, never served", "[blobstore]") {
  Store s;
  std::string value(5000, 'x');
  REQUIRE(s.put("k", value, ver(1)).is_ok());
  s.store->flush();
  std::string path;
  for (const auto& d : s.disks()) {
    std::string p = d + "/" + blob_relative_path("k", ver(1));
    if (fs::exists(p)) path = p;
  }
  REQUIRE(!path.empty());
  SECTION("a flipped byte fails the checksum") {
    int fd = ::open(path.c_str(), O_WRONLY);
    REQUIRE(pwrite(fd, "y", 1, 1234) == 1);
    ::close(fd);
    CHECK(s.get("k").rfind("<error: checksum", 0) == 0);
    CHECK(s.store->corrupt_reads() == 1);
  }
  SECTION("a truncated file is caught at open") {
    REQUIRE(truncate(path.c_str(), 100) == 0);
    CHECK(s.get("k").rfind("<error: blob file has the wrong size", 0) == 0);
  }
}

TEST_CASE("rebuild recreates the index from the disks alone", "[blobstore]") {
  Store s;
  NodeId id = s.store->node_id();
  for (int i = 0; i < 30; i++) REQUIRE(s.put("k" + std::to_string(i), "v1-" + std::to_string(i), ver(1)).is_ok());
  for (int i = 0; i < 10; i++) REQUIRE(s.put("k" + std::to_string(i), "v2-" + std::to_string(i), ver(2)).is_ok());
  for (int i = 20; i < 25; i++) REQUIRE(s.del("k" + std::to_string(i), ver(3)).is_ok());
  s.store.reset();
  for (const char* f : {"index.db", "index.db-wal", "index.db-shm"}) fs::remove(s.dir.path() + "/data/" + f);
  // A stale older version left behind (as by a crash before its unlink) must lose.
  auto r = rebuild_index(s.dir.path() + "/data", s.disks());
  REQUIRE(r.is_ok());
  // A tombstone has no file: its key is gone here, and so is the value it deleted (the
  // other replicas' tombstones come back through anti-entropy).
  CHECK(r.value().keys == 25);
  CHECK(r.value().skipped == 0);
  s.reopen();
  for (int i = 0; i < 30; i++) {
    std::string k = "k" + std::to_string(i);
    if (i < 10) CHECK(s.get(k) == "v2-" + std::to_string(i));
    else if (i >= 20 && i < 25) CHECK(s.get(k) == "<absent>");
    else CHECK(s.get(k) == "v1-" + std::to_string(i));
  }
  CHECK(s.store->live_keys() == 25);
  CHECK(s.store->node_id() != id);  // the id lived only in the deleted index
}

TEST_CASE("rebuild writes out the small files that only the commit log holds", "[blobstore]") {
  bool crash = false;
  Store s([&](WriteStep at) { return crash && at == WriteStep::indexed ? FaultAction::crash : FaultAction::proceed; });
  s.sync.period_ms = no_round_ms;
  s.reopen();
  for (int i = 0; i < 10; i++) REQUIRE(s.put("k" + std::to_string(i), "v1-" + std::to_string(i), ver(1)).is_ok());
  REQUIRE(s.put("k0", "v2-0", ver(2)).is_ok());
  crash = true;
  CHECK_FALSE(s.put("last", "indexed, then the power went", ver(1)).is_ok());
  s.fault = nullptr;
  auto k5 = s.store->lookup("k5");
  REQUIRE(k5.is_ok());
  std::string k5_path = s.store->blob_path(k5.value());
  s.store.reset();  // after the "power cut" nothing more reaches the disks
  CHECK(s.files_under("blobs") == 0);
  // As if a round had renamed k5's file into place and the power went before its sync.
  fs::create_directories(fs::path(k5_path).parent_path());
  { std::ofstream(k5_path) << "v1"; }
  for (const char* f : {"index.db", "index.db-wal", "index.db-shm"}) fs::remove(s.dir.path() + "/data/" + f);
  auto r = rebuild_index(s.dir.path() + "/data", s.disks());
  REQUIRE(r.is_ok());
  CHECK(r.value().from_log == 12);  // both versions of k0, k1..k9 (k5 made whole) and "last"
  CHECK(r.value().keys == 11);
  CHECK(r.value().skipped == 0);
  CHECK(s.files_under("blobs") == 11);  // k0's first version lost to its second
  s.reopen();
  CHECK(s.get("k0") == "v2-0");
  for (int i = 1; i < 10; i++) CHECK(s.get("k" + std::to_string(i)) == "v1-" + std::to_string(i));
  CHECK(s.get("last") == "indexed, then the power went");
}

TEST_CASE("values stay readable and whole while sync rounds write them out", "[blobstore]") {
  Store s;
  s.sync.period_ms = 1;  // rounds all the time, racing the writes, deletes and reads
  s.reopen();
  std::mt19937 rng(20261207);
  std::map<std::string, std::string> want;
  for (std::uint64_t v = 1; v <= 1500; v++) {
    std::string key = "k" + std::to_string(rng() % 40);
    if (rng() % 4 == 0) {
      REQUIRE(s.del(key, ver(v)).is_ok());
      want[key] = "<tombstone>";
    } else {
      std::string value = key + "@" + std::to_string(v) + std::string(rng() % 3000, 'x');
      REQUIRE(s.put(key, value, ver(v)).is_ok());
      want[key] = value;
    }
    auto it = want.begin();
    std::advance(it, static_cast<long>(rng() % want.size()));
    INFO("version " << v << " reading " << it->first);
    REQUIRE(s.get(it->first) == it->second);
  }
  s.store->flush();
  CHECK(s.store->pending_files() == 0);
  std::size_t live = 0;
  for (const auto& [k, v] : want) live += v != "<tombstone>";
  CHECK(s.files_under("blobs") == live);  // one file per live key: nothing left behind
  CHECK(s.files_under("tmp") == s.pooled());
  CHECK(s.store->committer().files_written_out() > 0);
  s.reopen();
  CHECK(s.store->replayed_files() == 0);
  for (const auto& [k, v] : want) CHECK(s.get(k) == v);
}

TEST_CASE("the scrub leaves pending files alone and checks them once written out",
          "[blobstore][scrub]") {
  Store s;
  s.sync.period_ms = no_round_ms;
  s.scrub = ScrubConfig{64ull << 20, 10'000};
  s.reopen();
  for (int i = 0; i < 20; i++) REQUIRE(s.put("k" + std::to_string(i), "value " + std::to_string(i), ver(1)).is_ok());
  auto passes_after = [&](std::uint64_t n) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (s.store->scrubber()->stats().passes < n && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return s.store->scrubber()->stats();
  };
  std::uint64_t start = s.store->scrubber()->stats().passes;
  ScrubStats st = passes_after(start + 2);  // a whole pass after the writes
  REQUIRE(st.passes >= start + 2);
  CHECK(st.damaged == 0);  // no file yet is not a missing file
  CHECK(st.files_verified == 0);
  s.store->flush();
  st = passes_after(st.passes + 2);
  CHECK(st.damaged == 0);
  CHECK(st.files_verified >= 20);
  for (int i = 0; i < 20; i++) CHECK(s.get("k" + std::to_string(i)) == "value " + std::to_string(i));
}

TEST_CASE("rebuild keeps the node id and skips damaged footers", "[blobstore]") {
  Store s;
  NodeId id = s.store->node_id();
  REQUIRE(s.put("a", "1", ver(1)).is_ok());
  REQUIRE(s.put("b", "2", ver(1)).is_ok());
  s.store.reset();
  std::string junk = s.disks()[0] + "/blobs/00/00";
  fs::create_directories(junk);
  { std::FILE* f = std::fopen((junk + "/garbage.file").c_str(), "w"); std::fputs("not a blob", f); std::fclose(f); }
  auto r = rebuild_index(s.dir.path() + "/data", s.disks());
  REQUIRE(r.is_ok());
  CHECK(r.value().keys == 2);
  CHECK(r.value().skipped == 1);
  s.reopen();
  CHECK(s.store->node_id() == id);
  CHECK(s.get("a") == "1");
}

TEST_CASE("listing is in byte order, by prefix, in pages", "[blobstore]") {
  Store s;
  for (const char* k : {"b/2", "a/1", "b/1", "b/3", "c", "b/10"}) REQUIRE(s.put(k, "v", ver(1)).is_ok());
  REQUIRE(s.del("b/3", ver(2)).is_ok());
  std::vector<blobstore::KeyVersion> rows;
  std::string next;
  auto keys = [&rows] {
    std::vector<std::string> k;
    for (const auto& r : rows) k.push_back(r.key + (r.tombstone ? " (deleted)" : ""));
    return k;
  };
  REQUIRE(s.store->list_versions("b/", "", 2, &rows, &next).is_ok());
  CHECK(keys() == std::vector<std::string>{"b/1", "b/10"});
  CHECK(next == "b/2");
  REQUIRE(s.store->list_versions("b/", next, 2, &rows, &next).is_ok());
  CHECK(keys() == std::vector<std::string>{"b/2", "b/3 (deleted)"});
  CHECK(next.empty());
  REQUIRE(s.store->list_versions("", "", 100, &rows, &next).is_ok());
  CHECK(keys() == std::vector<std::string>{"a/1", "b/1", "b/10", "b/2", "b/3 (deleted)", "c"});
}

TEST_CASE("a node's own rows for a cluster listing: versions and tombstones, no hints",
          "[blobstore]") {
  Store s;
  for (const char* k : {"b/2", "a/1", "b/1", "b/3", "c"}) REQUIRE(s.put(k, "v", ver(1)).is_ok());
  REQUIRE(s.del("b/3", ver(2)).is_ok());
  NodeId owner{};
  owner[0] = 0xbb;
  REQUIRE(s.put("b/15", "held for another", ver(3), nullptr,
                [&](BlobWriter& w) { w.set_hint_for(owner); }).is_ok());
  std::vector<KeyVersion> rows;
  std::string next;
  REQUIRE(s.store->list_versions("b/", "", 2, &rows, &next).is_ok());
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].key == "b/1");
  CHECK(rows[1].key == "b/2");  // b/15 is a hint: not this node's copy to list
  CHECK(rows[1].version == ver(1));
  CHECK(next == "b/3");
  REQUIRE(s.store->list_versions("b/", next, 2, &rows, &next).is_ok());
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].key == "b/3");
  CHECK(rows[0].tombstone);
  CHECK(rows[0].version == ver(2));
  CHECK(next.empty());
}

TEST_CASE("disks are chosen by weighted rendezvous hashing over healthy disks", "[blobstore]") {
  int first = 0;
  const int n = 4000;
  for (int i = 0; i < n; i++) {
    std::string k = "key" + std::to_string(i);
    first += Disks::score("/d1", k, 1.0) > Disks::score("/d2", k, 1.0);
  }
  CHECK(first > n * 0.45);
  CHECK(first < n * 0.55);
  int heavy = 0;
  for (int i = 0; i < n; i++) {
    std::string k = "key" + std::to_string(i);
    heavy += Disks::score("/d1", k, 3.0) > Disks::score("/d2", k, 1.0);
  }
  CHECK(heavy > n * 0.70);  // weight 3:1 → 75%
  CHECK(heavy < n * 0.80);

  testing::TempDir dir;
  auto d = Disks::open({dir.path() + "/x", dir.path() + "/y"});
  REQUIRE(d.is_ok());
  d.value()->mark_failed(0);
  for (int i = 0; i < 50; i++) CHECK(d.value()->choose("k" + std::to_string(i), 0) == 1);
  d.value()->mark_failed(1);
  CHECK(d.value()->choose("k", 0) == -1);
}

TEST_CASE("versions print and parse in sortable form", "[blobstore]") {
  Version v{0x0123456789abcdefull, node_a()};
  std::string t = v.to_string();
  CHECK(t.size() == version_text_bytes);
  CHECK(Version::parse(t) == v);
  CHECK_FALSE(Version::parse("zz"));
  CHECK(ver(1).to_string() < ver(2).to_string());
}

TEST_CASE("the value cache never serves a version older than an acknowledged write",
          "[blobstore]") {
  Store s;
  auto cached_body = [&](const std::string& key) -> std::string {
    BlobHandle large;
    auto r = s.store->read(key, &large);
    if (!r.is_ok()) return "<" + r.status().message() + ">";
    if (!r.value()) return "<large>";
    return r.value()->meta.tombstone ? "<tombstone>" : r.value()->body;
  };
  REQUIRE(s.put("k", "one", ver(1)).is_ok());
  CHECK(cached_body("k") == "one");
  s.reopen();  // an empty cache: the first read fills it, the second is a hit
  CHECK(cached_body("k") == "one");
  CHECK(cached_body("k") == "one");
  CHECK(s.store->cache().hits() == 1);
  REQUIRE(s.put("k", "two", ver(2)).is_ok());
  CHECK(cached_body("k") == "two");
  REQUIRE(s.del("k", ver(3)).is_ok());
  CHECK(cached_body("k") == "<tombstone>");
  REQUIRE(s.put("big", std::string(limits::small_value_bytes_max + 1, 'b'), ver(1)).is_ok());
  CHECK(cached_body("big") == "<large>");
}

TEST_CASE("a small value a client wrote is read from the cache, as committed", "[blobstore]") {
  Store s;
  auto read = [&](const std::string& key) {
    BlobHandle large;
    auto r = s.store->read(key, &large);
    REQUIRE(r.is_ok());
    REQUIRE(r.value());
    return r.value();
  };
  REQUIRE(s.put("k", "two", ver(2)).is_ok());
  bool applied = true;
  REQUIRE(s.put("k", "one", ver(1), &applied).is_ok());  // older: not applied
  CHECK_FALSE(applied);
  auto v = read("k");
  CHECK(s.store->cache().misses() == 0);  // no query, no file read
  CHECK(v->body == "two");
  CHECK(v->meta.version == ver(2));
  CHECK(v->meta.content_type == "text/plain");
  s.reopen();  // the same value as the disk serves it
  auto from_disk = read("k");
  CHECK(s.store->cache().misses() == 1);
  CHECK(from_disk->body == v->body);
  CHECK(from_disk->meta.md5 == v->meta.md5);
  CHECK(from_disk->meta.size == v->meta.size);
  CHECK(from_disk->meta.disk == v->meta.disk);
  REQUIRE(s.del("k", ver(3)).is_ok());
  CHECK(read("k")->meta.tombstone);
  CHECK(s.store->cache().misses() == 1);

  // A write no client waits for only drops the entry: the next read goes to the disk.
  REQUIRE(s.put("k", "bg", ver(4), nullptr, [](BlobWriter& w) { w.set_background(); }).is_ok());
  CHECK(read("k")->body == "bg");
  CHECK(s.store->cache().misses() == 2);
}

TEST_CASE("the value cache evicts the least recently used within its budget", "[blobstore]") {
  ValueCache cache(8 * (1000 + 256 + 2));
  auto value = [](const std::string& key) {
    auto v = std::make_shared<CachedValue>();
    v->meta.key = key;
    v->body = std::string(1000, 'v');
    return v;
  };
  for (int i = 0; i < 8; i++) cache.put(value("k" + std::to_string(i)));
  CHECK(cache.get("k0") != nullptr);  // k0 is now the most recent
  cache.put(value("k8"));
  CHECK(cache.get("k1") == nullptr);  // the least recent went
  CHECK(cache.get("k0") != nullptr);
  CHECK(cache.get("k8") != nullptr);
  CHECK(cache.bytes() <= cache.bytes_max());
  cache.erase("k0");
  CHECK(cache.get("k0") == nullptr);
}

TEST_CASE("a hinted write onto a replica's own copy keeps one file and records the miss",
          "[blobstore][hints]") {
  Store s;
  REQUIRE(s.put("k", "first", ver(1)).is_ok());
  NodeId owner{};
  owner[0] = 0xbb;
  REQUIRE(s.put("k", "second", ver(2), nullptr, [&](BlobWriter& w) { w.set_hint_for(owner); }).is_ok());
  auto m = s.store->lookup("k");
  REQUIRE(m.is_ok());
  CHECK_FALSE(m.value().is_hint);  // still this node's replica
  CHECK(m.value().version == ver(2));
  auto missed = s.store->missed(10);
  REQUIRE(missed.is_ok());
  REQUIRE(missed.value().size() == 1);  // the owner is owed the same file, not a copy
  CHECK(missed.value()[0].target == owner);
  CHECK(missed.value()[0].version == ver(2));
  s.store->flush();
  CHECK(s.files_under("blobs") == 1);
  auto by_target = s.store->hints_by_target();
  REQUIRE(by_target.is_ok());
  REQUIRE(by_target.value().size() == 1);
  CHECK(by_target.value()[0].count == 1);
  CHECK(by_target.value()[0].oldest_hlc == ver(2).hlc);
}

TEST_CASE("a disk that disappears is marked failed, reads as missing, and returns once drained",
          "[blobstore][disks]") {
  Store s;
  for (int i = 0; i < 40; i++) REQUIRE(s.put("k" + std::to_string(i), "v" + std::to_string(i), ver(1)).is_ok());
  REQUIRE(s.store->check_disks(1'000) == false);
  fs::remove_all(s.disks()[1]);
  REQUIRE(s.store->check_disks(10'000));
  CHECK(s.store->disk_healthy(0));
  CHECK_FALSE(s.store->disk_healthy(1));
  std::vector<BlobMeta> lost;
  REQUIRE(s.store->rows_on_disk(1, "", 100, &lost).is_ok());
  REQUIRE(!lost.empty());
  REQUIRE(s.store->count_on_disk(1).value() == lost.size());
  for (const BlobMeta& m : lost) {
    CHECK(s.get(m.key) == "<absent>");
    CHECK(s.store->lookup(m.key).status().code() == Code::not_found);
  }
  // The same version written again (what a refetch does) replaces the lost row.
  for (const BlobMeta& m : lost) {
    bool applied = false;
    REQUIRE(s.put(m.key, "v" + m.key.substr(1), m.version, &applied).is_ok());
    CHECK(applied);
    CHECK(s.get(m.key) == "v" + m.key.substr(1));
  }
  CHECK(s.store->count_on_disk(1).value() == 0);
  // Not back while its directory is missing; back once it exists again and is drained.
  CHECK_FALSE(s.store->check_disks(20'000));
  fs::create_directories(s.disks()[1]);
  CHECK(s.store->check_disks(30'000));
  CHECK(s.store->disk_healthy(1));
  CHECK(fs::exists(s.disks()[1] + "/" + Disks::marker_name));
}

TEST_CASE("pending files of a disk marked failed wait for it, and are written out once it is back",
          "[blobstore][disks]") {
  Store s;
  s.sync.period_ms = 20;  // rounds all the time: they must keep the files, and retry by themselves
  s.reopen();
  // Rows on both disks first, so that the failed disk stays out until it is back as it was.
  for (int i = 0; i < 10; i++) REQUIRE(s.put("pre" + std::to_string(i), "p", ver(1)).is_ok());
  s.store->flush();
  // The disks are chosen when the uploads begin; disk 1 fails before they commit, so its
  // share is logged and pending while it is out.
  std::vector<std::unique_ptr<BlobWriter>> writers;
  for (int i = 0; i < 40; i++) {
    auto w = s.store->begin_write("k" + std::to_string(i), "", 0);
    REQUIRE(w.is_ok());
    std::string v = "value " + std::to_string(i);
    REQUIRE(w.value()->append(v.data(), v.size()).is_ok());
    writers.push_back(std::move(w.value()));
  }
  const std::string marker = s.disks()[1] + "/" + Disks::marker_name;
  std::string token;
  {
    std::ifstream in(marker);
    std::getline(in, token, '\0');
  }
  REQUIRE(!token.empty());
  { std::ofstream(marker) << "another disk"; }
  REQUIRE(s.store->check_disks(10'000));
  REQUIRE_FALSE(s.store->disk_healthy(1));
  int done = 0;
  for (auto& w : writers) {
    REQUIRE(s.store->commit(std::move(w), ver(1), [&](Status st, CommitResult) {
      CHECK(st.is_ok());
      done++;
    }).is_ok());
  }
  REQUIRE(s.run_until([&] { return done == 40; }));
  std::vector<BlobMeta> rows, on_failed;
  REQUIRE(s.store->rows_on_disk(1, "", 100, &rows).is_ok());
  for (const BlobMeta& m : rows) {
    if (m.key[0] == 'k') on_failed.push_back(m);
  }
  REQUIRE(!on_failed.empty());
  REQUIRE(on_failed.size() < rows.size());
  std::uint64_t checkpoints = s.store->committer().log_checkpoints();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // many rounds
  CHECK(s.store->pending_files() == on_failed.size());  // kept in memory, not dropped
  CHECK(s.store->committer().log_checkpoints() > checkpoints);  // nor do they hold the log
  CHECK(s.files_under("blobs") == 50 - on_failed.size());
  for (const BlobMeta& m : on_failed) CHECK(s.get(m.key) == "<absent>");  // as on a failed disk
  // The disk comes back as it was: the next rounds write its files out, unasked.
  { std::ofstream(marker) << token; }
  REQUIRE(s.store->check_disks(20'000));
  REQUIRE(s.store->disk_healthy(1));
  CHECK(s.run_until([&] { return s.store->pending_files() == 0; }));
  CHECK(s.files_under("blobs") == 50);
  for (int i = 0; i < 40; i++) CHECK(s.get("k" + std::to_string(i)) == "value " + std::to_string(i));
}

TEST_CASE("a replaced marker fails a disk that still holds rows", "[blobstore][disks]") {
  Store s;
  for (int i = 0; i < 20; i++) REQUIRE(s.put("k" + std::to_string(i), "v", ver(1)).is_ok());
  {
    std::FILE* f = std::fopen((s.disks()[0] + "/" + Disks::marker_name).c_str(), "w");
    REQUIRE(f != nullptr);
    std::fputs("another disk", f);
    std::fclose(f);
  }
  REQUIRE(s.store->check_disks(10'000));
  CHECK_FALSE(s.store->disk_healthy(0));
  CHECK_FALSE(s.store->check_disks(20'000));  // rows still point at it: stays out
  auto info = s.store->disks_info(0);
  CHECK(info[0].failure == "marker file missing or changed");
}

TEST_CASE("the scrub's file check tells whole, damaged and missing files apart", "[blobstore][scrub]") {
  Store s;
  REQUIRE(s.put("k", std::string(5000, 'x'), ver(1)).is_ok());
  s.store->flush();
  auto h = s.store->open_read("k");
  REQUIRE(h.is_ok());
  std::string path = s.store->blob_path(h.value().meta);
  int err = 0;
  CHECK(Scrubber::verify_file(path, h.value().meta, &err).is_ok());
  {
    int fd = ::open(path.c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    REQUIRE(pwrite(fd, "y", 1, 4000) == 1);
    ::close(fd);
  }
  CHECK(Scrubber::verify_file(path, h.value().meta, &err).code() == Code::corruption);
  ::unlink(path.c_str());
  CHECK(Scrubber::verify_file(path, h.value().meta, &err).code() == Code::corruption);
  CHECK(err == ENOENT);
}

TEST_CASE("empty files are kept ready, so that writes create none on the caller's thread",
          "[blobstore]") {
  Store s;
  s.stock_files = true;
  s.reopen();
  auto stocked = [&](std::size_t at_least = limits::stocked_files_high) {
    for (std::size_t i = 0; i < s.disks().size(); i++) {
      if (s.store->pooled_files(static_cast<int>(i)) < at_least) return false;
    }
    return true;
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!stocked() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  REQUIRE(stocked());
  CHECK(s.files_under("tmp") == s.pooled());
  // Written-out files take stocked ones (their inodes become the blobs) and no new file appears
  // in tmp/ beside the stock; the stock is topped up again behind them.
  std::set<ino_t> stock_inodes;
  for (const auto& d : s.disks()) {
    for (const auto& e : fs::directory_iterator(d + "/tmp")) {
      struct stat st;
      if (stat(e.path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) stock_inodes.insert(st.st_ino);
    }
  }
  REQUIRE(stock_inodes.size() == s.pooled());
  // 40 writes leave either disk far above the low mark: no top-up yet.
  const int writes = 40;
  for (int i = 0; i < writes; i++) REQUIRE(s.put("k" + std::to_string(i), "v", ver(1)).is_ok());
  s.store->flush();  // the files are written out (of the stock) by a sync round
  int from_stock = 0;
  for (int i = 0; i < writes; i++) {
    CHECK(s.get("k" + std::to_string(i)) == "v");
    from_stock += stock_inodes.count(s.inode_of("k" + std::to_string(i), ver(1))) ? 1 : 0;
  }
  CHECK(from_stock == writes);
  CHECK(s.files_under("tmp") == s.pooled());
  // Enough writes to take either disk under the low mark: the stock is made again.
  for (int i = writes; i < 6 * writes; i++) REQUIRE(s.put("k" + std::to_string(i), "v", ver(1)).is_ok());
  s.store->flush();
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  // Topped up to the high mark once under the low one; the writes after may take some.
  while (!stocked(limits::stocked_files_low) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK(stocked(limits::stocked_files_low));
  CHECK(s.store->stocked_files_made() > s.disks().size() * limits::stocked_files_high);
  // A restart takes the stock into the pool: nothing piles up in tmp/ beside it, and
  // with every disk over the low mark no file is made.
  s.reopen();
  CHECK(s.files_under("tmp") == s.pooled());
  CHECK(s.store->stocked_files_made() == 0);
}

TEST_CASE("a meta row written through the committer is durable once its callback runs",
          "[blobstore]") {
  Store s;
  REQUIRE(s.put("progress", "a value", ver(1)).is_ok());  // a key named like the row
  bool ran = false;
  Status st = Status::io_error("not run");
  REQUIRE(s.store->put_meta_later("progress", "window 7", [&](Status r, CommitResult) {
    ran = true;
    st = std::move(r);
  }).is_ok());
  REQUIRE(s.wait(ran, st).is_ok());
  CHECK(s.store->get_meta("progress").value() == "window 7");
  CHECK(s.get("progress") == "a value");
  s.reopen();
  CHECK(s.store->get_meta("progress").value() == "window 7");
}

namespace {
// Writes `body` as a whole blob file in `meta.format` under its name on `disk`.
void write_file(const std::string& disk, BlobMeta meta, const std::string& body) {
  meta.size = body.size();
  meta.md5 = md5_of(body);
  std::string path = disk + "/" + blob_relative_path(meta.key, meta.version);
  fs::create_directories(parent_of(path));
  std::ofstream(path, std::ios::binary) << body << encode_footer(meta);
}

Result<BlobMeta> footer_of(const std::string& bytes) {
  testing::TempDir d;
  std::string path = d.path() + "/f";
  std::ofstream(path, std::ios::binary) << bytes;
  int fd = ::open(path.c_str(), O_RDONLY);
  auto m = read_footer(fd, bytes.size());
  ::close(fd);
  return m;
}
}  // namespace

TEST_CASE("footers of both formats round-trip; RSB2 carries attributes and expiry",
          "[blobstore][format]") {
  BlobMeta m;
  m.key = "a/key";
  m.version = ver(7);
  m.content_type = "text/plain";
  m.attrs = "cache-control: no-cache\r\nx-ringstore-meta-a: 1\r\n";
  m.expires_ms = 1'700'000'000'123;
  m.size = 3;
  m.md5 = md5_of("abc");
  std::string v2 = "abc" + encode_footer(m);
  CHECK(v2.size() == 3 + footer_bytes(m));
  CHECK(v2.substr(v2.size() - footer2_fixed_bytes, 4) == "RSB2");
  auto r2 = footer_of(v2);
  REQUIRE(r2.is_ok());
  CHECK(r2.value().format == footer_format_v2);
  CHECK(r2.value().attrs == m.attrs);
  CHECK(r2.value().expires_ms == m.expires_ms);
  CHECK(r2.value().content_type == "text/plain");
  CHECK(r2.value().version == m.version);
  // One byte of the attributes changed: the check catches it.
  std::string bad = v2;
  bad[3 + m.key.size() + m.content_type.size() + 2] ^= 1;
  CHECK(footer_of(bad).status().code() == Code::corruption);

  BlobMeta old = m;
  old.format = footer_format_v1;
  old.attrs.clear();
  old.expires_ms = 0;
  std::string v1 = "abc" + encode_footer(old);
  CHECK(v1.size() == 3 + footer_bytes(old));
  CHECK(v1.substr(v1.size() - footer_fixed_bytes, 4) == "RSB1");
  auto r1 = footer_of(v1);
  REQUIRE(r1.is_ok());
  CHECK(r1.value().format == footer_format_v1);
  CHECK(r1.value().attrs.empty());
  CHECK(r1.value().expires_ms == 0);
  CHECK(r1.value().key == "a/key");
  CHECK(encode_footer(r1.value()) == v1.substr(3));
  // A format-1 file whose bytes 76 from its end happen to read "RSB2" is still RSB1.
  old.key = "k";
  old.content_type.clear();  // a 65-byte footer: 76 from the end is inside the body
  std::string body(40, 'x');
  old.size = body.size();
  old.md5 = md5_of(body);
  std::string tricky = body + encode_footer(old);
  REQUIRE(tricky.size() >= footer2_fixed_bytes);
  tricky.replace(tricky.size() - footer2_fixed_bytes, 4, "RSB2");
  REQUIRE(tricky.size() - footer2_fixed_bytes < body.size());
  auto rt = footer_of(tricky);
  REQUIRE(rt.is_ok());
  CHECK(rt.value().format == footer_format_v1);
}

TEST_CASE("an index and files of the earlier format are read, served, scrubbed and rebuilt",
          "[blobstore][format]") {
  Store s;
  s.store.reset();
  const std::string data = s.dir.path() + "/data";
  for (const char* f : {"index.db", "index.db-wal", "index.db-shm"}) fs::remove(data + "/" + f);
  // The schema and a row as the previous version wrote them, and its RSB1 file.
  BlobMeta old;
  old.key = "old";
  old.version = ver(1);
  old.content_type = "text/plain";
  old.format = footer_format_v1;
  write_file(s.disks()[0], old, "old bytes");
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open((data + "/index.db").c_str(), &db) == SQLITE_OK);
    const std::string sql =
        "CREATE TABLE blobs(key BLOB PRIMARY KEY NOT NULL, position INTEGER NOT NULL, hlc INTEGER "
        "NOT NULL, node BLOB NOT NULL, tombstone INTEGER NOT NULL, size INTEGER NOT NULL, md5 BLOB "
        "NOT NULL, content_type TEXT NOT NULL, disk INTEGER NOT NULL, hint_for BLOB) WITHOUT ROWID;"
        "CREATE INDEX blobs_position ON blobs(position);"
        "CREATE TABLE disks(id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL);"
        "INSERT INTO disks(id,path) VALUES(1,'" + s.disks()[0] + "'),(2,'" + s.disks()[1] + "');";
    REQUIRE(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, "INSERT INTO blobs VALUES(?1,?2,?3,?4,0,9,?5,'text/plain',1,NULL)",
                               -1, &st, nullptr) == SQLITE_OK);
    Md5Digest md5 = md5_of("old bytes");
    sqlite3_bind_blob(st, 1, "old", 3, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, position_column(ring::key_position("old")));
    sqlite3_bind_int64(st, 3, static_cast<sqlite3_int64>(old.version.hlc));
    sqlite3_bind_blob(st, 4, old.version.node.data(), 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, md5.data(), 16, SQLITE_STATIC);
    REQUIRE(sqlite3_step(st) == SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);
  }
  s.reopen();  // adds the new columns
  CHECK(s.get("old") == "old bytes");
  auto h = s.store->open_read("old");
  REQUIRE(h.is_ok());
  CHECK(h.value().meta.format == footer_format_v1);
  CHECK(h.value().meta.attrs.empty());
  int err = 0;
  CHECK(Scrubber::verify_file(s.store->blob_path(h.value().meta), h.value().meta, &err).is_ok());
  // New writes beside it keep their attributes and expiry.
  REQUIRE(s.put("new", "new bytes", ver(2), nullptr, [](BlobWriter& w) {
    w.set_attrs("x-ringstore-meta-k: v\r\n", 4'000'000'000'000);
  }).is_ok());
  s.store->flush();
  auto n = s.store->lookup("new");
  REQUIRE(n.is_ok());
  CHECK(n.value().attrs == "x-ringstore-meta-k: v\r\n");
  CHECK(n.value().expires_ms == 4'000'000'000'000);
  std::vector<KeyVersion> rows;
  std::string next;
  REQUIRE(s.store->list_versions("", "", 10, &rows, &next).is_ok());
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].expires_ms == 4'000'000'000'000);
  CHECK(rows[1].expires_ms == 0);
  CHECK(s.store->count_expired_before(4'000'000'000'001).value() == 1);
  CHECK(s.store->count_expired_before(4'000'000'000'000).value() == 0);
  s.store.reset();
  // Rebuilt from the files alone: both formats come back as they were written.
  auto r = rebuild_index(data, s.disks());
  REQUIRE(r.is_ok());
  CHECK(r.value().keys == 2);
  CHECK(r.value().skipped == 0);
  s.reopen();
  CHECK(s.get("old") == "old bytes");
  CHECK(s.get("new") == "new bytes");
  CHECK(s.store->lookup("old").value().format == footer_format_v1);
  auto back = s.store->lookup("new");
  REQUIRE(back.is_ok());
  CHECK(back.value().format == footer_format_v2);
  CHECK(back.value().attrs == "x-ringstore-meta-k: v\r\n");
  CHECK(back.value().expires_ms == 4'000'000'000'000);
}

TEST_CASE("an unlinked tombstone keeps its kind in the index and the listing rows",
          "[blobstore][format]") {
  Store s;
  REQUIRE(s.put("k", "v", ver(1)).is_ok());
  bool ran = false;
  Status st;
  REQUIRE(s.store->remove("k", ver(2), 0, [&](Status r, CommitResult) {
    ran = true;
    st = r;
  }, /*unlinked=*/true).is_ok());
  REQUIRE(s.wait(ran, st).is_ok());
  CHECK(s.get("k") == "<tombstone>");
  CHECK(s.store->lookup("k").value().unlinked);
  std::vector<KeyVersion> rows;
  std::string next;
  REQUIRE(s.store->list_versions("", "", 10, &rows, &next).is_ok());
  REQUIRE(rows.size() == 1);
  CHECK((rows[0].tombstone && rows[0].unlinked));
  REQUIRE(s.del("k", ver(3)).is_ok());
  CHECK(!s.store->lookup("k").value().unlinked);
}
