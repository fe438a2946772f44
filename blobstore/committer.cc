#include "blobstore/committer.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "blobstore/limits.h"
#include "common/thread_name.h"

namespace blobstore {

namespace {

std::string final_path(Disks* disks, const CommitOp& op) {
  return disks->path(op.meta.disk) + "/" + blob_relative_path(op.meta.key, op.meta.version);
}

// The temp file of an op that will not be committed (a small value may have none).
void drop_temp(const CommitOp& op) {
  if (!op.temp_path.empty()) unlink(op.temp_path.c_str());
}

}  // namespace

CommitOp::~CommitOp() {
  if (temp_fd >= 0) close(temp_fd);
}

Committer::Committer(IndexWriter* index, Disks* disks, std::function<void()> notify,
                     FaultHook fault, FilePool* pool, TempFiles* temp_files,
                     std::string pool_prefix, std::uint64_t linger_ms, SyncPolicy sync)
    : index_(index),
      disks_(disks),
      notify_(std::move(notify)),
      fault_(std::move(fault)),
      pool_(pool),
      temp_files_(temp_files),
      pool_prefix_(std::move(pool_prefix)),
      linger_ms_(linger_ms),
      sync_(std::move(sync)) {
  ASSERT(sync_.period_ms > 0);
  ASSERT(sync_.mode == SyncMode::always || sync_.log == nullptr);
  ASSERT((sync_.log == nullptr) == (sync_.pending == nullptr));
  ASSERT(temp_files_ != nullptr);
}

Committer::~Committer() { stop(); }

void Committer::start() {
  ASSERT(!thread_.joinable());
  if (sync_.log != nullptr && !log_held_) indexed_ = sync_.log->head();
  thread_ = std::thread([this] {
    common::name_this_thread("rs-committer");
    run();
  });
  if (sync_.mode == SyncMode::periodic || sync_.log != nullptr) {
    syncer_ = std::thread([this] {
      common::name_this_thread("rs-syncer");
      run_syncer();
    });
  }
}

void Committer::stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard<std::mutex> l(sync_mu_);
    sync_stopping_ = true;
  }
  sync_cv_.notify_all();
  if (syncer_.joinable()) syncer_.join();
}

bool Committer::submit(std::unique_ptr<CommitOp> op) {
  ASSERT(!op->has_file() || op->temp_fd >= 0 || !op->pending.empty());
  {
    std::lock_guard<std::mutex> l(mu_);
    ASSERT(!stopping_);
    if (queue_.size() >= limits::commit_queue_max) return false;
    op->submitted = std::chrono::steady_clock::now();
    if (!op->background) {
      foreground_queued_++;
    } else if (op->is_write() && background_writes_queued_++ == 0) {
      oldest_background_ = std::chrono::steady_clock::now();
    }
    queue_.push_back(std::move(op));
  }
  cv_.notify_one();
  return true;
}

void Committer::run_completions(const std::function<void(const CommitOp&)>& before) {
  std::vector<std::unique_ptr<CommitOp>> done;
  {
    std::lock_guard<std::mutex> l(done_mu_);
    done.swap(done_);
  }
  const auto now = std::chrono::steady_clock::now();
  for (auto& op : done) {
    if (!op->background) {
      stages_.ack.observe_since(op->finished, now);
      stages_.local.observe_since(op->submitted, now);
    }
    if (before) before(*op);
    op->done(std::move(op->status), op->result);
  }
}

void Committer::run() {
  for (;;) {
    Batch batch;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything submitted is committed
      if (!ready_locked()) {
        cv_.wait_until(l, oldest_background_ + std::chrono::milliseconds(linger_ms_),
                       [this] { return ready_locked(); });
      }
      while (!queue_.empty() && batch.size() < limits::commit_batch_max) {
        const CommitOp& op = *queue_.front();
        if (!op.background) foreground_queued_--;
        if (op.background && op.is_write()) background_writes_queued_--;
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      if (background_writes_queued_ > 0) oldest_background_ = std::chrono::steady_clock::now();
    }
    const auto start = std::chrono::steady_clock::now();
    for (const auto& op : batch) {
      if (!op->background) stages_.queue.observe_since(op->submitted, start);
    }
    process(batch);
    finish(batch);
    stages_.batch.observe_since(start);
  }
}

