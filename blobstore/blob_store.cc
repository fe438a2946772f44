#include "blobstore/blob_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <set>
#include <thread>
#include <unordered_set>

#include "blobstore/limits.h"

namespace blobstore {

namespace {

constexpr int open_retries_max = 3;  // a newer version may replace the file between lookup and open

}  // namespace

std::vector<std::string> default_disks(const std::string& data_dir,
                                       const std::vector<std::string>& disks) {
  if (!disks.empty()) return disks;
  return {data_dir + "/disk0"};
}

BlobWriter::~BlobWriter() {
  if (relay_held_ > 0) relay_->fetch_sub(relay_held_);
  if (fd_ >= 0) {
    close(fd_);
    unlink(temp_path_.c_str());
  }
}

Status BlobWriter::append(const char* data, std::size_t n) {
  if (!spilled_ && held_.size() + n > limits::small_value_bytes_max) {
    if (meta_.disk < 0) {
      if (!relay(n)) return no_room();
    } else if (Status s = spill(); !s.is_ok()) {
      return s;
    }
  }
  if (spilled_) {
    if (Status s = write_through(data, n); !s.is_ok()) return s;
  } else {
    held_.append(data, n);
  }
  md5_.update(data, n);
  meta_.size += n;
  return Status::ok();
}

// Every disk is full: the body grows in memory by `more` bytes if it stays within
// limits::relay_bytes_max and the store's relay budget.
bool BlobWriter::relay(std::size_t more) {
  const std::uint64_t want = held_.size() + more;
  if (relay_ == nullptr || want > limits::relay_bytes_max) return false;
  const std::uint64_t delta = want - relay_held_;
  if (relay_->fetch_add(delta) + delta > limits::relay_total_bytes_max) {
    relay_->fetch_sub(delta);
    return false;
  }
  relay_held_ = want;
  return true;
}

// The body outgrew memory (or a descriptor is wanted): it goes to a temp file on the
// writer's disk, or on another healthy one when that disk cannot create files.
Status BlobWriter::spill() {
  if (spilled_) return Status::ok();
  ASSERT(fd_ < 0);
  if (meta_.disk < 0) return no_room();  // every disk is full: the value stays small or fails
  TempFiles::File f;
  if (Status s = temp_files_->open_on_some(&meta_.disk, &f); !s.is_ok()) return s;
  temp_path_ = std::move(f.path);
  fd_ = f.fd;
  reused_bytes_ = f.reused_bytes;
  spilled_ = true;
  Status s = write_through(held_.data(), held_.size());
  std::string().swap(held_);
  return s;
}

// A write error that points at the device marks the disk failed (EIO, ...) or full
// (ENOSPC, EDQUOT, EROFS: the client is told 507, with no path of this node).
Status BlobWriter::write_through(const char* data, std::size_t n) {
  Status s = write_all(fd_, data, n, temp_path_);
  if (s.is_ok() || disks_ == nullptr) return s;
  int err = errno;
  disks_->mark_error(meta_.disk, err, s.message());
  return is_full_error(err) ? no_room() : s;
}

BlobHandle::~BlobHandle() {
  if (fd_ >= 0) close(fd_);
}

BlobHandle& BlobHandle::operator=(BlobHandle&& o) noexcept {
  if (this == &o) return *this;
  if (fd_ >= 0) close(fd_);
  meta = std::move(o.meta);
  fd_ = o.fd_;
  o.fd_ = -1;
  held_ = std::move(o.held_);
  return *this;
}

Result<std::unique_ptr<BlobStore>> BlobStore::open(Options options) {
  std::unique_ptr<BlobStore> store(new BlobStore());
  if (Status s = store->start(options); !s.is_ok()) return s;
  return store;
}

Status BlobStore::start(Options& options) {
  if (mkdir(options.data_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Status::from_errno("mkdir " + options.data_dir, errno);
  }
  std::vector<std::string> paths = default_disks(options.data_dir, options.disks);
  auto disks = Disks::open(paths);
  if (!disks.is_ok()) return disks.take_status();
  disks_ = std::move(disks.value());
  std::string db_path = options.data_dir + "/index.db";
  if (Status s = writer_.open(db_path, paths, options.sync.mode == SyncMode::always); !s.is_ok()) {
    return s;
  }
  if (Status s = reader_.open(db_path); !s.is_ok()) return s;
  if (Status s = meta_writer_.open(db_path, paths); !s.is_ok()) return s;

  auto id = writer_.get_meta("node_id");
  if (id.is_ok() && id.value().size() == node_id_.size()) {
    std::copy(id.value().begin(), id.value().end(), node_id_.begin());
  } else {
    ASSERT(RAND_bytes(node_id_.data(), static_cast<int>(node_id_.size())) == 1);
    std::string_view v(reinterpret_cast<const char*>(node_id_.data()), node_id_.size());
    if (Status s = writer_.set_meta("node_id", v); !s.is_ok()) return s;
  }
  cache_ = ValueCache(options.cache_bytes);
  pool_ = std::make_unique<FilePool>(disks_->size(), limits::pooled_files_max,
                                     limits::pooled_blocks_bytes_max, options.pool_cool_ms);
  sweep();
  // Names of this run's temp and pooled files: random, so that they never meet the
  // pooled files a previous run left in DISK/tmp (in a container the pid is always 1).
  std::array<std::uint8_t, 6> run{};
  ASSERT(RAND_bytes(run.data(), static_cast<int>(run.size())) == 1);
  temp_prefix_ = hex(run.data(), run.size()) + "-";
  if (options.stock_files) {
    stock_ = std::make_unique<FileStock>(pool_.get(), disks_.get(), temp_prefix_ + "s");
  }
  temp_files_ = std::make_unique<TempFiles>(pool_.get(), disks_.get(), stock_.get(), temp_prefix_);
  SyncPolicy sync = options.sync;
  sync.index_dir = options.data_dir;
  if (sync.mode == SyncMode::always && options.commit_log_bytes > 0) {
    auto log = CommitLog::open(options.data_dir + "/commit.log", options.commit_log_bytes);
    if (!log.is_ok()) return log.take_status();
    log_ = std::move(log.value());
    if (Status s = replay_log(); !s.is_ok()) return s;
    replayed_rows_ = replays_.size();
    pending_ = std::make_unique<PendingFiles>();
    sync.log = log_.get();
    sync.pending = pending_.get();
  }
  committer_ = std::make_unique<Committer>(&writer_, disks_.get(), options.notify, options.fault,
                                           pool_.get(), temp_files_.get(), temp_prefix_ + "p",
                                           options.background_linger_ms, std::move(sync));
  auto live = writer_.count_live();
  if (!live.is_ok()) return live.take_status();
  committer_->set_live_keys(live.value());
  if (log_) committer_->hold_log(true);  // until the replay is done
  committer_->start();
  if (log_) {
    if (Status s = apply_replayed_rows(); !s.is_ok()) return s;
  }
  if (stock_) {
    stock_->start();
    for (std::size_t i = 0; i < disks_->size(); i++) stock_->wake(static_cast<int>(i), monotonic_ms());
  }
  notify_ = options.notify;
  if (options.scrub.enabled()) {
    scrubber_ = std::make_unique<Scrubber>(db_path, disks_.get(), writer_.disk_ids(), pending_.get(),
                                           options.scrub,
                                           [this](const BlobMeta& m) {
                                             {
                                               std::lock_guard<std::mutex> l(damaged_mu_);
                                               if (damaged_.size() >= limits::damaged_queue_max) return;
                                               damaged_.push_back(m);
                                             }
                                             if (notify_) notify_();
                                           });
    scrubber_->start();
  }
  return Status::ok();
}

BlobStore::~BlobStore() {
  if (stock_) stock_->stop();
  if (scrubber_) scrubber_->stop();
  if (committer_) committer_->stop();
}

bool BlobStore::check_disks(std::uint64_t now_ms) {
  if (disks_checked_ms_ != 0 && now_ms - disks_checked_ms_ < limits::disk_check_interval_ms) {
    return false;
  }
  disks_checked_ms_ = now_ms;
  bool changed = disks_->check(now_ms);
  for (std::size_t i = 0; i < disks_->size(); i++) {
    int d = static_cast<int>(i);
    if (disks_->healthy(d)) continue;
    std::vector<BlobMeta> rows;
    bool drained = rows_on_disk(d, "", 1, &rows).is_ok() && rows.empty();
    changed |= disks_->recheck(d, drained);
  }
  return changed;
}

Status BlobStore::rows_on_disk(int disk, std::string_view after, std::size_t limit,
                               std::vector<BlobMeta>* out) {
  ASSERT(disk >= 0 && static_cast<std::size_t>(disk) < writer_.disk_ids().size());
  Status s = reader_.scan_disk(writer_.disk_ids()[disk], after, limit, out);
  for (BlobMeta& m : *out) m.disk = disk;
  return s;
}

bool BlobStore::held_on_failed_disk(std::string_view key) {
  auto m = reader_.lookup(key);
  if (!m.is_ok() || m.value().tombstone) return false;
  int disk = disk_index_of(writer_.disk_ids(), m.value().disk);
  return disk >= 0 && !disks_->healthy(disk);
}

Status BlobStore::forget(const BlobMeta& m, CommitCallback done) {
  cache_.erase(m.key);
  return hint_op(CommitOp::Kind::drop_damaged, NodeId{}, m.key, m.version, std::move(done));
}

// Temp files left by a crash were never acknowledged, and pooled files hold nothing:
// the small ones join the pool (ready at once: no reader can hold them), the rest are
// removed. Trash rows name superseded versions whose unlink may not have happened.
void BlobStore::sweep() {
  for (std::size_t i = 0; i < disks_->size(); i++) {
    int disk = static_cast<int>(i);
    std::string tmp = disks_->path(disk) + "/tmp";
    DIR* d = opendir(tmp.c_str());
    if (d == nullptr) continue;
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      std::string path = tmp + "/" + name;
      struct stat st;
      if (lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
          pool_->wants(disk, static_cast<std::uint64_t>(st.st_size))) {
        pool_->add_ready(disk, std::move(path), static_cast<std::uint64_t>(st.st_size));
        continue;
      }
      unlink(path.c_str());
    }
    closedir(d);
  }
  auto trash = writer_.trash();
  if (!trash.is_ok()) return;
  for (const std::string& p : trash.value()) {
    if (unlink(p.c_str()) == 0 || errno == ENOENT) (void)writer_.clear_trash(p);
  }
}

// After a power cut, the files whose records are still in the commit log may have lost
// their bytes or their names, and the index the rows of its last unsynced commits. Each
// record whose row the index holds (the same version on the same disk) has its file
// written again. A record newer than the index's row was lost from the index: it goes
// through the committer again (apply_replayed_rows), as a write that is synced in
// place, which also redoes what its first commit did (the hint records, the trash of
// the version it superseded). An older record was superseded. Once every record is
// whole again and synced, the log drops them.
Status BlobStore::replay_log() {
  std::set<int> touched;
  std::unordered_set<std::string> dirs;  // blob directories there or made
  Status lookup_error = Status::ok();
  Status status = log_->replay([&](const CommitLog::Entry& e) {
    if (!lookup_error.is_ok()) return;
    int disk = -1;
    for (std::size_t i = 0; i < disks_->size(); i++) {
      if (disks_->path(static_cast<int>(i)) == e.disk_path) disk = static_cast<int>(i);
    }
    if (e.tombstone && (disk < 0 || !disks_->healthy(disk))) disk = disks_->any_healthy();
    if (disk < 0 || !disks_->healthy(disk)) return;
    auto cur = writer_.current(e.key);
    if (!cur.is_ok()) {
      lookup_error = cur.take_status();
      return;
    }
    if (cur.value() && cur.value()->version > e.version) return;  // superseded
    const bool held = cur.value() && cur.value()->version == e.version;
    if (held && e.tombstone) return;
    std::string path = disks_->path(disk) + "/" + blob_relative_path(e.key, e.version);
    if (held && cur.value()->disk == disk) {
      Status s = write_blob_file(path, e.file, &dirs);  // syncfs covers the entries
      if (!s.is_ok()) {
        disks_->mark_failed(disk, "commit log replay: " + s.message());
        keep_log_ = true;
        return;
      }
      touched.insert(disk);
      replayed_files_++;
      return;
    }
    if (held) return;  // the same version on another disk: the row's copy stands
    auto op = std::make_unique<CommitOp>();
    op->no_log = true;
    op->meta.key = std::string(e.key);
    op->meta.version = e.version;
    op->meta.disk = disk;
    op->meta.is_hint = e.is_hint;
    op->meta.hint_for = e.hint_for;
    if (e.tombstone) {
      op->meta.tombstone = true;
      op->meta.unlinked = e.unlinked;
      replays_.push_back(std::move(op));
      return;
    }
    // The file to a temp file, whose footer says the rest of the row.
    TempFiles::File t;
    Status s = temp_files_->open(disk, &t);
    if (s.is_ok()) s = TempFiles::fill(t, e.file);
    int rfd = s.is_ok() ? ::open(t.path.c_str(), O_RDONLY | O_CLOEXEC) : -1;  // t.fd may be write-only
    if (s.is_ok() && rfd < 0) s = Status::from_errno("open " + t.path, errno);
    Result<BlobMeta> m = s.is_ok() ? read_footer(rfd, e.file.size()) : Result<BlobMeta>(s);
    if (rfd >= 0) close(rfd);
    if (m.is_ok() && (m.value().key != e.key || m.value().version != e.version)) {
      m = Status::corruption("the record's file names another key or version");
    }
    if (!m.is_ok()) {
      if (t.fd >= 0) close(t.fd);
      if (!t.path.empty()) unlink(t.path.c_str());
      if (m.status().code() == Code::corruption) return;  // never a value: nothing to apply
      disks_->mark_failed(disk, "commit log replay: " + m.status().message());
      keep_log_ = true;
      return;
    }
    BlobMeta meta = std::move(m.value());
    meta.disk = disk;
    meta.is_hint = e.is_hint;
    meta.hint_for = e.hint_for;
    op->meta = std::move(meta);
    op->temp_path = std::move(t.path);
    op->temp_fd = t.fd;
    replays_.push_back(std::move(op));
  });
  if (!status.is_ok()) return status;
  if (!lookup_error.is_ok()) return lookup_error;
  for (int disk : touched) {
    if (!disks_->healthy(disk)) continue;
    if (Status s = syncfs_path(disks_->path(disk)); !s.is_ok()) {
      disks_->mark_failed(disk, "commit log replay: " + s.message());
      keep_log_ = true;
    }
  }
  return Status::ok();
}

// The records whose rows the index lost, through the started committer (synced in
// place, never logged again), and then the checkpoint that drops every record.
Status BlobStore::apply_replayed_rows() {
  std::size_t pending = replays_.size(), failed = 0;
  for (auto& op : replays_) {
    op->done = [&](Status s, CommitResult) {
      pending--;
      if (!s.is_ok()) failed++;
    };
    if (!committer_->submit(std::move(op))) return Status::unavailable("commit queue full during replay");
  }
  replays_.clear();
  while (pending > 0) {
    committer_->run_completions();
    if (pending > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (failed > 0) keep_log_ = true;
  committer_->hold_log(false);
  return keep_log_ ? Status::ok() : log_->checkpoint(log_->head());
}

Result<std::unique_ptr<BlobWriter>> BlobStore::begin_write(std::string_view key,
                                                           std::string_view content_type,
                                                           std::uint64_t now_ms) {
  ASSERT(!key.empty() && key.size() <= limits::key_bytes_max);
  ASSERT(content_type.size() <= limits::content_type_bytes_max);
  int disk = disks_->choose(key, now_ms);
  // Every disk full (none failed): a small value still arrives, in memory, so that this
  // node can coordinate it through the other replicas; it cannot be stored here.
  if (disk < 0 && disks_->any_healthy() < 0) return Status::unavailable("no healthy disk");
  std::unique_ptr<BlobWriter> w(new BlobWriter());
  w->meta_.key = std::string(key);
  w->meta_.content_type = std::string(content_type);
  w->meta_.disk = disk;
  w->disks_ = disks_.get();
  w->temp_files_ = temp_files_.get();
  if (disk < 0) w->relay_ = relay_;
  return w;
}

Status BlobStore::submit(std::unique_ptr<BlobWriter> w, CommitCallback done) {
  if (w->meta_.tombstone) {
    ASSERT(w->fd_ < 0 && w->meta_.size == 0);
    auto op = std::make_unique<CommitOp>();
    op->meta = w->meta_;
    op->background = w->background_;
    op->done = std::move(done);
    if (!committer_->submit(std::move(op))) return Status::unavailable("commit queue full");
    return Status::ok();
  }
  std::string footer = encode_footer(w->meta_);
  std::uint64_t file_bytes = w->meta_.size + footer.size();
  auto op = std::make_unique<CommitOp>();
  if (!w->spilled_) {
    // A small body and its footer go to the commit log, or to a file in one write, on
    // the committer thread.
    footer.insert(0, w->held_);
    op->pending = std::move(footer);
  } else {
    if (Status s = w->write_through(footer.data(), footer.size()); !s.is_ok()) return s;
    if (w->reused_bytes_ > file_bytes && ftruncate(w->fd_, static_cast<off_t>(file_bytes)) != 0) {
      return Status::from_errno("truncate " + w->temp_path_, errno);
    }
  }
  op->meta = w->meta_;
  op->temp_path = w->temp_path_;
  op->temp_fd = w->fd_;
  op->background = w->background_;
  op->done = std::move(done);
  w->fd_ = -1;  // the committer owns the file now
  if (!committer_->submit(std::move(op))) {
    // The op (and its fd) died with the refused submit; remove the temp file ourselves.
    unlink(w->temp_path_.c_str());
    return Status::unavailable("commit queue full");
  }
  return Status::ok();
}

int BlobWriter::open_read_fd() {
  if (!spill().is_ok()) return -1;
  return ::open(temp_path_.c_str(), O_RDONLY | O_CLOEXEC);
}

Result<BlobMeta> BlobStore::lookup(std::string_view key) {
  if (auto hit = cached(key, /*touch=*/false)) return hit->meta;  // same coherence as read()
  auto m = reader_.lookup(key);
  if (!m.is_ok()) return m;
  m.value().disk = disk_index_of(writer_.disk_ids(), m.value().disk);
  // A copy on a failed disk is not there to serve: the key reads as missing here, the
  // coordinator serves another replica, and the disk repair fetches it back.
  if (!m.value().tombstone && m.value().disk >= 0 && !disks_->healthy(m.value().disk)) {
    return Status::not_found("on a failed disk");
  }
  return m;
}

Result<BlobHandle> BlobStore::handle_of(BlobWriter& w, const Version& version) {
  BlobHandle h;
  h.fd_ = w.open_read_fd();
  if (h.fd_ < 0) return Status::from_errno("open spool", errno);
  h.meta = w.meta_;
  h.meta.version = version;
  h.meta.md5 = w.finish_md5();
  return h;
}

Md5Digest BlobWriter::finish_md5() {
  if (!md5_done_) {
    meta_.md5 = md5_.finish();
    md5_done_ = true;
  }
  return meta_.md5;
}

Status BlobStore::commit(std::unique_ptr<BlobWriter> w, const Version& version,
                         CommitCallback done) {
  if (w->meta_.disk < 0) return no_room();  // begun while every disk was full
  w->meta_.version = version;
  w->finish_md5();
  return submit(std::move(w), std::move(done));
}

Status BlobStore::hint_op(CommitOp::Kind kind, const NodeId& target, std::string_view key,
                          const Version& version, CommitCallback done) {
  auto op = std::make_unique<CommitOp>();
  op->kind = kind;
  op->target = target;
  op->meta.key = std::string(key);
  op->meta.version = version;
  op->done = std::move(done);
  if (!committer_->submit(std::move(op))) return Status::unavailable("commit queue full");
  return Status::ok();
}

Status BlobStore::put_meta_later(std::string_view name, std::string value, CommitCallback done) {
  auto op = std::make_unique<CommitOp>();
  op->kind = CommitOp::Kind::set_meta;
  op->meta.key = std::string(name);
  op->meta_value = std::move(value);
  op->done = std::move(done);
  if (!committer_->submit(std::move(op))) return Status::unavailable("commit queue full");
  return Status::ok();
}

Status BlobStore::erase_hint(std::string_view key, const Version& version, CommitCallback done) {
  auto op = std::make_unique<CommitOp>();
  op->kind = CommitOp::Kind::erase_hint;
  op->meta.key = std::string(key);
  op->meta.version = version;
  op->done = std::move(done);
  if (!committer_->submit(std::move(op))) return Status::unavailable("commit queue full");
  return Status::ok();
}

Status BlobStore::purge(std::string_view key, const Version& version, CommitCallback done) {
  return hint_op(CommitOp::Kind::purge, NodeId{}, key, version, std::move(done));
}

void BlobStore::report_damaged(const BlobMeta& m) {
  corrupt_reads_++;
  cache_.erase(m.key);
  (void)hint_op(CommitOp::Kind::drop_damaged, NodeId{}, m.key, m.version,
                [](Status, CommitResult) {});
  if (on_damaged_) on_damaged_(m);
}

std::string BlobStore::blob_path(const BlobMeta& m) const {
  return disks_->path(m.disk) + "/" + blob_relative_path(m.key, m.version);
}

Result<std::unique_ptr<BlobWriter>> BlobStore::begin_tombstone(std::string_view key,
                                                               std::uint64_t now_ms) {
  ASSERT(!key.empty() && key.size() <= limits::key_bytes_max);
  // The row still names a healthy disk, as every row does; nothing is written there,
  // so a full one does (a DELETE needs no room but the index's).
  int disk = disks_->choose(key, now_ms);
  if (disk < 0) disk = disks_->any_healthy();
  if (disk < 0) return Status::unavailable("no healthy disk");
  std::unique_ptr<BlobWriter> w(new BlobWriter());
  w->meta_.key = std::string(key);
  w->meta_.disk = disk;
  w->meta_.tombstone = true;
  w->disks_ = disks_.get();
  return w;
}

Status BlobStore::remove(std::string_view key, const Version& version, std::uint64_t now_ms,
                         CommitCallback done, bool unlinked) {
  auto w = begin_tombstone(key, now_ms);
  if (!w.is_ok()) return w.take_status();
  if (unlinked) w.value()->set_unlinked();
  return commit(std::move(w.value()), version, std::move(done));
}

Result<BlobHandle> BlobStore::open_read(std::string_view key) {
  for (int attempt = 0; attempt < open_retries_max; attempt++) {
    auto m = reader_.lookup(key);
    if (!m.is_ok()) return m.take_status();
    BlobHandle h;
    h.meta = std::move(m.value());
    h.meta.disk = disk_index_of(writer_.disk_ids(), h.meta.disk);
    if (h.meta.disk < 0) return Status::io_error("blob on a disk that is not configured");
    if (h.meta.tombstone) return h;
    if (!disks_->healthy(h.meta.disk)) return Status::not_found("on a failed disk");
    std::string path = disks_->path(h.meta.disk) + "/" + blob_relative_path(key, h.meta.version);
    std::uint64_t expect = h.meta.size + footer_bytes(h.meta);
    if (pending_) {
      if ((h.held_ = pending_->find(path))) {
        ASSERT(h.held_->size() == expect);
        return h;
      }
    }
    h.fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (h.fd_ < 0) {
      if (errno == ENOENT) continue;  // replaced meanwhile: look again
      Status s = Status::from_errno("open " + path, errno);
      if (is_disk_error(errno)) {
        disks_->mark_failed(h.meta.disk, s.message());
        return Status::corruption("disk failed: " + s.message());  // serve another replica
      }
      return s;
    }
    struct stat st;
    if (fstat(h.fd_, &st) != 0) return Status::from_errno("stat " + path, errno);
    if (static_cast<std::uint64_t>(st.st_size) != expect) {
      report_damaged(h.meta);
      return Status::corruption("blob file has the wrong size: " + path);
    }
    return h;
  }
  // The index names a file that is not there (and no newer version replaced it): the
  // copy is lost, which is damage like any other.
  auto m = reader_.lookup(key);
  if (m.is_ok()) {
    m.value().disk = disk_index_of(writer_.disk_ids(), m.value().disk);
    report_damaged(m.value());
  }
  return Status::corruption("blob file missing");
}

void BlobStore::run_completions() {
  committer_->run_completions([this](const CommitOp& op) {
    if (op.kind == CommitOp::Kind::set_meta) return;  // meta.key names a meta row
    cache_written(op);
    if (change_listener_ && op.status.is_ok() && op.result.replica_changed) {
      change_listener_(op.meta.key, op.result);
    }
  });
  std::vector<BlobMeta> damaged;
  {
    std::lock_guard<std::mutex> l(damaged_mu_);
    damaged.swap(damaged_);
  }
  for (const BlobMeta& m : damaged) report_damaged(m);
}

// A copy on a disk that has failed since it was cached is not there to serve.
std::shared_ptr<const CachedValue> BlobStore::cached(std::string_view key, bool touch) {
  auto hit = touch ? cache_.get(key) : cache_.peek(key);
  if (hit && !hit->meta.tombstone && hit->meta.disk >= 0 && !disks_->healthy(hit->meta.disk)) {
    cache_.erase(key);
    return nullptr;
  }
  return hit;
}

// A small value a client wrote is cached as committed (a read of it soon after is the
// common case: no query, no open, no checksum pass); any other change of the key drops
// its entry. Writes no client waits for (anti-entropy, repair, hints) would push out
// the values being read, so they only drop it.
void BlobStore::cache_written(const CommitOp& op) {
  if (op.is_write() && op.status.is_ok() && !op.result.applied) return;  // the row is as it was
  bool cache = op.is_write() && op.status.is_ok() && !op.background && !op.meta.is_hint &&
               op.meta.size <= limits::small_value_bytes_max && op.pending.size() == op.meta.size;
  if (!cache) {
    cache_.erase(op.meta.key);
    return;
  }
  auto v = std::make_shared<CachedValue>();
  v->meta = op.meta;
  v->body = op.pending;
  cache_.put(std::move(v));
}

Result<std::shared_ptr<const CachedValue>> BlobStore::read(std::string_view key,
                                                           BlobHandle* large) {
  if (auto hit = cached(key, /*touch=*/true)) return hit;
  auto h = open_read(key);
  if (!h.is_ok()) return h.take_status();
  if (!h.value().meta.tombstone && h.value().meta.size > limits::small_value_bytes_max) {
    *large = std::move(h.value());
    return std::shared_ptr<const CachedValue>();
  }
  auto v = std::make_shared<CachedValue>();
  if (!h.value().meta.tombstone) {
    auto body = read_verified(h.value());
    if (!body.is_ok()) return body.take_status();
    v->body = std::move(body.value());
  }
  v->meta = std::move(h.value().meta);
  cache_.put(v);
  return std::shared_ptr<const CachedValue>(std::move(v));
}

Result<std::string> BlobStore::read_verified(const BlobHandle& h) {
  ASSERT(!h.meta.tombstone);
  if (h.held()) {
    // The bytes were checksummed as they arrived; checking again costs little and keeps
    // one rule for every read.
    std::string body = h.held()->substr(0, h.meta.size);
    if (md5_of(body) != h.meta.md5) return Status::corruption("checksum mismatch in memory");
    return body;
  }
  std::string body(h.meta.size, '\0');
  std::size_t done = 0;
  while (done < body.size()) {
    ssize_t n = pread(h.fd(), body.data() + done, body.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && is_disk_error(errno)) {
      Status s = Status::from_errno("read blob", errno);
      if (h.meta.disk >= 0) disks_->mark_failed(h.meta.disk, s.message());
      return Status::corruption("disk failed: " + s.message());
    }
    if (n < 0) return Status::from_errno("read blob", errno);
    if (n == 0) {
      report_damaged(h.meta);
      return Status::corruption("blob file truncated");
    }
    done += static_cast<std::size_t>(n);
  }
  if (md5_of(body) != h.meta.md5) {
    report_damaged(h.meta);
    return Status::corruption("checksum mismatch");
  }
  return body;
}


}  // namespace blobstore
