// BlobStore keeps blob bytes in files on one or more disks and their metadata (key,
// version, size, MD5, content type, disk) in one SQLite index under the data dir.
// Owns: the disks, both index connections, the committer thread, open temp files.
// Thread: call everything from one thread (the loop thread). Durability work runs on the
// committer thread; its callbacks run when that thread calls run_completions(), which
// the owner does when `notify` fires (the node wires it to a uv_async_t).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "blobstore/blob_file.h"
#include "blobstore/committer.h"
#include "blobstore/disks.h"
#include "blobstore/file_pool.h"
#include "blobstore/index.h"
#include "blobstore/limits.h"
#include "blobstore/pending_files.h"
#include "blobstore/scrubber.h"
#include "blobstore/value_cache.h"

namespace blobstore {

struct Options {
  std::string data_dir;            // holds index.db
  std::vector<std::string> disks;  // empty: one disk at DATA/disk0
  std::function<void()> notify;    // called from the committer thread; may be empty
  FaultHook fault;                 // tests only
  std::uint64_t cache_bytes = 32ull << 20;  // hot small values kept in memory (0: none)
  // How long a superseded file waits before it is reused (tests shorten it).
  std::uint64_t pool_cool_ms = limits::pooled_file_cool_ms;
  ScrubConfig scrub{0, 0};  // the background scrub; off unless the node turns it on
  // How long background writes wait for company (blobstore/limits.h; tests lengthen it).
  std::uint64_t background_linger_ms = limits::background_linger_ms;
  bool stock_files = true;  // keep empty files ready (FileStock); tests that count files turn it off
  // When writes reach the disk (Committer, SyncPolicy); index_dir and log are filled in.
  SyncPolicy sync;
  // The always mode's commit log at DATA/commit.log: its capacity (0: no log, every
  // batch synced in place). A log that exists keeps the capacity it was made with.
  std::uint64_t commit_log_bytes = limits::commit_log_bytes;
};

// An upload in progress (or a tombstone, which has no file: BlobStore::begin_tombstone)
// for a disk chosen at its start, its MD5 computed as the bytes arrive. The first
// small_value_bytes_max bytes are held in memory: a small value never takes a temp file
// on the loop thread (the committer logs it, or writes it with its footer in one write),
// and a coordinator sends it to the other replicas from memory. A larger one spills to
// a temp file on that disk and is written through as it arrives (on a node whose every
// disk is full it stays in memory, up to limits::relay_bytes_max, so that the node can
// still pass it on to the other replicas). Dropping a writer
// without committing it removes its temp file, if it made one.
class BlobWriter {
 public:
  ~BlobWriter();
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;
  Status append(const char* data, std::size_t n);
  std::uint64_t size() const { return meta_.size; }
  // Stores the blob as a hint for `owner` (see BlobMeta::is_hint).
  void set_hint_for(const NodeId& owner) {
    meta_.is_hint = true;
    meta_.hint_for = owner;
  }
  // Stored response headers and expiry of the value (BlobMeta::attrs, expires_ms).
  // REQUIRES: attrs.size() <= limits::attrs_bytes_max.
  void set_attrs(std::string attrs, std::uint64_t expires_ms) {
    ASSERT(attrs.size() <= limits::attrs_bytes_max);
    meta_.attrs = std::move(attrs);
    meta_.expires_ms = expires_ms;
  }
  // A tombstone written by UNLINK (REQUIRES: a tombstone writer).
  void set_unlinked() {
    ASSERT(meta_.tombstone);
    meta_.unlinked = true;
  }
  // No client waits for this write (a repair, a hint delivered, a range streamed): the
  // committer may hold it briefly to make it durable together with others.
  void set_background() { background_ = true; }
  // The MD5 of what was appended so far is known only at commit; this is its final value.
  Md5Digest finish_md5();
  // What the writer holds so far (version and MD5 are set at commit).
  const BlobMeta& meta() const { return meta_; }
  // A read-only descriptor of the temp file (the bytes held in memory are spilled to one
  // first); it stays valid after the commit renames the file and after an abandoned
  // writer unlinks it. -1 on failure.
  int open_read_fd();
  // The whole body when it is still held in memory (a small value), else nullptr.
  const std::string* body_in_memory() const { return spilled_ ? nullptr : &held_; }