// Periodic mode and the commit log, on its own thread so that a batch never waits for
// it: every period in which the committer renamed a file or committed the index
// (periodic) or logged a file, one sync round. Once stopping, a last one.
void Committer::run_syncer() {
  auto period = std::chrono::milliseconds(sync_.period_ms);
  for (bool last = false; !last;) {
    {
      std::unique_lock<std::mutex> l(sync_mu_);
      last = sync_cv_.wait_for(l, period, [this] { return sync_stopping_; });
    }
    if (!unsynced_.exchange(false)) continue;
    sync_round();
  }
}

// With a commit log, the pending files are written out first. Then one syncfs() per
// filesystem that holds a healthy disk or the index. A disk whose filesystem fails to
// sync may have lost acknowledged writes: it is marked failed, and the disk repair
// copies its keys back from other replicas. Then the commit log drops the records
// logged before the round began: their files are durable now, or on a failed disk, or
// superseded. A round in which a sync failed, or a file could not be written out,
// drops nothing.
void Committer::sync_round() {
  std::lock_guard<std::mutex> round(round_mu_);
  if (crashed_) return;  // a simulated power cut: nothing more reaches the disks
  CommitLog::Mark mark;
  if (sync_.log != nullptr) {
    std::lock_guard<std::mutex> l(mark_mu_);
    mark = indexed_;
  }
  // Every record before the mark has its file in PendingFiles or under its name by now.
  const bool written = write_out_pending();
  std::map<std::uint64_t, std::string> per_device;  // a path on each filesystem
  for (std::size_t i = 0; i < disks_->size(); i++) {
    int d = static_cast<int>(i);
    if (disks_->healthy(d)) per_device.emplace(disks_->device(d), disks_->path(d));
  }
  struct stat st;
  if (stat(sync_.index_dir.c_str(), &st) == 0) {
    per_device.emplace(static_cast<std::uint64_t>(st.st_dev), sync_.index_dir);
  } else {
    periodic_sync_errors_.fetch_add(1, std::memory_order_relaxed);
  }
  bool all_synced = true;
  for (const auto& [dev, path] : per_device) {
    Status s = syncfs_path(path);
    periodic_syncs_.fetch_add(1, std::memory_order_relaxed);
    if (s.is_ok()) continue;
    all_synced = false;
    periodic_sync_errors_.fetch_add(1, std::memory_order_relaxed);
    for (std::size_t i = 0; i < disks_->size(); i++) {
      int d = static_cast<int>(i);
      if (disks_->device(d) == dev) disks_->mark_failed(d, s.message());
    }
  }
  // After a failed sync, or a file that could not be written out, the records stay: a
  // later round (or the replay) still has them. The next period tries again even if
  // nothing new is logged by then, and so it does while files wait for a failed disk.
  if (sync_.log == nullptr) return;
  bool dropped = all_synced && written && sync_.log->checkpoint(mark).is_ok();
  if (dropped) log_checkpoints_.fetch_add(1, std::memory_order_relaxed);
  if (!dropped || sync_.pending->count() > 0) unsynced_.store(true);
}

// Writes out every pending file of a healthy disk under its final name. The bytes go to
// a temp file outside PendingFiles' lock; the rename happens under it, and only while the
// version is still pending. True when each of them left PendingFiles; one that could not
// be written stays for the next round, and so does its record.
// The files of a disk marked failed stay in memory, not in the log: the disk may come
// back as it was (one is marked failed for a full filesystem, and rechecked), and they
// are written out then, unless the disk repair has moved their keys to another disk or
// forgotten them meanwhile, which supersedes them. Their records go with the round's
// checkpoint, as the records of a failed disk always did, so that a disk out for hours
// does not hold the log: a kill or power cut while it is out loses those copies there,
// and a read or the scrub finds them missing and refetches them, as any damaged copy.
bool Committer::write_out_pending() {
  if (sync_.pending == nullptr) return true;
  bool all = true;
  for (const auto& [path, f] : sync_.pending->snapshot()) {
    // A full disk keeps its files in memory, as a failed one does, until it has room.
    if (disks_->writable(f.disk) && !write_out(path, f).is_ok()) all = false;
  }
  return all;
}

