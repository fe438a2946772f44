// Committer makes finished writes durable and visible in batches (group commit) on its
// own thread:
//   drop the writes older than what is stored → small files to the commit log (one
//   append, one fdatasync; the files wait in PendingFiles) → write the other small ones
//   and rename each temp file to its final name → one durability point per filesystem
//   for those files, their names and new directories (one syncfs() for a larger batch,
//   fsyncs for a small one) → one SQLite transaction → acknowledge every write of the
//   batch → retire the files the batch superseded (a pending one was never written).
// A write older than the stored version of its key is dropped (last writer wins), which
// makes every write idempotent.
// Owns: its thread and the queue. Thread: submit() and run_completions() from the loop
// thread; everything else runs on the committer thread.
// Lifetime: `index`, `disks` and `pool` must outlive the Committer.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "blobstore/blob_file.h"
#include "blobstore/commit_log.h"
#include "blobstore/disks.h"
#include "blobstore/file_pool.h"
#include "blobstore/index.h"
#include "blobstore/limits.h"
#include "blobstore/pending_files.h"
#include "common/latency_histogram.h"

namespace blobstore {

// Points of the write path where a test may inject a failure or a crash.
enum class WriteStep { written, renamed, synced, indexed };
enum class FaultAction { proceed, fail, crash };
using FaultHook = std::function<FaultAction(WriteStep)>;

struct CommitResult {
  bool applied = false;  // false: a newer or equal version was already stored
  // When the write lost to a strictly newer version (stored, or in the same batch): that
  // version, so that the coordinator can tell its client, or write again above it.
  std::optional<Version> newer;
  Md5Digest md5{};
  // How this node's replica row of the key (hint rows excluded) changed, for the
  // anti-entropy summaries: set only when the op changed it.
  bool replica_changed = false;
  std::optional<StoredVersion> replica_before, replica_after;
};
using CommitCallback = std::function<void(Status, CommitResult)>;

// When writes reach the disk.
//  always:   every batch is durable before it is indexed and the index commit is synced
//            too, so an acknowledged write survives a power cut (the default). With a
//            commit log, the batch's small files go to the log (one fdatasync) and wait
//            in memory (PendingFiles); a round every period_ms writes out those still
//            current under their names, syncs them, and then drops their records. A
//            version superseded before its round never becomes a file. Large files are
//            synced in place as without a log: one syncfs() per filesystem, or fsyncs
//            for a small batch.
//  periodic: nothing is synced per batch. The disks and the index's filesystem get one
//            syncfs() each every period_ms while anything is unsynced, and at stop: the
//            durability of Cassandra's periodic commit log, or of Garage without
//            data_fsync. A power cut (not a crash of the process: the page cache
//            outlives it) can lose up to a period of acknowledged writes on this node;
//            the index stays consistent (SQLite WAL, synchronous=NORMAL), a copy whose
//            bytes were lost fails its checksum when read or scrubbed and is repaired
//            from another replica.
enum class SyncMode : std::uint8_t { always, periodic };
struct SyncPolicy {
  SyncMode mode = SyncMode::always;
  std::uint64_t period_ms = 1000;  // periodic, and the rounds of the commit log
  std::string index_dir;           // periodic only: where the index lives (synced too)
  CommitLog* log = nullptr;        // always only (may be null); outlives the Committer
  PendingFiles* pending = nullptr;  // with the log (and only then); outlives the Committer
};

struct CommitOp {
  ~CommitOp();            // closes temp_fd if still open
  BlobMeta meta;          // meta.disk is the --disk index
  // What the op does. Only a `write` of a value has a temp file; a tombstone's write and
  // the others change index rows in the batch's transaction.
  //  erase_hint: drop this node's copy of meta.key if it is still a hint at meta.version
  //              (the hint reached its owner);
  //  add_hint:   remember that `target` missed meta.key at meta.version (this node holds
  //              the key itself; hinted handoff sends its copy later);
  //  drop_hint:  forget that (delivered).
  //  drop_damaged: forget this node's copy of meta.key at meta.version (it failed its
  //              checksum); the key reads as missing here until a replica repairs it.
  //  purge:      forget this node's replica copy of meta.key if it is still at
  //              meta.version (a tombstone every replica holds, or a copy handed to
  //              the key's owners).
  //  set_meta:   set the meta row named meta.key to meta_value.
  enum class Kind : std::uint8_t { write, erase_hint, add_hint, drop_hint, drop_damaged, purge, set_meta };
  Kind kind = Kind::write;
  NodeId target{};
  std::string meta_value;  // set_meta only
  // A small value and its footer, which the committer writes at offset 0 of the temp
  // file (off the loop thread), and the length to cut a longer reused file to (0: none).
  // Once written, only the value is left here.
  std::string pending;
  std::uint64_t truncate_to = 0;
  // The file went to the commit log and waits in PendingFiles (no temp file).
  bool logged = false;
  // A commit log record holds the op's index row (a logged file, or a tombstone): the
  // batch's index commit need not be synced for it.
  bool in_log = false;
  // Never logged: synced in place with a synced index commit (the ops that replay the
  // log at start, whose records are dropped once they are done).
  bool no_log = false;
  bool is_write() const { return kind == Kind::write; }
  bool has_file() const { return kind == Kind::write && !meta.tombstone; }
  // No client waits for it: the committer may hold it up to the linger (see
  // limits::background_linger_ms) to commit it with others.
  bool background = false;
  // When submit() took it, and when its batch finished (for the stage histograms).
  std::chrono::steady_clock::time_point submitted, finished;
  std::string temp_path;  // absolute; empty for a small value until the committer needs a file
  int temp_fd = -1;       // open for writing; the committer syncs and closes it
  CommitCallback done;
  // Set by the committer.
  Status status;
  CommitResult result;
  std::optional<StoredVersion> stored;  // a write's index row before its batch
};

// Where a write's time goes on this node, stage by stage (seconds; see /_/metrics,
// ringstore_write_stage_seconds). Per write: queue (submit to the start of its batch),
// ack (its batch finished to its callback running on the loop thread), local (submit to
// callback: the whole local commit). Per batch: log_sync (the commit log's append and
// fdatasync), file_sync (syncfs or fsyncs of the files synced in place), index_commit
// (the SQLite COMMIT), batch (the whole batch).
struct CommitStages {
  common::LatencyHistogram queue, ack, local, log_sync, file_sync, index_commit, batch;
};

class Committer {
 public:
  // `pool` (may be null) takes the files of superseded versions for reuse; they are
  // moved to DISK/tmp/<pool_prefix><n>. `temp_files` gives small values that are not
  // logged, and pending files being written out, their files.
  Committer(IndexWriter* index, Disks* disks, std::function<void()> notify, FaultHook fault,
            FilePool* pool, TempFiles* temp_files, std::string pool_prefix,
            std::uint64_t linger_ms = limits::background_linger_ms, SyncPolicy sync = {});
  ~Committer();  // stops, after committing everything already submitted
  Committer(const Committer&) = delete;
  Committer& operator=(const Committer&) = delete;

