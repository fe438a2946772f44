#include "blobstore/index.h"

#include <sqlite3.h>

#include <cstring>

#include "blobstore/wal_vfs.h"
#include "ring/hash.h"

namespace blobstore {

namespace {

const char* const schema_sql = R"sql(
CREATE TABLE IF NOT EXISTS blobs(
  key BLOB PRIMARY KEY NOT NULL,
  position INTEGER NOT NULL,
  hlc INTEGER NOT NULL,
  node BLOB NOT NULL,
  tombstone INTEGER NOT NULL,
  size INTEGER NOT NULL,
  md5 BLOB NOT NULL,
  content_type TEXT NOT NULL,
  disk INTEGER NOT NULL,
  hint_for BLOB,
  attrs BLOB,
  expires_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blobs_position ON blobs(position);
CREATE INDEX IF NOT EXISTS blobs_hint_for ON blobs(hint_for) WHERE hint_for IS NOT NULL;
CREATE TABLE IF NOT EXISTS disks(id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS trash(path TEXT PRIMARY KEY NOT NULL);
CREATE TABLE IF NOT EXISTS hints(
  target BLOB NOT NULL, key BLOB NOT NULL, hlc INTEGER NOT NULL, node BLOB NOT NULL,
  PRIMARY KEY(target, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL);
)sql";

void bind_text(sqlite3_stmt* s, int i, std::string_view v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}
void bind_blob(sqlite3_stmt* s, int i, std::string_view v) {
  sqlite3_bind_blob(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}
std::string column_bytes(sqlite3_stmt* s, int i) {
  const void* p = sqlite3_column_blob(s, i);
  int n = sqlite3_column_bytes(s, i);
  return p ? std::string(static_cast<const char*>(p), static_cast<std::size_t>(n)) : std::string();
}

// Resets a statement when the scope ends, whatever happened.
struct Reset {
  sqlite3_stmt* s;
  ~Reset() {
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
  }
};

Status step_done(Db& db, sqlite3_stmt* s, const char* what) {
  Reset r{s};
  int rc = sqlite3_step(s);
  if (rc != SQLITE_DONE) return db.error(what);
  return Status::ok();
}

Result<std::string> read_meta(Db& db, sqlite3_stmt* s, std::string_view name) {
  Reset r{s};
  bind_text(s, 1, name);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_DONE) return Status::not_found("meta " + std::string(name));
  if (rc != SQLITE_ROW) return db.error("get meta");
  return column_bytes(s, 0);
}

Result<std::uint64_t> read_count(Db& db, sqlite3_stmt* s) {
  Reset r{s};
  if (sqlite3_step(s) != SQLITE_ROW) return db.error("count");
  return static_cast<std::uint64_t>(sqlite3_column_int64(s, 0));
}

constexpr const char* meta_get_sql = "SELECT value FROM meta WHERE name=?1";
constexpr const char* count_sql =
    "SELECT count(*) FROM blobs WHERE tombstone=0 AND hint_for IS NULL";
constexpr const char* meta_columns =
    "hlc,node,tombstone,size,md5,content_type,disk,hint_for,attrs,expires_ms";

// The tombstone column: 0 a value, 1 a tombstone, 2 an unlinked tombstone (UNLINK).
constexpr int tombstone_plain = 1;
constexpr int tombstone_unlinked = 2;
int tombstone_column(const BlobMeta& m) {
  if (!m.tombstone) return 0;
  return m.unlinked ? tombstone_unlinked : tombstone_plain;
}

// Reads meta_columns starting at column `c` into m (key excluded).
Status read_meta_columns(sqlite3_stmt* s, int c, BlobMeta* m) {
  m->version.hlc = static_cast<std::uint64_t>(sqlite3_column_int64(s, c));
  std::string node = column_bytes(s, c + 1);
  std::string md5 = column_bytes(s, c + 4);
  if (node.size() != m->version.node.size() || md5.size() != m->md5.size()) {
    return Status::corruption("index row has bad node or md5 length");
  }
  std::memcpy(m->version.node.data(), node.data(), node.size());
  int tomb = sqlite3_column_int(s, c + 2);
  m->tombstone = tomb != 0;
  m->unlinked = tomb == tombstone_unlinked;
  m->size = static_cast<std::uint64_t>(sqlite3_column_int64(s, c + 3));
  std::memcpy(m->md5.data(), md5.data(), md5.size());
  m->content_type = column_bytes(s, c + 5);
  m->disk = sqlite3_column_int(s, c + 6);
  std::string hint = column_bytes(s, c + 7);
  m->is_hint = hint.size() == m->hint_for.size();
  if (m->is_hint) std::memcpy(m->hint_for.data(), hint.data(), hint.size());
  // A row without attrs (NULL, not empty) names a file written in format 1: rows made
  // before the column existed, and rebuilt from such files.
  if (sqlite3_column_type(s, c + 8) == SQLITE_NULL) {
    m->format = footer_format_v1;
  } else {
    m->format = footer_format_v2;
    m->attrs = column_bytes(s, c + 8);
  }
  m->expires_ms = static_cast<std::uint64_t>(sqlite3_column_int64(s, c + 9));
  return Status::ok();
}

}  // namespace

Stmt::~Stmt() { sqlite3_finalize(s_); }

Status Stmt::prepare(sqlite3* db, const char* sql) {
  ASSERT(s_ == nullptr);
  if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s_, nullptr) != SQLITE_OK) {
    return Status::io_error(std::string("sqlite prepare: ") + sqlite3_errmsg(db));
  }
  return Status::ok();
}

Db::~Db() {
  if (db_) {
    int rc = sqlite3_close(db_);
    ASSERT(rc == SQLITE_OK);  // every statement was finalized first
  }
}

Status Db::open(const std::string& path, bool create) {
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
  // "unix-excl": the process holds the file's lock from its first access to its last
  // close, and the WAL index lives in this process's memory, not in a mapped -shm
  // file. Every transaction of every connection here took two to six fcntl() locks
  // before (five per client request under load); now none. Another process cannot open
  // the index while a node runs: it waits busy_timeout and fails, as it should.
  // wal_vfs.h: unix-excl, with each transaction's WAL writes gathered into one.
  if (sqlite3_open_v2(path.c_str(), &db_, flags, wal_vfs_name()) != SQLITE_OK) {
    Status s = error("open");
    return s;
  }
  flush_wal_on_commit(db_);
  sqlite3_busy_timeout(db_, 10'000);
  sqlite3_extended_result_codes(db_, 1);
  return Status::ok();
}

Status Db::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = std::string("sqlite: ") + (err ? err : "error");
    sqlite3_free(err);
    return Status::io_error(m);
  }
  return Status::ok();
}