Status Committer::write_out(const std::string& path, const PendingFiles::File& f) {
  TempFiles::File t;
  if (Status s = temp_files_->open(f.disk, &t); !s.is_ok()) return s;  // a bad disk is marked
  const std::uint64_t size = f.bytes->size();
  Status s = TempFiles::fill(t, *f.bytes);
  int err = s.is_ok() ? 0 : errno;
  close(t.fd);
  bool held = false;
  if (s.is_ok()) {
    s = sync_.pending->place(path, [&] {
      if (Status d = make_blob_dir(parent_of(path), nullptr, &round_dirs_); !d.is_ok()) {
        err = errno;
        return d;
      }
      if (rename(t.path.c_str(), path.c_str()) == 0) return Status::ok();
      err = errno;
      return Status::from_errno("rename " + path, err);
    }, &held);
  }
  if (!s.is_ok()) {
    disks_->mark_error(f.disk, err, "writing out a logged file: " + s.message());
    round_dirs_.clear();  // a directory may have gone: make them again next time
    unlink(t.path.c_str());
    return s;
  }
  if (held) {
    files_written_out_.fetch_add(1, std::memory_order_relaxed);
    return Status::ok();
  }
  // Superseded meanwhile: the file was never visible, so it can be handed out at once.
  if (pool_ != nullptr && pool_->wants(f.disk, size)) {
    pool_->add_ready(f.disk, t.path, size);
  } else {
    unlink(t.path.c_str());
  }
  return Status::ok();
}

// Whether the queue is worth a batch now: anything a client waits for, or background
// writes enough for one syncfs(). Background writes alone wait up to the linger.
bool Committer::ready_locked() const {
  return stopping_ || foreground_queued_ > 0 || background_writes_queued_ >= limits::syncfs_batch_min ||
         background_writes_queued_ == 0;
}

// Returns true when the batch must stop here. A simulated crash leaves every file where
// it is, as a power cut would, and fails everything after it. An injected failure
// removes the batch's files, as the real error paths do.
bool Committer::fault(WriteStep step, Batch& batch) {
  FaultAction a = fault_ ? fault_(step) : FaultAction::proceed;
  if (a == FaultAction::proceed) return false;
  for (auto& op : batch) {
    if (!op->status.is_ok()) continue;
    op->status = Status::io_error(a == FaultAction::crash ? "simulated crash" : "injected fault");
    if (a == FaultAction::fail && op->has_file() && step < WriteStep::indexed) {
      drop_temp(*op);
      if (op->logged) {
        unlog(op.get());
      } else if (op->result.applied) {
        unlink(final_path(disks_, *op).c_str());
      }
    }
    op->result.applied = false;
  }
  if (a == FaultAction::crash) crashed_ = true;
  return true;
}

void Committer::process(Batch& batch) {
  if (crashed_) {
    for (auto& op : batch) op->status = Status::io_error("simulated crash");
    return;
  }
  if (fault(WriteStep::written, batch)) return;
  std::vector<CommitOp*> winners, others;
  for (auto& op : batch) {
    if (!op->is_write()) others.push_back(op.get());
  }
  // Deciding first means that a write which loses to a newer version is never synced.
  decide_winners(batch, &winners);
  log_small(winners);
  write_pending(winners);
  rename_all(winners);
  if (fault(WriteStep::renamed, batch)) return;
  make_durable(winners);
  if (fault(WriteStep::synced, batch)) return;
  index_all(winners, others);
  if (sync_.log != nullptr) {
    std::lock_guard<std::mutex> l(mark_mu_);
    if (!log_held_) indexed_ = sync_.log->head();
  }
  if (fault(WriteStep::indexed, batch)) return;
  batches_.fetch_add(1, std::memory_order_relaxed);
}