  void start();
  void stop();
  // False when the queue holds commit_queue_max writes (the caller answers 503).
  bool submit(std::unique_ptr<CommitOp> op);
  // Runs the callbacks of finished writes, each after `before(op)`. Call from the
  // thread that submits.
  void run_completions(const std::function<void(const CommitOp&)>& before = nullptr);
  // Live (non-tombstone) keys in the index, kept current by every batch.
  std::uint64_t live_keys() const { return live_keys_.load(std::memory_order_relaxed); }
  void set_live_keys(std::uint64_t n) { live_keys_.store(n); }
  std::uint64_t batches() const { return batches_.load(std::memory_order_relaxed); }
  const CommitStages& stages() const { return stages_; }
  // syncfs(), fsync() and commit log fdatasync() calls that made batches durable (the
  // always mode), and the sync rounds that let the log drop records.
  std::uint64_t batch_syncs() const { return batch_syncs_.load(); }
  // syncfs() calls of the periodic mode, and those that failed.
  std::uint64_t periodic_syncs() const { return periodic_syncs_.load(); }
  std::uint64_t periodic_sync_errors() const { return periodic_sync_errors_.load(); }
  std::uint64_t log_checkpoints() const { return log_checkpoints_.load(); }
  // Pending files written out by the rounds, and those superseded (or purged) before a
  // round wrote them, which never became files.
  std::uint64_t files_written_out() const { return files_written_out_.load(); }
  std::uint64_t files_never_written() const { return files_never_written_.load(); }
  // While held, sync rounds drop no commit log records: the store is still applying
  // again the records of an earlier run, which the log must keep until they are done.
  void hold_log(bool held) {
    std::lock_guard<std::mutex> l(mark_mu_);
    log_held_ = held;
  }
  // A sync round on the calling thread (BlobStore::flush).
  void sync_now() { sync_round(); }