 private:
  friend class BlobStore;
  BlobWriter() = default;
  BlobMeta meta_;
  std::string temp_path_;  // empty until the body spills
  Disks* disks_ = nullptr;  // to mark the disk failed when a write says it is bad
  TempFiles* temp_files_ = nullptr;
  int fd_ = -1;
  std::uint64_t reused_bytes_ = 0;  // a pooled file's old size: truncated when longer
  std::string held_;               // the body while it is small
  bool spilled_ = false;           // held_ went to the file; appends write through
  bool background_ = false;
  // Every disk full (meta_.disk < 0): a larger body is held in memory, counted here
  // against the store's relay budget (limits::relay_total_bytes_max).
  std::shared_ptr<std::atomic<std::uint64_t>> relay_;
  std::uint64_t relay_held_ = 0;
  bool relay(std::size_t more);
  Status spill();
  Status write_through(const char* data, std::size_t n);
  Md5 md5_;
  bool md5_done_ = false;
};

// An open, committed version of a key: its file, or its bytes in memory while the file
// is pending (PendingFiles: only small values). Either stays readable even if a newer
// version replaces it meanwhile. Closes its descriptor on destruction.
class BlobHandle {
 public:
  BlobHandle() = default;
  ~BlobHandle();
  BlobHandle(BlobHandle&& o) noexcept : meta(std::move(o.meta)), fd_(o.fd_), held_(std::move(o.held_)) {
    o.fd_ = -1;
  }
  BlobHandle& operator=(BlobHandle&& o) noexcept;
  BlobHandle(const BlobHandle&) = delete;
  // -1 for a tombstone and for a version held in memory.
  int fd() const { return fd_; }
  // The whole file (body, then footer) while it is pending, else null.
  const std::string* held() const { return held_.get(); }
  BlobMeta meta;

 private:
  friend class BlobStore;
  int fd_ = -1;
  std::shared_ptr<const std::string> held_;
};

class BlobStore {
 public:
  // Opens or creates the index, sweeps orphan temp files and leftover trash, starts the
  // committer.
  static Result<std::unique_ptr<BlobStore>> open(Options options);
  ~BlobStore();  // commits everything already submitted, then closes

  const NodeId& node_id() const { return node_id_; }

  // REQUIRES: a valid key (node/ validates). Picks a disk and opens a temp file.
  Result<std::unique_ptr<BlobWriter>> begin_write(std::string_view key,
                                                  std::string_view content_type,
                                                  std::uint64_t now_ms);
  // A tombstone for `key`, to commit like a write. It takes no file: a tombstone is its
  // index row alone, durable with the batch's index commit.
  Result<std::unique_ptr<BlobWriter>> begin_tombstone(std::string_view key, std::uint64_t now_ms);
  // Seals the writer with `version` and queues it for group commit. `done` runs exactly
  // once from run_completions(), unless this returns an error (then it never runs).
  Status commit(std::unique_ptr<BlobWriter> writer, const Version& version, CommitCallback done);
  // Writes a tombstone for `key` at `version`, the same way.
  Status remove(std::string_view key, const Version& version, std::uint64_t now_ms,
                CommitCallback done, bool unlinked = false);
  // Drops this node's replica copy of `key` (tombstone or value) if it is still at
  // `version`: a tombstone past its grace that every replica holds, or a copy handed to
  // the key's owners. `done` as for commit().
  Status purge(std::string_view key, const Version& version, CommitCallback done);
  // Called from run_completions() for every op that changed this node's replica row of
  // a key (hint rows excluded), before the op's own callback: the anti-entropy
  // summaries follow the index through it.
  using ChangeListener = std::function<void(const std::string& key, const CommitResult& r)>;
  void set_change_listener(ChangeListener l) { change_listener_ = std::move(l); }
  // Drops this node's copy of `key` if it is still a hint at `version`.
  Status erase_hint(std::string_view key, const Version& version, CommitCallback done);
  Result<std::vector<BlobMeta>> hints(std::string_view after, std::size_t limit) {
    return reader_.hints(after, limit);
  }
  Result<std::uint64_t> count_hints() { return reader_.count_hints(); }
  // Rows whose value expired before `before_ms` (anti-entropy's purge of expired values).
  Result<std::uint64_t> count_expired_before(std::uint64_t before_ms) {
    return reader_.count_expired_before(before_ms);
  }
  // Writes another replica missed while this node holds the key (hinted handoff when no
  // stand-in node was free): recorded, listed, and dropped once delivered.
  Status add_missed(const NodeId& target, std::string_view key, const Version& v, CommitCallback done) {
    return hint_op(CommitOp::Kind::add_hint, target, key, v, std::move(done));
  }
  Status drop_missed(const NodeId& target, std::string_view key, const Version& v, CommitCallback done) {
    return hint_op(CommitOp::Kind::drop_hint, target, key, v, std::move(done));
  }
  Result<std::vector<MissedWrite>> missed(std::size_t limit) { return reader_.missed(limit); }
  Status scan_positions(std::uint64_t from, std::uint64_t to, std::size_t limit,
                        std::vector<BlobMeta>* out) {
    return reader_.scan_positions(from, to, limit, out);
  }
  // Small named values kept beside the index (membership, generation). Rare writes.
  // put_meta is durable when it returns, and waits for the committer's transaction (and
  // its sync) on the calling thread; put_meta_later goes into the committer's next batch
  // instead, for progress records the loop thread keeps (a crash may lose the last one:
  // the work it records is redone). A failure of the later write is logged by `done`.
  Result<std::string> get_meta(std::string_view name) { return reader_.get_meta(name); }
  Status put_meta(std::string_view name, std::string_view value) {
    return meta_writer_.set_meta(name, value);
  }
  Status put_meta_later(std::string_view name, std::string value, CommitCallback done);
  // Opens a file that lives on a disk, for reading (the open blob of a BlobHandle).
  std::string blob_path(const BlobMeta& m) const;