Status Db::error(const char* what) const {
  return Status::io_error(std::string("sqlite ") + what + ": " +
                          (db_ ? sqlite3_errmsg(db_) : "cannot open"));
}

int disk_index_of(const std::vector<int>& ids, int id) {
  for (std::size_t i = 0; i < ids.size(); i++) {
    if (ids[i] == id) return static_cast<int>(i);
  }
  return -1;
}

// ---- reader ----

Status IndexReader::open(const std::string& db_path) {
  if (Status s = db_.open(db_path, false); !s.is_ok()) return s;
  if (Status s = db_.exec("PRAGMA query_only=1"); !s.is_ok()) return s;
  std::string cols = meta_columns;
  if (Status s = lookup_.prepare(db_.get(),
          ("SELECT " + cols + " FROM blobs WHERE key=?1").c_str());
      !s.is_ok()) return s;
  if (Status s = hints_.prepare(db_.get(), ("SELECT key," + cols +
          " FROM blobs WHERE hint_for IS NOT NULL AND key>?1 ORDER BY key LIMIT ?2").c_str());
      !s.is_ok()) return s;
  if (Status s = count_hints_.prepare(db_.get(),
          "SELECT (SELECT count(*) FROM blobs WHERE hint_for IS NOT NULL) + "
          "(SELECT count(*) FROM hints)");
      !s.is_ok()) return s;
  if (Status s = missed_.prepare(db_.get(),
          "SELECT target,key,hlc,node FROM hints ORDER BY target,key LIMIT ?1");
      !s.is_ok()) return s;
  if (Status s = scan_.prepare(db_.get(), ("SELECT key," + cols +
          " FROM blobs WHERE position>=?1 AND position<=?2 ORDER BY position LIMIT ?3").c_str());
      !s.is_ok()) return s;
  // Hint rows are filtered, not bounded: a node holds few of them (hint caps), and the
  // key index keeps the scan in key order.
  if (Status s = list_versions_.prepare(db_.get(),
          "SELECT key,hlc,node,tombstone,expires_ms FROM blobs WHERE key>=?1 AND hint_for IS NULL "
          "ORDER BY key LIMIT ?2");
      !s.is_ok()) return s;
  if (Status s = count_.prepare(db_.get(), count_sql); !s.is_ok()) return s;
  if (Status s = count_expired_.prepare(db_.get(),
          "SELECT count(*) FROM blobs WHERE expires_ms IS NOT NULL AND expires_ms<?1");
      !s.is_ok()) return s;
  if (Status s = scan_disk_.prepare(db_.get(), ("SELECT key," + cols +
          " FROM blobs WHERE disk=?1 AND key>?2 ORDER BY key LIMIT ?3").c_str());
      !s.is_ok()) return s;
  if (Status s = count_disk_.prepare(db_.get(), "SELECT count(*) FROM blobs WHERE disk=?1");
      !s.is_ok()) return s;
  // Both kinds of hint per target; the partial index blobs_hint_for keeps the first
  // half proportional to the hints held, not to the keys.
  if (Status s = by_target_.prepare(db_.get(),
          "SELECT t, sum(n), min(h) FROM ("
          "SELECT hint_for AS t, count(*) AS n, min(hlc) AS h FROM blobs "
          "WHERE hint_for IS NOT NULL GROUP BY hint_for UNION ALL "
          "SELECT target, count(*), min(hlc) FROM hints GROUP BY target) GROUP BY t");
      !s.is_ok()) return s;
  return meta_.prepare(db_.get(), meta_get_sql);
}

