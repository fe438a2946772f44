#include "blobstore/wal_vfs.h"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <string>

#include "common/assert.h"

namespace blobstore {

namespace {

// Gathered bytes larger than this are written out at once.
constexpr std::size_t gather_bytes_max = 4 << 20;

// The state every connection's handle of one WAL file shares.
struct Gathered {
  std::mutex mu;
  int refs = 0;               // guarded by registry_mu
  sqlite3_int64 start = 0;    // the file offset of buf[0]
  std::string buf;            // writes not yet in the file, contiguous from `start`
};

std::mutex registry_mu;
std::map<std::string, Gathered*>* registry;  // WAL path -> shared state; guarded by registry_mu

std::atomic<std::uint64_t> wal_writes{0}, wal_pwrites{0};

// A WAL file: SQLite's own file object follows this header in the same allocation.
struct WalFile {
  sqlite3_file base;  // base.pMethods is &wal_methods
  Gathered* g;
  std::string* path;
  sqlite3_file* real;
};

sqlite3_vfs* under = nullptr;  // unix-excl
sqlite3_vfs vfs;
sqlite3_io_methods wal_methods;

WalFile* wal(sqlite3_file* f) { return reinterpret_cast<WalFile*>(f); }
const sqlite3_io_methods* real_methods(WalFile* w) { return w->real->pMethods; }

// Caller holds w->g->mu. On a failed write the bytes stay for the next attempt.
int write_out_locked(WalFile* w) {
  Gathered* g = w->g;
  // The unix VFS writes at most 128 KiB per call: it masks the length with 0x1ffff, so
  // a longer write is cut short and one of exactly 128 KiB writes nothing ("disk full").
  constexpr std::size_t piece_max = 64 << 10;
  for (std::size_t done = 0; done < g->buf.size();) {
    const std::size_t n = std::min(piece_max, g->buf.size() - done);
    int rc = real_methods(w)->xWrite(w->real, g->buf.data() + done, static_cast<int>(n),
                                     g->start + static_cast<sqlite3_int64>(done));
    if (rc != SQLITE_OK) {
      g->buf.erase(0, done);
      g->start += static_cast<sqlite3_int64>(done);
      return rc;
    }
    wal_pwrites.fetch_add(1, std::memory_order_relaxed);
    done += n;
  }
  g->buf.clear();
  return SQLITE_OK;
}

// Every access but a write and the lock calls: what is gathered goes out first, then the
// call itself reaches the real file.
template <typename Forward>
int after_write_out(sqlite3_file* f, Forward forward) {
  WalFile* w = wal(f);
  std::lock_guard<std::mutex> l(w->g->mu);
  if (int rc = write_out_locked(w); rc != SQLITE_OK) return rc;
  return forward(w->real, real_methods(w));
}

int wal_close(sqlite3_file* f) {
  WalFile* w = wal(f);
  int rc;
  {
    std::lock_guard<std::mutex> l(w->g->mu);
    rc = write_out_locked(w);
  }
  int rc2 = real_methods(w)->xClose(w->real);
  {
    std::lock_guard<std::mutex> l(registry_mu);
    if (--w->g->refs == 0) {
      registry->erase(*w->path);
      delete w->g;
    }
  }
  delete w->path;
  return rc != SQLITE_OK ? rc : rc2;
}

int wal_read(sqlite3_file* f, void* p, int n, sqlite3_int64 off) {
  return after_write_out(f, [&](sqlite3_file* r, const sqlite3_io_methods* m) { return m->xRead(r, p, n, off); });
}

int wal_write(sqlite3_file* f, const void* p, int n, sqlite3_int64 off) {
  WalFile* w = wal(f);
  Gathered* g = w->g;
  std::lock_guard<std::mutex> l(g->mu);
  wal_writes.fetch_add(1, std::memory_order_relaxed);
  const sqlite3_int64 end = g->start + static_cast<sqlite3_int64>(g->buf.size());
  if (!g->buf.empty() && off != end) {
    if (int rc = write_out_locked(w); rc != SQLITE_OK) return rc;
  }
  if (g->buf.empty()) g->start = off;
  g->buf.append(static_cast<const char*>(p), static_cast<std::size_t>(n));
  if (g->buf.size() >= gather_bytes_max) return write_out_locked(w);
  return SQLITE_OK;
}

int wal_truncate(sqlite3_file* f, sqlite3_int64 size) {
  return after_write_out(f, [&](sqlite3_file* r, const sqlite3_io_methods* m) { return m->xTruncate(r, size); });
}
int wal_sync(sqlite3_file* f, int flags) {
  return after_write_out(f, [&](sqlite3_file* r, const sqlite3_io_methods* m) { return m->xSync(r, flags); });
}
int wal_file_size(sqlite3_file* f, sqlite3_int64* size) {
  return after_write_out(f, [&](sqlite3_file* r, const sqlite3_io_methods* m) { return m->xFileSize(r, size); });
}

int wal_lock(sqlite3_file* f, int level) { return real_methods(wal(f))->xLock(wal(f)->real, level); }
int wal_unlock(sqlite3_file* f, int level) { return real_methods(wal(f))->xUnlock(wal(f)->real, level); }
int wal_check_reserved(sqlite3_file* f, int* out) {
  return real_methods(wal(f))->xCheckReservedLock(wal(f)->real, out);
}

int wal_file_control(sqlite3_file* f, int op, void* arg) {
  return after_write_out(f, [&](sqlite3_file* r, const sqlite3_io_methods* m) { return m->xFileControl(r, op, arg); });
}

int wal_sector_size(sqlite3_file* f) { return real_methods(wal(f))->xSectorSize(wal(f)->real); }
int wal_device_characteristics(sqlite3_file* f) {
  return real_methods(wal(f))->xDeviceCharacteristics(wal(f)->real);
}

// A WAL file never has a shared-memory WAL index or a mapping of its own: SQLite calls
// these on the database file only. They forward all the same.
int wal_shm_map(sqlite3_file* f, int pg, int pgsz, int extend, void volatile** pp) {
  return real_methods(wal(f))->xShmMap(wal(f)->real, pg, pgsz, extend, pp);
}
int wal_shm_lock(sqlite3_file* f, int offset, int n, int flags) {
  return real_methods(wal(f))->xShmLock(wal(f)->real, offset, n, flags);
}
void wal_shm_barrier(sqlite3_file* f) { real_methods(wal(f))->xShmBarrier(wal(f)->real); }
int wal_shm_unmap(sqlite3_file* f, int del) { return real_methods(wal(f))->xShmUnmap(wal(f)->real, del); }
int wal_fetch(sqlite3_file* f, sqlite3_int64 off, int n, void** pp) {
  *pp = nullptr;  // no mapping: SQLite reads with xRead instead
  (void)f, (void)off, (void)n;
  return SQLITE_OK;
}
int wal_unfetch(sqlite3_file* f, sqlite3_int64 off, void* p) {
  (void)f, (void)off, (void)p;
  return SQLITE_OK;
}

constexpr int wal_file_bytes = (static_cast<int>(sizeof(WalFile)) + 15) & ~15;

int vfs_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
  // Every file but a WAL is the underlying VFS's own object, in place.
  if ((flags & SQLITE_OPEN_WAL) == 0 || name == nullptr) return under->xOpen(under, name, f, flags, out_flags);
  WalFile* w = wal(f);
  w->base.pMethods = nullptr;  // SQLite calls no xClose on a file that failed to open
  w->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(f) + wal_file_bytes);
  int rc = under->xOpen(under, name, w->real, flags, out_flags);
  if (rc != SQLITE_OK) return rc;
  if (w->real->pMethods == nullptr) return SQLITE_IOERR;
  w->path = new std::string(name);
  {
    std::lock_guard<std::mutex> l(registry_mu);
    if (registry == nullptr) registry = new std::map<std::string, Gathered*>;
    Gathered*& g = (*registry)[*w->path];
    if (g == nullptr) g = new Gathered;
    g->refs++;
    w->g = g;
  }
  w->base.pMethods = &wal_methods;
  return SQLITE_OK;
}