// Last writer wins: a write not newer than what the index (or an earlier write of this
// batch) holds is dropped, and a stored version that loses becomes trash.
void Committer::decide_winners(Batch& batch, std::vector<CommitOp*>* winners) {
  // One read transaction for the batch's lookups (a failed begin leaves each alone).
  bool in_txn = index_->begin_read().is_ok();
  std::unordered_map<std::string, CommitOp*> newest;
  for (auto& op : batch) {
    if (!op->status.is_ok() || !op->is_write()) continue;
    auto it = newest.find(op->meta.key);
    CommitOp* prev = it == newest.end() ? nullptr : it->second;
    if (prev == nullptr) {
      auto cur = index_->current(op->meta.key);
      if (!cur.is_ok()) {
        op->status = cur.take_status();
        drop_temp(*op);
        continue;
      }
      const auto& stored = cur.value();
      op->stored = stored;
      // A stored copy on a failed disk is lost: the same version written again (the
      // disk repair, read repair) replaces it on a healthy disk.
      bool stored_lost = stored && stored->disk >= 0 && !disks_->healthy(stored->disk);
      if (stored && !stored_lost && stored->version >= op->meta.version) {
        if (stored->version > op->meta.version) op->result.newer = stored->version;
        discard(op.get());  // older than what we hold: ignored, still ok
        continue;
      }
      newest[op->meta.key] = op.get();
      continue;
    }
    if (prev->meta.version >= op->meta.version) {
      if (prev->meta.version > op->meta.version) op->result.newer = prev->meta.version;
      discard(op.get());
      continue;
    }
    discard(prev);
    op->stored = prev->stored;
    newest[op->meta.key] = op.get();
  }
  if (in_txn) (void)index_->commit();
  for (auto& op : batch) {
    auto it = newest.find(op->meta.key);
    if (it != newest.end() && it->second == op.get()) {
      op->result.applied = true;
      winners->push_back(op.get());
    }
  }
}

// The always mode's small files go to the commit log. Each one is put in PendingFiles
// before its record is appended, so that a round which takes the log's head and then
// writes out PendingFiles covers every record before that head. A log that cannot take
// them leaves them to write_pending(); a failed append fails them.
void Committer::log_small(std::vector<CommitOp*>& winners) {
  if (sync_.log == nullptr) return;
  std::vector<CommitOp*> small;
  for (CommitOp* op : winners) {
    if (!op->status.is_ok() || op->no_log) continue;
    const bool file = op->has_file();
    if (file && op->pending.empty()) continue;  // a large value: synced in place
    if (!sync_.log->can_hold(disks_->path(op->meta.disk).size(), op->meta.key.size(), op->pending.size())) {
      continue;
    }
    if (file) {
      sync_.pending->add(final_path(disks_, *op),
                         {op->meta.disk, std::make_shared<const std::string>(op->pending)});
      op->logged = true;
    }
    op->in_log = true;
    small.push_back(op);
  }
  if (small.empty()) return;
  if (!log_batch(small)) {
    for (CommitOp* op : small) {
      unlog(op);  // to write_pending(), as files
      op->in_log = false;
    }
    return;
  }
  for (CommitOp* op : small) {
    if (op->status.is_ok()) continue;  // the append failed
    unlog(op);
    op->in_log = false;
    op->result.applied = false;
  }
}

// Takes a logged op's file back out of PendingFiles: its record did not reach the log,
// or its batch failed. A round may have written the file out meanwhile.
void Committer::unlog(CommitOp* op) {
  if (!op->logged) return;
  op->logged = false;
  std::string path = final_path(disks_, *op);
  if (!sync_.pending->erase(path)) unlink(path.c_str());
}