Status IndexReader::scan_rows(sqlite3_stmt* s, std::vector<BlobMeta>* out) {
  out->clear();
  for (;;) {
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return db_.error("scan");
    BlobMeta m;
    m.key = column_bytes(s, 0);
    if (Status st = read_meta_columns(s, 1, &m); !st.is_ok()) return st;
    out->push_back(std::move(m));
  }
  return Status::ok();
}

Status IndexReader::scan_disk(int disk_id, std::string_view after, std::size_t limit,
                              std::vector<BlobMeta>* out) {
  sqlite3_stmt* s = scan_disk_.get();
  Reset r{s};
  sqlite3_bind_int(s, 1, disk_id);
  bind_blob(s, 2, after);
  sqlite3_bind_int64(s, 3, static_cast<sqlite3_int64>(limit));
  return scan_rows(s, out);
}

Result<std::uint64_t> IndexReader::count_disk(int disk_id) {
  sqlite3_bind_int(count_disk_.get(), 1, disk_id);
  return read_count(db_, count_disk_.get());
}

Result<std::vector<IndexReader::TargetHints>> IndexReader::hints_by_target() {
  sqlite3_stmt* s = by_target_.get();
  Reset r{s};
  std::vector<TargetHints> out;
  for (;;) {
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return db_.error("hints by target");
    TargetHints t;
    std::string id = column_bytes(s, 0);
    if (id.size() != t.target.size()) continue;
    std::memcpy(t.target.data(), id.data(), id.size());
    t.count = static_cast<std::uint64_t>(sqlite3_column_int64(s, 1));
    t.oldest_hlc = static_cast<std::uint64_t>(sqlite3_column_int64(s, 2));
    out.push_back(t);
  }
  return out;
}