int vfs_delete(sqlite3_vfs*, const char* name, int sync_dir) { return under->xDelete(under, name, sync_dir); }
int vfs_access(sqlite3_vfs*, const char* name, int flags, int* out) { return under->xAccess(under, name, flags, out); }
int vfs_full_pathname(sqlite3_vfs*, const char* name, int n, char* out) {
  return under->xFullPathname(under, name, n, out);
}
void* vfs_dl_open(sqlite3_vfs*, const char* name) { return under->xDlOpen(under, name); }
void vfs_dl_error(sqlite3_vfs*, int n, char* msg) { under->xDlError(under, n, msg); }
void (*vfs_dl_sym(sqlite3_vfs*, void* h, const char* sym))(void) { return under->xDlSym(under, h, sym); }
void vfs_dl_close(sqlite3_vfs*, void* h) { under->xDlClose(under, h); }
int vfs_randomness(sqlite3_vfs*, int n, char* out) { return under->xRandomness(under, n, out); }
int vfs_sleep(sqlite3_vfs*, int us) { return under->xSleep(under, us); }
int vfs_current_time(sqlite3_vfs*, double* out) { return under->xCurrentTime(under, out); }
int vfs_last_error(sqlite3_vfs*, int n, char* out) { return under->xGetLastError(under, n, out); }
int vfs_current_time64(sqlite3_vfs*, sqlite3_int64* out) { return under->xCurrentTimeInt64(under, out); }