 private:
  using Batch = std::vector<std::unique_ptr<CommitOp>>;
  void run();
  bool ready_locked() const;
  void process(Batch& batch);
  bool fault(WriteStep step, Batch& batch);
  void decide_winners(Batch& batch, std::vector<CommitOp*>* winners);
  void log_small(std::vector<CommitOp*>& winners);
  void write_pending(std::vector<CommitOp*>& winners);
  void rename_all(std::vector<CommitOp*>& winners);
  void make_durable(std::vector<CommitOp*>& winners);
  void index_all(std::vector<CommitOp*>& winners, std::vector<CommitOp*>& others);
  void finish(Batch& batch);
  void run_syncer();
  void sync_round();
  bool write_out_pending();
  Status write_out(const std::string& path, const PendingFiles::File& f);
  bool log_batch(std::vector<CommitOp*>& ops);
  void unlog(CommitOp* op);
  bool retire(const std::string& path);
  void discard(CommitOp* op);
  static void note_replica_change(CommitOp* op, const std::optional<StoredVersion>& before,
                                  bool after);

  IndexWriter* index_;
  Disks* disks_;
  std::function<void()> notify_;
  FaultHook fault_;
  FilePool* pool_;
  TempFiles* temp_files_;
  std::string pool_prefix_;
  std::uint64_t pool_seq_ = 0;  // committer thread only

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<CommitOp>> queue_;  // guarded by mu_
  // Guarded by mu_: queued ops that are not background, and background writes.
  std::size_t foreground_queued_ = 0, background_writes_queued_ = 0;
  std::chrono::steady_clock::time_point oldest_background_;  // guarded by mu_
  std::uint64_t linger_ms_;
  bool stopping_ = false;                         // guarded by mu_
  std::atomic<bool> crashed_{false};  // set by the committer thread; the syncer reads it
  std::thread thread_;

  std::mutex done_mu_;
  std::vector<std::unique_ptr<CommitOp>> done_;  // guarded by done_mu_

  std::unordered_set<std::string> known_dirs_;  // committer thread only: blob dirs made
  // Committer thread only: per filesystem, the parents of directories made by this batch.
  std::map<std::uint64_t, std::set<std::string>> new_dirs_;
  std::vector<std::string> superseded_;      // committer thread only: this batch's trash
  std::vector<std::string> unlinked_trash_;  // committer thread only: rows to clear
  std::atomic<std::uint64_t> live_keys_{0};
  std::atomic<std::uint64_t> batches_{0};
  CommitStages stages_;

  SyncPolicy sync_;
  // Periodic mode and the commit log: the syncer thread, and whether anything was
  // written (periodic) or logged since its last round began.
  std::thread syncer_;
  std::mutex sync_mu_;
  std::condition_variable sync_cv_;
  bool sync_stopping_ = false;  // guarded by sync_mu_
  std::atomic<bool> unsynced_{false};
  std::atomic<std::uint64_t> batch_syncs_{0}, periodic_syncs_{0}, periodic_sync_errors_{0};
  std::atomic<std::uint64_t> log_checkpoints_{0};
  std::atomic<std::uint64_t> files_written_out_{0}, files_never_written_{0};
  std::mutex round_mu_;  // one sync round at a time (the syncer's, or the committer's)
  std::unordered_set<std::string> round_dirs_;  // guarded by round_mu_: blob dirs there
  std::vector<CommitLog::Entry> log_entries_;  // committer thread only
  // The log's head after the last batch whose index commit is done: a sync round drops
  // only records before it, since the rows of a later batch may not be in the index yet.
  mutable std::mutex mark_mu_;
  CommitLog::Mark indexed_;  // guarded by mark_mu_
  bool log_held_ = false;    // guarded by mark_mu_
};

}  // namespace blobstore