  // The stored version of `key`: not_found if never written; a tombstone has no file.
  Result<BlobHandle> open_read(std::string_view key);
  // The stored version of `key` for serving: a small value (or a tombstone) comes back
  // whole and verified, from the cache when it is there; a larger one comes back as an
  // open handle in *large (and the result is null) for the caller to stream.
  Result<std::shared_ptr<const CachedValue>> read(std::string_view key, BlobHandle* large);
  // The stored version's metadata only (disk as a --disk index).
  Result<BlobMeta> lookup(std::string_view key);
  // A handle on an uncommitted writer's bytes, with `version` (for serving a value
  // fetched from another replica; it spills the writer to a temp file). The writer may be
  // committed or dropped afterwards.
  Result<BlobHandle> handle_of(BlobWriter& writer, const Version& version);
  // Reads a whole blob (REQUIRES: not a tombstone) from its file or from memory, and
  // checks its MD5.
  Result<std::string> read_verified(const BlobHandle& h);
  // This node's own rows with versions, tombstones included (IndexReader::list_versions).
  Status list_versions(std::string_view prefix, std::string_view start, std::size_t limit,
                       std::vector<KeyVersion>* rows, std::string* next) {
    return reader_.list_versions(prefix, start, limit, rows, next);
  }

  // Runs finished writes' callbacks, dropping each written key from the cache first.
  void run_completions();
  const ValueCache& cache() const { return cache_; }
  std::size_t pooled_files(int disk) const { return pool_->size(disk); }
  std::uint64_t stocked_files_made() const { return stock_ ? stock_->files_made() : 0; }
  const Committer& committer() const { return *committer_; }
  // Small files durable in the commit log, not yet written under their names.
  std::size_t pending_files() const { return pending_ ? pending_->count() : 0; }
  std::uint64_t pending_bytes() const { return pending_ ? pending_->bytes() : 0; }
  // Runs a sync round now, on the calling thread: every pending file is written out and
  // everything written so far is synced (tests, and anything that must see the files).
  void flush() { committer_->sync_now(); }
  // Files the commit log's replay rewrote at open (after a power cut).
  std::uint64_t replayed_files() const { return replayed_files_; }
  // Commit log records applied again at open because the index had lost their rows (a
  // power cut before a sync round made the unsynced index commits durable).
  std::uint64_t replayed_rows() const { return replayed_rows_; }
  std::uint64_t live_keys() const { return committer_->live_keys(); }
  std::vector<DiskInfo> disks_info(std::uint64_t now_ms) { return disks_->info(now_ms); }
  std::uint64_t corrupt_reads() const { return corrupt_reads_; }
  // A copy failed its checksum: count it, and drop it from the index (its file goes to
  // the trash) so that this node reads as missing the key and a replica repairs it.
  // The damage listener hears of it (the node fetches a good copy at once).
  void report_damaged(const BlobMeta& m);
  void set_damage_listener(std::function<void(const BlobMeta&)> fn) { on_damaged_ = std::move(fn); }
  // Drops this node's row of `m.key` if it is still at m.version (a copy on a failed
  // disk that no replica has any more), without counting it as damage.
  Status forget(const BlobMeta& m, CommitCallback done);