// Small values that did not go to the log get a temp file here (a pooled one when
// ready), off the loop thread, and reach it in one write with their footer. A buffered
// write of a few KiB can still wait for a while (the pages of a reused file under
// writeback, dirty throttling): here it holds back the batch, not the loop.
void Committer::write_pending(std::vector<CommitOp*>& winners) {
  for (CommitOp* op : winners) {
    if (op->pending.empty() || op->logged || !op->status.is_ok()) continue;
    if (op->temp_fd < 0) {
      // On its disk, or the next healthy one: the op is not renamed or indexed yet.
      TempFiles::File t;
      if (Status s = temp_files_->open_on_some(&op->meta.disk, &t); !s.is_ok()) {
        op->status = std::move(s);
        op->result.applied = false;
        continue;
      }
      op->temp_path = std::move(t.path);
      op->temp_fd = t.fd;
      if (t.reused_bytes > op->pending.size()) op->truncate_to = op->pending.size();
    }
    Status s = write_all(op->temp_fd, op->pending.data(), op->pending.size(), op->temp_path, 0);
    if (s.is_ok() && op->truncate_to > 0 && ftruncate(op->temp_fd, static_cast<off_t>(op->truncate_to)) != 0) {
      s = Status::from_errno("truncate " + op->temp_path, errno);
    }
    if (!s.is_ok()) {
      int err = errno;
      disks_->mark_error(op->meta.disk, err, s.message());
      unlink(op->temp_path.c_str());
      op->status = is_full_error(err) ? no_room() : std::move(s);
      op->result.applied = false;
    }
  }
}

void Committer::rename_all(std::vector<CommitOp*>& winners) {
  for (CommitOp* op : winners) {
    if (!op->status.is_ok() || !op->has_file() || op->logged) continue;
    std::string dst = final_path(disks_, *op);
    Status s = make_blob_dir(parent_of(dst), &new_dirs_[disks_->device(op->meta.disk)], &known_dirs_);
    if (s.is_ok() && rename(op->temp_path.c_str(), dst.c_str()) != 0) {
      int err = errno;
      s = Status::from_errno("rename " + dst, err);
      disks_->mark_error(op->meta.disk, err, s.message());
      if (is_full_error(err)) s = no_room();
    }
    if (!s.is_ok()) {
      unlink(op->temp_path.c_str());
      op->status = std::move(s);
      op->result.applied = false;
    }
  }
}

// One durability point per filesystem for the whole batch: the files' bytes and inodes,
// the renames, and the directories just made. A batch of syncfs_batch_min or more
// writes on one filesystem takes one syncfs() there: one journal commit (~2-5 ms here),
// where an fsync per file and per directory costs a journal commit each (~1 ms apiece),
// and with a new blob directory for most writes of a young store (65,536 of them per
// disk) that was two or three per write. A smaller batch fsyncs each file, its
// directory and the directories just made (whose entries syncfs covers otherwise).
// The renames come before this point, so a crash can leave a file under its final name
// whose bytes never reached the disk. Nothing trusts such a file: the index names it
// only after this returns, and rebuild checks every file's MD5 before it uses it.
// A tombstone has no file: its index row, committed (and synced) next, is all of it.
void Committer::make_durable(std::vector<CommitOp*>& winners) {
  std::map<std::uint64_t, std::vector<CommitOp*>> per_device;
  // Periodic mode syncs nothing here: the batch's index commit marks it for the syncer.
  // Logged files are durable already.
  for (CommitOp* op : winners) {
    if (!op->status.is_ok() || !op->has_file() || op->logged || sync_.mode != SyncMode::always) continue;
    per_device[disks_->device(op->meta.disk)].push_back(op);
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& [dev, ops] : per_device) {
    // With a commit log, directories that logged writes made may not be durable yet
    // (a sync round makes them so): only a syncfs() covers them for these files too.
    if (ops.size() >= limits::syncfs_batch_min || sync_.log != nullptr) {
      Status s = syncfs_path(disks_->path(ops.front()->meta.disk));
      batch_syncs_.fetch_add(1, std::memory_order_relaxed);
      for (CommitOp* op : ops) op->status = s;
      continue;
    }
    std::set<std::string> dirs;
    batch_syncs_.fetch_add(ops.size(), std::memory_order_relaxed);
    for (CommitOp* op : ops) {
      if (fsync(op->temp_fd) != 0) {
        int err = errno;
        op->status = Status::from_errno("fsync " + op->temp_path, err);
        disks_->mark_error(op->meta.disk, err, op->status.message());
        if (is_full_error(err)) op->status = no_room();
      }
      dirs.insert(parent_of(final_path(disks_, *op)));
    }
    // A directory made for this batch has its own entry in its parent.
    for (const std::string& d : new_dirs_[dev]) dirs.insert(d);
    std::map<std::string, Status> st;
    for (const std::string& d : dirs) st[d] = fsync_path(d);
    Status made = Status::ok();
    for (const std::string& d : new_dirs_[dev]) {
      if (!st[d].is_ok()) made = st[d];
    }
    for (CommitOp* op : ops) {
      const Status& ds = st[parent_of(final_path(disks_, *op))];
      if (op->status.is_ok() && !ds.is_ok()) op->status = ds;
      if (op->status.is_ok() && !made.is_ok()) op->status = made;
    }
  }
  if (!per_device.empty()) stages_.file_sync.observe_since(t0);
  new_dirs_.clear();
  for (CommitOp* op : winners) {
    // The body stays (without the footer) for the loop's value cache: a read soon after
    // a write is the common case.
    if (!op->pending.empty()) {
      op->pending.resize(op->status.is_ok() ? op->meta.size : 0);
      op->pending.shrink_to_fit();
    }
    if (op->temp_fd >= 0) close(op->temp_fd);
    op->temp_fd = -1;
    if (!op->status.is_ok() && op->result.applied && op->has_file()) {
      if (op->logged) {
        unlog(op);
      } else {
        unlink(final_path(disks_, *op).c_str());
      }
      op->result.applied = false;
    }
  }
}