void register_vfs() {
  under = sqlite3_vfs_find("unix-excl");
  ASSERT(under != nullptr && under->iVersion >= 2);
  vfs = sqlite3_vfs{};
  vfs.iVersion = 2;
  vfs.szOsFile = wal_file_bytes + under->szOsFile;
  vfs.mxPathname = under->mxPathname;
  vfs.zName = "ringstore-wal";
  vfs.xOpen = vfs_open;
  vfs.xDelete = vfs_delete;
  vfs.xAccess = vfs_access;
  vfs.xFullPathname = vfs_full_pathname;
  vfs.xDlOpen = vfs_dl_open;
  vfs.xDlError = vfs_dl_error;
  vfs.xDlSym = vfs_dl_sym;
  vfs.xDlClose = vfs_dl_close;
  vfs.xRandomness = vfs_randomness;
  vfs.xSleep = vfs_sleep;
  vfs.xCurrentTime = vfs_current_time;
  vfs.xGetLastError = vfs_last_error;
  vfs.xCurrentTimeInt64 = vfs_current_time64;

  wal_methods = sqlite3_io_methods{};
  wal_methods.iVersion = 3;
  wal_methods.xClose = wal_close;
  wal_methods.xRead = wal_read;
  wal_methods.xWrite = wal_write;
  wal_methods.xTruncate = wal_truncate;
  wal_methods.xSync = wal_sync;
  wal_methods.xFileSize = wal_file_size;
  wal_methods.xLock = wal_lock;
  wal_methods.xUnlock = wal_unlock;
  wal_methods.xCheckReservedLock = wal_check_reserved;
  wal_methods.xFileControl = wal_file_control;
  wal_methods.xSectorSize = wal_sector_size;
  wal_methods.xDeviceCharacteristics = wal_device_characteristics;
  wal_methods.xShmMap = wal_shm_map;
  wal_methods.xShmLock = wal_shm_lock;
  wal_methods.xShmBarrier = wal_shm_barrier;
  wal_methods.xShmUnmap = wal_shm_unmap;
  wal_methods.xFetch = wal_fetch;
  wal_methods.xUnfetch = wal_unfetch;
  int rc = sqlite3_vfs_register(&vfs, /*makeDflt=*/0);
  ASSERT(rc == SQLITE_OK);
}

}  // namespace

const char* wal_vfs_name() {
  static std::once_flag once;
  std::call_once(once, register_vfs);
  return vfs.zName;
}

namespace {

// Writes out what the WAL of `db`'s database `name` holds back (nothing when no WAL of
// ours is open).
int write_out_db(sqlite3* db, const char* name) {
  sqlite3_file* f = nullptr;
  if (sqlite3_file_control(db, name, SQLITE_FCNTL_JOURNAL_POINTER, &f) != SQLITE_OK || f == nullptr ||
      f->pMethods != &wal_methods) {
    return SQLITE_OK;
  }
  return after_write_out(f, [](sqlite3_file*, const sqlite3_io_methods*) { return SQLITE_OK; });
}

}  // namespace

Status flush_wal(sqlite3* db) {
  if (int rc = write_out_db(db, "main"); rc != SQLITE_OK) {
    return Status::io_error(std::string("sqlite: writing the WAL: ") + sqlite3_errstr(rc));
  }
  return Status::ok();
}

void flush_wal_on_commit(sqlite3* db) {
  // SQLite's default hook checkpoints a WAL of this many frames (its default).
  constexpr int checkpoint_frames = 1000;
  sqlite3_wal_hook(db, [](void*, sqlite3* d, const char* name, int frames) -> int {
    // The commit happened; an error here fails the statement, so nobody is told it did.
    if (int rc = write_out_db(d, name); rc != SQLITE_OK) return rc;
    if (frames >= checkpoint_frames) sqlite3_wal_checkpoint(d, name);
    return SQLITE_OK;
  }, nullptr);
}

WalVfsCounters wal_vfs_counters() {
  return {wal_writes.load(std::memory_order_relaxed), wal_pwrites.load(std::memory_order_relaxed)};
}

}  // namespace blobstore
