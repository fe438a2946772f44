#include "blobstore/wal_vfs.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <string>

#include "blobstore/index.h"
#include "support/test_server.h"

using namespace blobstore;

namespace {

std::int64_t file_size(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? static_cast<std::int64_t>(st.st_size) : -1;
}

BlobMeta row(int i) {
  BlobMeta m;
  m.key = "key-" + std::to_string(i * 7919 % 1000);
  m.version = Version{static_cast<std::uint64_t>(i + 1) << 16, NodeId{}};
  m.size = 10;
  m.content_type = "text/plain";
  m.disk = 0;
  return m;
}

// An index with its writer and a reader, as a node opens them.
struct Index {
  testing::TempDir dir;
  std::string db = dir.path() + "/index.db";
  IndexWriter w;
  IndexReader r;
  Index() {
    REQUIRE(w.open(db, {dir.path() + "/disk"}, /*sync_commits=*/false).is_ok());
    REQUIRE(r.open(db).is_ok());
  }
};

}  // namespace

TEST_CASE("a transaction's WAL writes reach the file as one write when it commits", "[blobstore][wal]") {
  Index x;
  const std::string& db = x.db;
  IndexWriter& w = x.w;
  IndexReader& r = x.r;

  for (int round = 0; round < 3; round++) {
    const std::int64_t before = file_size(db + "-wal");
    WalVfsCounters c0 = wal_vfs_counters();
    REQUIRE(w.begin().is_ok());
    for (int i = 0; i < 60; i++) REQUIRE(w.upsert(row(round * 60 + i)).is_ok());
    REQUIRE(w.commit().is_ok());
    WalVfsCounters c1 = wal_vfs_counters();
    // Every frame is a header and a page: two writes each, one pwrite for them all.
    CHECK(c1.writes - c0.writes >= 4);
    CHECK(c1.pwrites - c0.pwrites == 1);
    CHECK(c1.writes - c0.writes < 32);  // a few pages: the test stays below 64 KiB
    // In the file when commit() returns: a kill now loses nothing the commit wrote.
    CHECK(file_size(db + "-wal") > before);
    for (int i = 0; i < 60; i++) {
      auto m = r.lookup(row(round * 60 + i).key);
      REQUIRE(m.is_ok());
      CHECK(m.value().version.hlc >= 1u << 16);
    }
  }
}

TEST_CASE("a connection reading a WAL first writes out what another one gathered", "[blobstore][wal]") {
  testing::TempDir dir;
  const std::string db = dir.path() + "/plain.db";
  // Two plain connections through the VFS, without the commit hook: the writer's last
  // transaction stays gathered until the reader touches the WAL.
  sqlite3 *a = nullptr, *b = nullptr;
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  REQUIRE(sqlite3_open_v2(db.c_str(), &a, flags, wal_vfs_name()) == SQLITE_OK);
  REQUIRE(sqlite3_exec(a, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE t(k, v)",
                       nullptr, nullptr, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_open_v2(db.c_str(), &b, flags, wal_vfs_name()) == SQLITE_OK);
  REQUIRE(sqlite3_exec(a, "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<500) "
                          "INSERT INTO t SELECT i, randomblob(100) FROM n; COMMIT",
                       nullptr, nullptr, nullptr) == SQLITE_OK);
  const std::int64_t gathered = file_size(db + "-wal");
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(b, "SELECT count(*), sum(length(v)) FROM t", -1, &s, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(s) == SQLITE_ROW);
  CHECK(sqlite3_column_int(s, 0) == 500);
  CHECK(sqlite3_column_int(s, 1) == 500 * 100);
  sqlite3_finalize(s);
  CHECK(file_size(db + "-wal") > gathered);
  REQUIRE(flush_wal(a).is_ok());
  REQUIRE(sqlite3_close(b) == SQLITE_OK);
  REQUIRE(sqlite3_close(a) == SQLITE_OK);
}

TEST_CASE("a transaction's WAL writes of any length reach the file whole", "[blobstore][wal]") {
  // The unix VFS writes at most 128 KiB per call, and nothing of a write of exactly
  // 128 KiB: gathered writes go out in smaller pieces. Transactions of growing size
  // cross every multiple of 128 KiB.
  Index x;
  IndexWriter& w = x.w;
  IndexReader& r = x.r;
  int next = 0;
  for (int n = 100; n <= 3000; n += 290) {
    REQUIRE(w.begin().is_ok());
    for (int i = 0; i < n; i++) {
      BlobMeta m = row(0);
      m.key = "large-" + std::to_string(next++);
      m.attrs = std::string(200, 'a');  // rows of ~300 bytes: many pages per transaction
      REQUIRE(w.upsert(m).is_ok());
    }
    REQUIRE(w.commit().is_ok());
  }
  auto live = r.count_live();
  REQUIRE(live.is_ok());
  CHECK(live.value() == static_cast<std::uint64_t>(next));
}