// The small files of an always-mode batch go to the commit log, whole, in one append
// and one fdatasync. A full log first takes a sync round here (which writes out the
// pending files, these included). False: the log cannot take them (the caller writes
// them to files and syncs them in place); a failed append fails them.
bool Committer::log_batch(std::vector<CommitOp*>& ops) {
  log_entries_.clear();
  for (CommitOp* op : ops) {
    const BlobMeta& m = op->meta;
    log_entries_.push_back({disks_->path(m.disk), m.key, m.version, op->pending, m.tombstone,
                            m.unlinked, m.is_hint, m.hint_for});
  }
  if (!sync_.log->fits(log_entries_)) sync_round();
  if (!sync_.log->fits(log_entries_)) return false;
  const auto t0 = std::chrono::steady_clock::now();
  Status s = sync_.log->append(log_entries_);
  stages_.log_sync.observe_since(t0);
  batch_syncs_.fetch_add(1, std::memory_order_relaxed);
  log_entries_.clear();
  if (s.is_ok()) {
    unsynced_.store(true);
    return true;
  }
  for (CommitOp* op : ops) op->status = s;
  return true;
}

void Committer::index_all(std::vector<CommitOp*>& winners, std::vector<CommitOp*>& erases) {
  // `erases` holds every op that is not a write: the hint, damage, purge and meta ops.
  std::vector<std::string>& trash = superseded_;
  trash.clear();
  std::int64_t live_delta = 0;
  auto fail_all = [&](Status s) {
    index_->rollback().is_ok();
    for (CommitOp* op : winners) {
      if (!op->status.is_ok()) continue;
      if (op->logged) {
        unlog(op);
      } else if (op->has_file()) {
        unlink(final_path(disks_, *op).c_str());
      }
      op->status = s;
      op->result.applied = false;
      op->result.replica_changed = false;
    }
    for (CommitOp* op : erases) {
      op->status = s;
      op->result.replica_changed = false;
    }
    trash.clear();
  };
  if (sync_.mode == SyncMode::always) {
    // Synced unless the log holds every row this batch changes (the trash rows aside:
    // after a power cut the trash is only swept again).
    bool logged = erases.empty();
    for (CommitOp* op : winners) logged = logged && (!op->status.is_ok() || op->in_log);
    if (Status s = index_->set_synced(!logged); !s.is_ok()) return fail_all(std::move(s));
  }
  if (Status s = index_->begin(); !s.is_ok()) return fail_all(std::move(s));
  for (const std::string& p : unlinked_trash_) {
    if (Status s = index_->clear_trash(p); !s.is_ok()) return fail_all(std::move(s));
  }
  for (CommitOp* op : winners) {
    if (!op->status.is_ok()) continue;
    // The row as decide_winners read it: only this thread writes blob rows.
    const std::optional<StoredVersion>& cur = op->stored;
    bool was_live = cur && !cur->tombstone && !cur->is_hint;
    const bool hinted = op->meta.is_hint;
    // A copy this node already holds as a replica stays one when a hinted write updates it.
    if (cur && !cur->is_hint) op->meta.is_hint = false;
    if (cur && cur->disk >= 0) {
      Version old = cur->version;
      std::string old_path = disks_->path(cur->disk) + "/" +
                             blob_relative_path(op->meta.key, old);
      // The same version rewritten on the same disk has the same name: the rename just
      // replaced the old file, which must not go to the trash.
      if (old_path != final_path(disks_, *op)) {
        if (Status s = index_->add_trash(old_path); !s.is_ok()) return fail_all(std::move(s));
        trash.push_back(std::move(old_path));
      }
    }
    // This node now keeps the key for two reasons. One file serves both: the other
    // owner gets a missed-write record pointing at this copy (delivered like any hint),
    // never a second copy of the bytes.
    if (hinted && !op->meta.is_hint) {
      if (Status s = index_->add_hint(op->meta.hint_for, op->meta.key, op->meta.version); !s.is_ok()) {
        return fail_all(std::move(s));
      }
    }
    if (hinted && cur && cur->is_hint && cur->hint_for != op->meta.hint_for) {
      if (Status s = index_->add_hint(cur->hint_for, op->meta.key, op->meta.version); !s.is_ok()) {
        return fail_all(std::move(s));
      }
    }
    if (Status s = index_->upsert(op->meta); !s.is_ok()) return fail_all(std::move(s));
    note_replica_change(op, cur, !op->meta.is_hint);
    live_delta += (op->meta.tombstone || op->meta.is_hint ? 0 : 1) - (was_live ? 1 : 0);
  }
  for (CommitOp* op : erases) {
    if (op->kind == CommitOp::Kind::set_meta) {
      if (Status s = index_->set_meta(op->meta.key, op->meta_value); !s.is_ok()) return fail_all(std::move(s));
      op->result.applied = true;
      continue;
    }
    if (op->kind == CommitOp::Kind::add_hint || op->kind == CommitOp::Kind::drop_hint) {
      Status s = op->kind == CommitOp::Kind::add_hint
                     ? index_->add_hint(op->target, op->meta.key, op->meta.version)
                     : index_->drop_hint(op->target, op->meta.key, op->meta.version);
      if (!s.is_ok()) return fail_all(std::move(s));
      op->result.applied = true;
      continue;
    }
    auto cur = index_->current(op->meta.key);
    if (!cur.is_ok()) return fail_all(cur.take_status());
    const auto& c = cur.value();
    bool damaged = op->kind == CommitOp::Kind::drop_damaged;
    bool purge = op->kind == CommitOp::Kind::purge;
    if (!c || c->version != op->meta.version) continue;
    if (purge) {
      // A tombstone has no file: only its row goes.
      if (c->is_hint) continue;
    } else if ((!c->is_hint && !damaged) || c->disk < 0) {
      continue;
    }
    if ((damaged || purge) && !c->is_hint && !c->tombstone) live_delta--;
    note_replica_change(op, c, /*after=*/false);
    if (c->disk < 0) {
      if (Status s = index_->erase(op->meta.key); !s.is_ok()) return fail_all(std::move(s));
      op->result.applied = true;
      continue;
    }
    std::string path = disks_->path(c->disk) + "/" + blob_relative_path(op->meta.key, c->version);
    if (Status s = index_->add_trash(path); !s.is_ok()) return fail_all(std::move(s));
    trash.push_back(std::move(path));
    if (Status s = index_->erase(op->meta.key); !s.is_ok()) return fail_all(std::move(s));
    op->result.applied = true;
  }
  auto t0 = std::chrono::steady_clock::now();
  if (Status s = index_->commit(); !s.is_ok()) return fail_all(std::move(s));
  // Periodic mode: the syncer's next round covers the files renamed and this commit.
  if (sync_.mode == SyncMode::periodic) unsynced_.store(true);
  stages_.index_commit.observe_since(t0);
  unlinked_trash_.clear();
  live_keys_.fetch_add(static_cast<std::uint64_t>(live_delta), std::memory_order_relaxed);
}