Result<BlobMeta> IndexReader::lookup(std::string_view key) {
  sqlite3_stmt* s = lookup_.get();
  Reset r{s};
  bind_blob(s, 1, key);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_DONE) return Status::not_found();
  if (rc != SQLITE_ROW) return db_.error("lookup");
  BlobMeta m;
  m.key = std::string(key);
  if (Status st = read_meta_columns(s, 0, &m); !st.is_ok()) return st;
  return m;
}

Result<std::vector<BlobMeta>> IndexReader::hints(std::string_view after, std::size_t limit) {
  sqlite3_stmt* s = hints_.get();
  Reset r{s};
  bind_blob(s, 1, after);
  sqlite3_bind_int64(s, 2, static_cast<sqlite3_int64>(limit));
  std::vector<BlobMeta> out;
  for (;;) {
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return db_.error("hints");
    BlobMeta m;
    m.key = column_bytes(s, 0);
    if (Status st = read_meta_columns(s, 1, &m); !st.is_ok()) return st;
    out.push_back(std::move(m));
  }
  return out;
}

Result<std::uint64_t> IndexReader::count_expired_before(std::uint64_t before_ms) {
  sqlite3_bind_int64(count_expired_.get(), 1, static_cast<sqlite3_int64>(before_ms));
  return read_count(db_, count_expired_.get());
}

Result<std::uint64_t> IndexReader::count_hints() { return read_count(db_, count_hints_.get()); }

Result<std::vector<MissedWrite>> IndexReader::missed(std::size_t limit) {
  sqlite3_stmt* s = missed_.get();
  Reset r{s};
  sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(limit));
  std::vector<MissedWrite> out;
  for (;;) {
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return db_.error("missed");
    MissedWrite m;
    std::string target = column_bytes(s, 0);
    std::string node = column_bytes(s, 3);
    if (target.size() != m.target.size() || node.size() != m.version.node.size()) {
      return Status::corruption("bad hints row");
    }
    std::memcpy(m.target.data(), target.data(), target.size());
    m.key = column_bytes(s, 1);
    m.version.hlc = static_cast<std::uint64_t>(sqlite3_column_int64(s, 2));
    std::memcpy(m.version.node.data(), node.data(), node.size());
    out.push_back(std::move(m));
  }
  return out;
}

Status IndexReader::scan_positions(std::uint64_t from, std::uint64_t to, std::size_t limit,
                                   std::vector<BlobMeta>* out) {
  out->clear();
  sqlite3_stmt* s = scan_.get();
  Reset r{s};
  sqlite3_bind_int64(s, 1, position_column(from));
  sqlite3_bind_int64(s, 2, position_column(to));
  sqlite3_bind_int64(s, 3, static_cast<sqlite3_int64>(limit));
  return scan_rows(s, out);
}

Status IndexReader::list_versions(std::string_view prefix, std::string_view start,
                                  std::size_t limit, std::vector<KeyVersion>* rows,
                                  std::string* next) {
  // `start` and `prefix` may point into *next: copy before clearing it.
  std::string from(start > prefix ? start : prefix);
  std::string pre(prefix);
  rows->clear();
  next->clear();
  sqlite3_stmt* s = list_versions_.get();
  Reset r{s};
  bind_blob(s, 1, from);
  sqlite3_bind_int64(s, 2, static_cast<sqlite3_int64>(limit + 1));
  for (;;) {
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return db_.error("list_versions");
    std::string k = column_bytes(s, 0);
    if (k.compare(0, pre.size(), pre) != 0) break;  // past the prefix range
    if (rows->size() == limit) {
      *next = std::move(k);
      break;
    }
    KeyVersion row;
    row.key = std::move(k);
    row.version.hlc = static_cast<std::uint64_t>(sqlite3_column_int64(s, 1));
    std::string node = column_bytes(s, 2);
    if (node.size() != row.version.node.size()) {
      return Status::corruption("index row has a bad node length");
    }
    std::memcpy(row.version.node.data(), node.data(), node.size());
    int tomb = sqlite3_column_int(s, 3);
    row.tombstone = tomb != 0;
    row.unlinked = tomb == tombstone_unlinked;
    row.expires_ms = static_cast<std::uint64_t>(sqlite3_column_int64(s, 4));
    rows->push_back(std::move(row));
  }
  return Status::ok();
}