  // Disks: looks for disks that failed or came back (paced to disk_check_interval_ms).
  // Returns true when a disk changed state.
  bool check_disks(std::uint64_t now_ms);
  bool disk_healthy(int disk) const { return disks_->healthy(disk); }
  std::size_t disk_count() const { return disks_->size(); }
  // Rows stored on disk `disk` (--disk index) with key > after; meta.disk is the index.
  Status rows_on_disk(int disk, std::string_view after, std::size_t limit,
                      std::vector<BlobMeta>* out);
  // Whether the index holds `key` on a failed disk (it reads as missing until refetched).
  bool held_on_failed_disk(std::string_view key);
  Result<std::uint64_t> count_on_disk(int disk) {
    return reader_.count_disk(writer_.disk_ids().at(disk));
  }
  Result<std::vector<IndexReader::TargetHints>> hints_by_target() { return reader_.hints_by_target(); }
  // The background scrub; null when it is off.
  const Scrubber* scrubber() const { return scrubber_.get(); }

 private:
  BlobStore() = default;
  Status start(Options& options);
  void sweep();
  Status replay_log();
  Status apply_replayed_rows();
  Status submit(std::unique_ptr<BlobWriter> w, CommitCallback done);
  void cache_written(const CommitOp& op);
  std::shared_ptr<const CachedValue> cached(std::string_view key, bool touch);
  Status hint_op(CommitOp::Kind kind, const NodeId& target, std::string_view key,
                 const Version& version, CommitCallback done);

  std::unique_ptr<Disks> disks_;
  std::unique_ptr<FilePool> pool_;
  std::unique_ptr<FileStock> stock_;  // before temp_files_, which wakes it
  std::unique_ptr<TempFiles> temp_files_;
  // Bytes held by writers relaying values through a node whose disks are all full.
  std::shared_ptr<std::atomic<std::uint64_t>> relay_ = std::make_shared<std::atomic<std::uint64_t>>(0);
  IndexWriter writer_;
  IndexReader reader_;
  IndexWriter meta_writer_;  // loop thread: meta rows only
  std::unique_ptr<CommitLog> log_;  // before committer_, which uses it
  std::unique_ptr<PendingFiles> pending_;  // with the log only; before committer_
  std::uint64_t replayed_files_ = 0, replayed_rows_ = 0;
  // Found by replay_log(), applied through the committer by apply_replayed_rows().
  std::vector<std::unique_ptr<CommitOp>> replays_;
  bool keep_log_ = false;  // a record could not be applied again: the log keeps them all
  std::unique_ptr<Committer> committer_;
  ValueCache cache_{0};
  NodeId node_id_{};
  std::string temp_prefix_;
  std::uint64_t corrupt_reads_ = 0;
  ChangeListener change_listener_;
  std::function<void(const BlobMeta&)> on_damaged_;
  std::uint64_t disks_checked_ms_ = 0;
  std::unique_ptr<Scrubber> scrubber_;
  // Damaged copies the scrub found, for the loop thread (run_completions).
  std::mutex damaged_mu_;
  std::vector<BlobMeta> damaged_;  // guarded by damaged_mu_
  std::function<void()> notify_;
};

// Recreates DATA/index.db from the blob files on `disks` alone (the highest version of
// each key wins), after writing out the files whose records are still in the commit
// log. The old index, if any, is kept as index.db.old. Prints nothing.
struct RebuildStats {
  std::uint64_t files = 0, keys = 0, skipped = 0;
  std::uint64_t from_log = 0;  // files written out from the commit log's records first
};
Result<RebuildStats> rebuild_index(const std::string& data_dir,
                                   const std::vector<std::string>& disks);

std::vector<std::string> default_disks(const std::string& data_dir,
                                       const std::vector<std::string>& disks);

}  // namespace blobstore
