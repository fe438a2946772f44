// The SQLite index of blobs (WAL mode). Schema and the encodings of its columns are in
// docs/FORMATS.md. Two kinds of connection share one database file:
//  - IndexReader: point lookups and listings. Thread: one thread (the loop). WAL lets
//    it read while the writer commits, so reads never wait behind an fsync.
//  - IndexWriter: every change, in batched transactions. Thread: the committer thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "blobstore/blob_file.h"
#include "common/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace blobstore {

// One prepared statement, finalized on destruction.
class Stmt {
 public:
  Stmt() = default;
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Status prepare(sqlite3* db, const char* sql);
  sqlite3_stmt* get() const { return s_; }

 private:
  sqlite3_stmt* s_ = nullptr;
};

// One connection, closed on destruction.
class Db {
 public:
  ~Db();
  Status open(const std::string& path, bool create);
  Status exec(const char* sql);
  sqlite3* get() const { return db_; }
  Status error(const char* what) const;

 private:
  sqlite3* db_ = nullptr;
};

// Stored version of a key, as the writer sees it (enough to decide LWW and find the file).
struct StoredVersion {
  Version version;
  bool tombstone = false;
  bool is_hint = false;
  NodeId hint_for{};  // when is_hint
  int disk = -1;
};

// One row of a listing: a key and the version this node holds of it.
struct KeyVersion {
  std::string key;
  Version version;
  bool tombstone = false;
  bool unlinked = false;         // a tombstone written by UNLINK
  std::uint64_t expires_ms = 0;  // a value's expiry (0: none)
};

// A write that `target` missed while this node holds the key itself.
struct MissedWrite {
  NodeId target{};
  std::string key;
  Version version;
};

class IndexReader {
 public:
  Status open(const std::string& db_path);
  // Disk paths are mapped to small integers in the `disks` table.
  Result<BlobMeta> lookup(std::string_view key);
  // This node's own rows (hint rows excluded, tombstones included) k with start <= k, k
  // starting with prefix, in byte order: the answer to /_/internal/list. At most limit
  // rows; *next is the following such row's key, or "" if none.
  Status list_versions(std::string_view prefix, std::string_view start, std::size_t limit,
                       std::vector<KeyVersion>* rows, std::string* next);
  Result<std::uint64_t> count_live();
  Result<std::string> get_meta(std::string_view name);
  // Up to `limit` hints with key > after, in key order.
  Result<std::vector<BlobMeta>> hints(std::string_view after, std::size_t limit);
  Result<std::uint64_t> count_hints();
  Result<std::uint64_t> count_expired_before(std::uint64_t before_ms);
  Result<std::vector<MissedWrite>> missed(std::size_t limit);
  // Keys (with versions) whose ring position lies in [from, to], in position order.
  Status scan_positions(std::uint64_t from, std::uint64_t to, std::size_t limit,
                        std::vector<BlobMeta>* out);
  // Rows stored on disk `disk_id` with key > after, in key order (meta.disk stays the id).
  Status scan_disk(int disk_id, std::string_view after, std::size_t limit,
                   std::vector<BlobMeta>* out);
  Result<std::uint64_t> count_disk(int disk_id);
  // Pending hints per target: stand-in copies and missed-write records together.
  struct TargetHints {
    NodeId target{};
    std::uint64_t count = 0;
    std::uint64_t oldest_hlc = 0;
  };
  Result<std::vector<TargetHints>> hints_by_target();

 private:
  Status scan_rows(sqlite3_stmt* s, std::vector<BlobMeta>* out);
  Db db_;
  Stmt hints_, count_hints_, scan_, missed_, scan_disk_, count_disk_, by_target_;
  Stmt lookup_;
  Stmt count_expired_;
  Stmt list_versions_;
  Stmt count_;
  Stmt meta_;
};

class IndexWriter {
 public:
  // Creates the schema when missing. `disk_paths` are registered in the disks table and
  // disk_ids() maps --disk order to their ids. Without `sync_commits` a commit is not
  // synced (synchronous=NORMAL: still consistent after a power cut); the caller syncs.
  Status open(const std::string& db_path, const std::vector<std::string>& disk_paths,
              bool sync_commits = true);
  const std::vector<int>& disk_ids() const { return disk_ids_; }
  Status begin();
  // A read transaction (ended by commit()): its lookups share one snapshot and one set
  // of WAL locks, where each lookup alone takes and drops them (two fcntl calls).
  Status begin_read();
  Status commit();
  Status rollback();
  // Whether the next commits are durable when they return (synchronous=FULL) or only
  // once the filesystem is synced (NORMAL: SQLite's WAL stays consistent either way).
  // Outside a transaction.
  Status set_synced(bool synced);
  Result<std::optional<StoredVersion>> current(std::string_view key);
  Status upsert(const BlobMeta& meta);
  Status erase(std::string_view key);
  Status add_hint(const NodeId& target, std::string_view key, const Version& v);
  Status drop_hint(const NodeId& target, std::string_view key, const Version& v);
  Status add_trash(const std::string& path);
  Result<std::vector<std::string>> trash();
  Status clear_trash(const std::string& path);
  Status set_meta(std::string_view name, std::string_view value);
  Result<std::string> get_meta(std::string_view name);
  Result<std::uint64_t> count_live();

 private:
  Status add_missing_columns();
  Db db_;
  Stmt current_, upsert_, erase_, add_hint_, drop_hint_, add_trash_, trash_, clear_trash_, set_meta_, get_meta_, count_;
  Stmt begin_, begin_read_, commit_, rollback_;
  std::vector<int> disk_ids_;
  bool synced_ = false;  // the connection's synchronous setting: FULL (true) or NORMAL
};

// The index stores disk ids; these convert between ids and --disk order.
int disk_index_of(const std::vector<int>& ids, int id);

// Ring positions are u64; SQLite integers are signed. Flipping the top bit keeps order.
inline std::int64_t position_column(std::uint64_t p) {
  return static_cast<std::int64_t>(p ^ (1ull << 63));
}

}  // namespace blobstore
