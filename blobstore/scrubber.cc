#include "blobstore/scrubber.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "blobstore/index.h"
#include "common/thread_name.h"

namespace blobstore {

namespace {

constexpr std::size_t read_chunk_bytes = 256 * 1024;
constexpr const char* position_meta = "scrub_position";
constexpr const char* passes_meta = "scrub_passes";

std::string column_bytes(sqlite3_stmt* s, int i) {
  const void* p = sqlite3_column_blob(s, i);
  int n = sqlite3_column_bytes(s, i);
  return p ? std::string(static_cast<const char*>(p), static_cast<std::size_t>(n)) : std::string();
}

// The scrub's own statements on its own connection.
struct ScrubDb {
  Db db;
  Stmt scan, current, get_meta, set_meta;

  Status open(const std::string& path) {
    if (Status s = db.open(path, false); !s.is_ok()) return s;
    if (Status s = scan.prepare(db.get(),
            "SELECT key,hlc,node,size,md5,disk FROM blobs WHERE key>?1 AND tombstone=0 "
            "ORDER BY key LIMIT ?2");
        !s.is_ok()) return s;
    if (Status s = current.prepare(db.get(), "SELECT hlc,node,disk FROM blobs WHERE key=?1");
        !s.is_ok()) return s;
    if (Status s = get_meta.prepare(db.get(), "SELECT value FROM meta WHERE name=?1"); !s.is_ok()) {
      return s;
    }
    return set_meta.prepare(db.get(), "INSERT OR REPLACE INTO meta(name,value) VALUES(?1,?2)");
  }

  std::string meta(const char* name) {
    sqlite3_stmt* s = get_meta.get();
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    std::string v = sqlite3_step(s) == SQLITE_ROW ? column_bytes(s, 0) : std::string();
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return v;
  }
  void put(const char* name, const std::string& value) {
    sqlite3_stmt* s = set_meta.get();
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 2, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
    (void)sqlite3_step(s);  // a lost position only means re-verifying a few files
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
  }

  // Up to `limit` rows after `after`; meta.disk holds the disk id.
  std::vector<BlobMeta> rows(const std::string& after, std::size_t limit) {
    std::vector<BlobMeta> out;
    sqlite3_stmt* s = scan.get();
    sqlite3_bind_blob(s, 1, after.data(), static_cast<int>(after.size()), SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, static_cast<sqlite3_int64>(limit));
    while (sqlite3_step(s) == SQLITE_ROW) {
      BlobMeta m;
      m.key = column_bytes(s, 0);
      m.version.hlc = static_cast<std::uint64_t>(sqlite3_column_int64(s, 1));
      std::string node = column_bytes(s, 2);
      m.size = static_cast<std::uint64_t>(sqlite3_column_int64(s, 3));
      std::string md5 = column_bytes(s, 4);
      m.disk = sqlite3_column_int(s, 5);
      if (node.size() != m.version.node.size() || md5.size() != m.md5.size()) continue;
      std::memcpy(m.version.node.data(), node.data(), node.size());
      std::memcpy(m.md5.data(), md5.data(), md5.size());
      out.push_back(std::move(m));
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return out;
  }

  // Whether the index still holds `m`'s version of its key on the same disk.
  bool still_current(const BlobMeta& m) {
    sqlite3_stmt* s = current.get();
    sqlite3_bind_blob(s, 1, m.key.data(), static_cast<int>(m.key.size()), SQLITE_TRANSIENT);
    bool same = false;
    if (sqlite3_step(s) == SQLITE_ROW) {
      std::string node = column_bytes(s, 1);
      same = static_cast<std::uint64_t>(sqlite3_column_int64(s, 0)) == m.version.hlc &&
             node.size() == m.version.node.size() &&
             std::memcmp(node.data(), m.version.node.data(), node.size()) == 0 &&
             sqlite3_column_int(s, 2) == m.disk;
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return same;
  }
};

}  // namespace

Scrubber::Scrubber(std::string db_path, Disks* disks, std::vector<int> disk_ids,
                   const PendingFiles* pending, ScrubConfig config,
                   std::function<void(const BlobMeta&)> on_damaged)
    : db_path_(std::move(db_path)), disks_(disks), disk_ids_(std::move(disk_ids)),
      pending_(pending), config_(config), on_damaged_(std::move(on_damaged)) {}

Scrubber::~Scrubber() { stop(); }

void Scrubber::start() {
  ASSERT(!thread_.joinable());
  if (!config_.enabled()) return;
  thread_ = std::thread([this] {
    common::name_this_thread("rs-scrubber");
    run();
  });
}

void Scrubber::stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

ScrubStats Scrubber::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

bool Scrubber::pace_until(std::chrono::steady_clock::time_point t) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait_until(l, t, [this] { return stopping_; });
  return !stopping_;
}

Status Scrubber::verify_file(const std::string& path, const BlobMeta& m, int* err) {
  *err = 0;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *err = errno;
    if (errno == ENOENT) return Status::corruption("blob file missing: " + path);
    return Status::from_errno("open " + path, errno);
  }
  struct stat st;
  std::uint64_t expect = m.size + m.key.size() + footer_fixed_bytes;  // + content type
  if (fstat(fd, &st) != 0 || static_cast<std::uint64_t>(st.st_size) < expect) {
    ::close(fd);
    return Status::corruption("blob file has the wrong size: " + path);
  }
  Md5 md5;
  std::string buf(read_chunk_bytes, '\0');
  std::uint64_t done = 0;
  while (done < m.size) {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), m.size - done));
    ssize_t n = pread(fd, buf.data(), want, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *err = n < 0 ? errno : 0;
      ::close(fd);
      if (n < 0) return Status::from_errno("read " + path, *err);
      return Status::corruption("blob file truncated: " + path);
    }
    md5.update(buf.data(), static_cast<std::size_t>(n));
    done += static_cast<std::uint64_t>(n);
  }
  ::close(fd);
  if (md5.finish() != m.md5) return Status::corruption("checksum mismatch: " + path);
  return Status::ok();
}