Result<std::uint64_t> IndexReader::count_live() { return read_count(db_, count_.get()); }

Result<std::string> IndexReader::get_meta(std::string_view name) {
  return read_meta(db_, meta_.get(), name);
}

// ---- writer ----

Status IndexWriter::open(const std::string& db_path, const std::vector<std::string>& disk_paths,
                         bool sync_commits) {
  if (Status s = db_.open(db_path, true); !s.is_ok()) return s;
  // WAL: readers never wait for the writer. synchronous=FULL: a commit is durable when
  // it returns, which is what a 201 promises (NORMAL for the periodic sync mode, and for
  // a batch whose every row the commit log holds: see Committer::index_all).
  if (Status s = db_.exec(sync_commits ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                                       : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;");
      !s.is_ok()) {
    return s;
  }
  synced_ = sync_commits;
  if (Status s = db_.exec(schema_sql); !s.is_ok()) return s;
  if (Status s = add_missing_columns(); !s.is_ok()) return s;
  Stmt ins, sel;
  if (Status s = ins.prepare(db_.get(), "INSERT OR IGNORE INTO disks(path) VALUES(?1)");
      !s.is_ok()) return s;
  if (Status s = sel.prepare(db_.get(), "SELECT id FROM disks WHERE path=?1"); !s.is_ok()) {
    return s;
  }
  for (const std::string& p : disk_paths) {
    bind_text(ins.get(), 1, p);
    if (Status s = step_done(db_, ins.get(), "insert disk"); !s.is_ok()) return s;
    Reset r{sel.get()};
    bind_text(sel.get(), 1, p);
    if (sqlite3_step(sel.get()) != SQLITE_ROW) return db_.error("select disk");
    disk_ids_.push_back(sqlite3_column_int(sel.get(), 0));
  }
  struct {
    Stmt* stmt;
    const char* sql;
  } stmts[] = {
      {&current_, "SELECT hlc,node,disk,tombstone,hint_for FROM blobs WHERE key=?1"},
      {&erase_, "DELETE FROM blobs WHERE key=?1"},
      {&add_hint_, "INSERT INTO hints(target,key,hlc,node) VALUES(?1,?2,?3,?4) "
                   "ON CONFLICT(target,key) DO UPDATE SET hlc=?3, node=?4 WHERE hlc<?3 OR "
                   "(hlc=?3 AND node<?4)"},
      {&drop_hint_, "DELETE FROM hints WHERE target=?1 AND key=?2 AND hlc=?3 AND node=?4"},
      {&upsert_,
       // An existing row is updated in place, never deleted and inserted again: its
       // position (a function of the key) stays, so blobs_position is left untouched, one
       // b-tree page fewer to write per overwrite or delete.
       "INSERT INTO blobs(key,position,hlc,node,tombstone,size,md5,content_type,disk,"
       "hint_for,attrs,expires_ms) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12) "
       "ON CONFLICT(key) DO UPDATE SET hlc=?3,node=?4,tombstone=?5,size=?6,md5=?7,"
       "content_type=?8,disk=?9,hint_for=?10,attrs=?11,expires_ms=?12"},
      {&add_trash_, "INSERT OR IGNORE INTO trash(path) VALUES(?1)"},
      {&trash_, "SELECT path FROM trash"},
      {&clear_trash_, "DELETE FROM trash WHERE path=?1"},
      {&set_meta_, "INSERT OR REPLACE INTO meta(name,value) VALUES(?1,?2)"},
      {&get_meta_, meta_get_sql},
      {&count_, count_sql},
      {&begin_, "BEGIN IMMEDIATE"},
      {&begin_read_, "BEGIN"},
      {&commit_, "COMMIT"},
      {&rollback_, "ROLLBACK"},
  };
  for (auto& st : stmts) {
    if (Status s = st.stmt->prepare(db_.get(), st.sql); !s.is_ok()) return s;
  }
  return Status::ok();
}

// Databases made before attributes existed lack their columns: added at open (existing
// rows get NULL, which reads as a format-1 file without attributes or expiry).
Status IndexWriter::add_missing_columns() {
  Stmt info;
  if (Status s = info.prepare(db_.get(), "PRAGMA table_info(blobs)"); !s.is_ok()) return s;
  bool has_attrs = false, has_expires = false;
  for (;;) {
    int rc = sqlite3_step(info.get());
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return db_.error("table_info");
    std::string name = column_bytes(info.get(), 1);
    has_attrs = has_attrs || name == "attrs";
    has_expires = has_expires || name == "expires_ms";
  }
  sqlite3_reset(info.get());
  if (!has_attrs) {
    if (Status s = db_.exec("ALTER TABLE blobs ADD COLUMN attrs BLOB"); !s.is_ok()) return s;
  }
  if (!has_expires) {
    if (Status s = db_.exec("ALTER TABLE blobs ADD COLUMN expires_ms INTEGER"); !s.is_ok()) return s;
  }
  // Only expiring rows: finding values due for purging costs nothing without them.
  return db_.exec("CREATE INDEX IF NOT EXISTS blobs_expires ON blobs(expires_ms) "
                  "WHERE expires_ms IS NOT NULL");
}

Status IndexWriter::begin() { return step_done(db_, begin_.get(), "begin"); }
Status IndexWriter::begin_read() { return step_done(db_, begin_read_.get(), "begin"); }
Status IndexWriter::commit() { return step_done(db_, commit_.get(), "commit"); }
Status IndexWriter::rollback() { return step_done(db_, rollback_.get(), "rollback"); }

Status IndexWriter::set_synced(bool synced) {
  if (synced == synced_) return Status::ok();
  if (Status s = db_.exec(synced ? "PRAGMA synchronous=FULL;" : "PRAGMA synchronous=NORMAL;"); !s.is_ok()) {
    return s;
  }
  synced_ = synced;
  return Status::ok();
}

Result<std::optional<StoredVersion>> IndexWriter::current(std::string_view key) {
  sqlite3_stmt* s = current_.get();
  Reset r{s};
  bind_blob(s, 1, key);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_DONE) return std::optional<StoredVersion>();
  if (rc != SQLITE_ROW) return db_.error("current");
  StoredVersion v;
  v.version.hlc = static_cast<std::uint64_t>(sqlite3_column_int64(s, 0));
  std::string node = column_bytes(s, 1);
  if (node.size() != v.version.node.size()) return Status::corruption("bad node column");
  std::memcpy(v.version.node.data(), node.data(), node.size());
  v.disk = disk_index_of(disk_ids_, sqlite3_column_int(s, 2));
  v.tombstone = sqlite3_column_int(s, 3) != 0;
  v.is_hint = sqlite3_column_type(s, 4) != SQLITE_NULL;
  std::string hint_for = column_bytes(s, 4);
  if (v.is_hint && hint_for.size() == v.hint_for.size()) {
    std::memcpy(v.hint_for.data(), hint_for.data(), hint_for.size());
  }
  return std::optional<StoredVersion>(v);
}