// The temp file of a write that lost to a newer version goes back to the pool when it
// is small, instead of being unlinked: freeing an inode (at the last close) costs about
// as much as making one here. It cools like a superseded file, since a coordinator may
// still be sending its spool to other replicas.
void Committer::discard(CommitOp* op) {
  if (!op->has_file() || op->temp_path.empty()) return;
  struct stat st;
  if (pool_ != nullptr && op->temp_fd >= 0 && fstat(op->temp_fd, &st) == 0 &&
      pool_->wants(op->meta.disk, static_cast<std::uint64_t>(st.st_size))) {
    close(op->temp_fd);
    op->temp_fd = -1;
    pool_->add(op->meta.disk, op->temp_path, static_cast<std::uint64_t>(st.st_size), monotonic_ms());
    return;
  }
  unlink(op->temp_path.c_str());
}

// Moves a superseded file into the pool when it is small and the pool has room, else
// unlinks it. True once nothing is left at `path`.
bool Committer::retire(const std::string& path) {
  int disk = -1;
  for (std::size_t i = 0; i < disks_->size() && disk < 0; i++) {
    const std::string& root = disks_->path(static_cast<int>(i));
    if (path.compare(0, root.size(), root) == 0 && path.size() > root.size() && path[root.size()] == '/') {
      disk = static_cast<int>(i);
    }
  }
  struct stat st;
  if (pool_ != nullptr && disk >= 0 && stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
      pool_->wants(disk, static_cast<std::uint64_t>(st.st_size))) {
    std::string dst = disks_->path(disk) + "/tmp/" + pool_prefix_ + std::to_string(++pool_seq_);
    // RENAME_NOREPLACE: a pooled file of an earlier run with the same name stays whole.
    if (renameat2(AT_FDCWD, path.c_str(), AT_FDCWD, dst.c_str(), RENAME_NOREPLACE) == 0) {
      pool_->add(disk, std::move(dst), static_cast<std::uint64_t>(st.st_size), monotonic_ms());
      return true;
    }
  }
  return unlink(path.c_str()) == 0 || errno == ENOENT;
}