void Scrubber::run() {
  ScrubDb db;
  if (!db.open(db_path_).is_ok()) return;  // no scrub; the node goes on serving
  std::string position = db.meta(position_meta);
  std::uint64_t passes = 0;
  if (std::string p = db.meta(passes_meta); !p.empty()) passes = std::strtoull(p.c_str(), nullptr, 10);
  {
    std::lock_guard<std::mutex> l(mu_);
    stats_.position = position;
    stats_.passes = passes;
  }
  using Clock = std::chrono::steady_clock;
  auto next_at = Clock::now();
  for (;;) {
    std::vector<BlobMeta> rows = db.rows(position, limits::scrub_batch_files);
    if (rows.empty()) {
      position.clear();
      passes++;
      db.put(position_meta, position);
      db.put(passes_meta, std::to_string(passes));
      {
        std::lock_guard<std::mutex> l(mu_);
        stats_.position.clear();
        stats_.passes = passes;
      }
      if (!pace_until(Clock::now() + std::chrono::milliseconds(limits::scrub_pass_pause_ms))) return;
      next_at = Clock::now();
      continue;
    }
    for (BlobMeta& m : rows) {
      if (!pace_until(next_at)) return;
      // The slower of the two rates sets the pace: each file costs its share of both.
      double cost_s = std::max(static_cast<double>(m.size) / static_cast<double>(config_.bytes_per_s),
                               1.0 / static_cast<double>(config_.files_per_s));
      // Time lost to a slow file or index write is made up, but never more than one
      // second of it: the pace stays an average, not a burst after a stall.
      next_at = std::max(next_at, Clock::now() - std::chrono::seconds(1)) +
                std::chrono::microseconds(static_cast<std::int64_t>(cost_s * 1e6));
      position = m.key;
      int disk = disk_index_of(disk_ids_, m.disk);
      if (disk < 0 || !disks_->healthy(disk)) continue;  // the disk repair owns those rows
      std::string path = disks_->path(disk) + "/" + blob_relative_path(m.key, m.version);
      // Bytes still waiting in memory for their file: nothing on the disk to check yet.
      if (pending_ != nullptr && pending_->find(path) != nullptr) continue;
      int err = 0;
      Status s = verify_file(path, m, &err);
      bool damaged = s.code() == Code::corruption;
      // A file missing because a newer version replaced it meanwhile is not damage.
      if (damaged && err == ENOENT && !db.still_current(m)) continue;
      std::lock_guard<std::mutex> l(mu_);
      if (s.is_ok() || damaged) {
        stats_.files_verified++;
        stats_.bytes_verified += m.size;
      }
      if (!s.is_ok() && !damaged) {
        stats_.read_errors++;
        if (is_disk_error(err)) disks_->mark_failed(disk, "scrub: " + s.message());
      }
      if (damaged) {
        stats_.damaged++;
        m.disk = disk;
        on_damaged_(m);
      }
    }
    db.put(position_meta, position);
    std::lock_guard<std::mutex> l(mu_);
    stats_.position = position;
  }
}

}  // namespace blobstore
