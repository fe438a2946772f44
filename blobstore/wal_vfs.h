// The SQLite VFS every index connection opens its database with: SQLite's "unix-excl"
// (the process holds the file's lock from its first access to its last close; the WAL
// index lives in this process's memory), plus one change for WAL files: the writes a
// transaction makes to its WAL are gathered and reach the kernel as one pwrite.
//
// SQLite writes each WAL frame as two pwrites, its 24-byte header and then the page: a
// batch that changes eight pages made sixteen write system calls, each taking the
// file's lock and an ext4 journal handle (as much CPU on the committer thread as the
// batch's fdatasync). Gathered, they are one.
//
// The gathered bytes are not in the file yet, so every other access to that WAL goes
// through the gathering first: a read, size, truncate, sync, file control or close by
// any connection writes them out before it runs (a reader that sees the new frames in
// the WAL index finds them in the file). Every commit writes them out before it
// returns (flush_wal_on_commit, the connection's WAL hook). A kill before then loses
// that transaction, which nobody has been told of yet and whose rows the commit log
// holds; a synced commit writes them out before its sync.
// Thread: any; the state shared by one WAL's connections is guarded by a mutex.
#pragma once

#include <cstdint>

#include "common/status.h"

struct sqlite3;

namespace blobstore {

// The VFS's name for sqlite3_open_v2, registered on the first call.
const char* wal_vfs_name();

// Writes out the WAL writes `db` holds back.
Status flush_wal(sqlite3* db);

// Has every commit of `db` write out its gathered WAL writes before it returns (its WAL
// hook, which also runs SQLite's automatic checkpoint as the default hook does).
void flush_wal_on_commit(sqlite3* db);

// WAL writes gathered and pwrites made of them since start (for tests).
struct WalVfsCounters {
  std::uint64_t writes = 0;   // xWrite calls to WAL files
  std::uint64_t pwrites = 0;  // writes out of the gathered bytes
};
WalVfsCounters wal_vfs_counters();

}  // namespace blobstore