Status IndexWriter::upsert(const BlobMeta& m) {
  ASSERT(m.disk >= 0 && static_cast<std::size_t>(m.disk) < disk_ids_.size());
  sqlite3_stmt* s = upsert_.get();
  bind_blob(s, 1, m.key);
  sqlite3_bind_int64(s, 2, position_column(ring::key_position(m.key)));
  sqlite3_bind_int64(s, 3, static_cast<sqlite3_int64>(m.version.hlc));
  bind_blob(s, 4, std::string_view(reinterpret_cast<const char*>(m.version.node.data()), 16));
  sqlite3_bind_int(s, 5, tombstone_column(m));
  sqlite3_bind_int64(s, 6, static_cast<sqlite3_int64>(m.size));
  bind_blob(s, 7, std::string_view(reinterpret_cast<const char*>(m.md5.data()), 16));
  bind_text(s, 8, m.content_type);
  sqlite3_bind_int(s, 9, disk_ids_[m.disk]);
  if (m.is_hint) {
    bind_blob(s, 10, std::string_view(reinterpret_cast<const char*>(m.hint_for.data()), 16));
  } else {
    sqlite3_bind_null(s, 10);
  }
  // NULL marks a format-1 file (see read_meta_columns); an empty blob is "no attributes".
  if (m.format == footer_format_v1) {
    sqlite3_bind_null(s, 11);
  } else if (m.attrs.empty()) {
    sqlite3_bind_zeroblob(s, 11, 0);
  } else {
    bind_blob(s, 11, m.attrs);
  }
  if (m.expires_ms != 0) {
    sqlite3_bind_int64(s, 12, static_cast<sqlite3_int64>(m.expires_ms));
  } else {
    sqlite3_bind_null(s, 12);
  }
  return step_done(db_, s, "upsert");
}