// Records the replica row before (when it was not a hint) and after the op (when
// `after` is set, the op's own meta).
void Committer::note_replica_change(CommitOp* op, const std::optional<StoredVersion>& before,
                                    bool after) {
  if (before && !before->is_hint) op->result.replica_before = before;
  if (after) {
    StoredVersion now;
    now.version = op->meta.version;
    now.tombstone = op->meta.tombstone;
    now.disk = op->meta.disk;
    op->result.replica_after = now;
  }
  op->result.replica_changed = op->result.replica_before || op->result.replica_after;
}

void Committer::finish(Batch& batch) {
  for (auto& op : batch) {
    if (op->status.is_ok()) op->result.md5 = op->meta.md5;
    // Here, not on the thread that runs the callbacks: the last close of an unlinked
    // file frees its inode, which takes milliseconds on this filesystem.
    if (op->temp_fd >= 0) {
      close(op->temp_fd);
      op->temp_fd = -1;
    }
  }
  {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> l(done_mu_);
    for (auto& op : batch) {
      op->finished = now;
      done_.push_back(std::move(op));
    }
  }
  if (notify_) notify_();
  if (!crashed_) {
    // The superseded versions are no longer referenced: reuse or unlink them now, and
    // clear their trash rows in the next transaction (at start, leftover rows are
    // processed again). After the acknowledgements: a rename into the pool or an unlink
    // per superseded file took most of a batch of DELETEs (or overwrites) of files.
    for (const std::string& p : superseded_) {
      // A version that was still pending never became a file: nothing to retire.
      if (sync_.pending != nullptr && sync_.pending->erase(p)) {
        files_never_written_.fetch_add(1, std::memory_order_relaxed);
        unlinked_trash_.push_back(p);
        continue;
      }
      if (retire(p)) unlinked_trash_.push_back(p);
    }
    superseded_.clear();
  }
}

}  // namespace blobstore