namespace {
void bind_hint(sqlite3_stmt* s, const NodeId& target, std::string_view key, const Version& v) {
  bind_blob(s, 1, std::string_view(reinterpret_cast<const char*>(target.data()), target.size()));
  bind_blob(s, 2, key);
  sqlite3_bind_int64(s, 3, static_cast<sqlite3_int64>(v.hlc));
  bind_blob(s, 4, std::string_view(reinterpret_cast<const char*>(v.node.data()), v.node.size()));
}
}  // namespace

Status IndexWriter::add_hint(const NodeId& target, std::string_view key, const Version& v) {
  bind_hint(add_hint_.get(), target, key, v);
  return step_done(db_, add_hint_.get(), "add hint");
}

Status IndexWriter::drop_hint(const NodeId& target, std::string_view key, const Version& v) {
  bind_hint(drop_hint_.get(), target, key, v);
  return step_done(db_, drop_hint_.get(), "drop hint");
}

Status IndexWriter::erase(std::string_view key) {
  bind_blob(erase_.get(), 1, key);
  return step_done(db_, erase_.get(), "erase");
}

Status IndexWriter::add_trash(const std::string& path) {
  bind_text(add_trash_.get(), 1, path);
  return step_done(db_, add_trash_.get(), "add trash");
}

Result<std::vector<std::string>> IndexWriter::trash() {
  sqlite3_stmt* s = trash_.get();
  Reset r{s};
  std::vector<std::string> out;
  for (;;) {
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return db_.error("trash");
    out.push_back(column_bytes(s, 0));
  }
  return out;
}

Status IndexWriter::clear_trash(const std::string& path) {
  bind_text(clear_trash_.get(), 1, path);
  return step_done(db_, clear_trash_.get(), "clear trash");
}

Status IndexWriter::set_meta(std::string_view name, std::string_view value) {
  bind_text(set_meta_.get(), 1, name);
  bind_blob(set_meta_.get(), 2, value);
  return step_done(db_, set_meta_.get(), "set meta");
}

Result<std::string> IndexWriter::get_meta(std::string_view name) {
  return read_meta(db_, get_meta_.get(), name);
}

Result<std::uint64_t> IndexWriter::count_live() { return read_count(db_, count_.get()); }

}  // namespace blobstore
