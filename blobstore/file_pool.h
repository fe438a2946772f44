// FilePool keeps the files of superseded versions for reuse as the temp files of new
// writes. A store that overwrites keys then creates and deletes no inodes: an upload
// overwrites a pooled file from offset 0 and truncates it to its length, and the
// version it replaces goes back to the pool. On this machine's ext4 (no journal) new
// inodes cost more than half of a node's CPU under a PUT load: the allocator skips every
// inode freed in the last minute, with a buffer lookup each, so creating files while
// deleting others slows down with the deletion rate.
//
// Pooled files live in DISK/tmp, so a restart finds them with the crash leftovers and
// takes both into the pool (their content never matters: it is overwritten). A file is
// handed out again only `cool_ms` (limits::pooled_file_cool_ms) after it was superseded: a reader
// that opened the old version just before finishes long before (small values are read
// whole at once, and every read checks the MD5, so a reused file is never served as the
// old value). Only small files are pooled (limits::pooled_file_bytes_max).
// Thread: take() from the loop thread, wants() and add() from the committer thread (and
// at start); one mutex guards the lists.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "blobstore/disks.h"
#include "blobstore/limits.h"

namespace blobstore {

class FilePool {
 public:
  // A disk's pool holds at most `files_max_per_disk` files and `blocks_bytes_max_per_disk`
  // bytes of their sizes rounded up to whole blocks (limits::pooled_block_bytes).
  FilePool(std::size_t disk_count, std::size_t files_max_per_disk, std::uint64_t blocks_bytes_max_per_disk,
           std::uint64_t cool_ms);

  // A pooled file of `disk` ready at now_ms and its size, or an empty path when there is
  // none. The caller owns it.
  struct Taken {
    std::string path;
    std::uint64_t bytes = 0;
  };
  Taken take(int disk, std::uint64_t now_ms);
  // Whether `disk`'s pool takes one more file of `bytes` (the caller then moves the file
  // under DISK/tmp and calls add()).
  bool wants(int disk, std::uint64_t bytes) const;
  // `path` (under DISK/tmp) may be handed out from now_ms + cool_ms on (monotonic_ms()).
  void add(int disk, std::string path, std::uint64_t bytes, std::uint64_t now_ms);
  // A file no reader can hold (found at start): ready at once.
  void add_ready(int disk, std::string path, std::uint64_t bytes);
  std::size_t size(int disk) const;
  // Whether at least `n` files of `disk` are ready at now_ms.
  bool has_ready(int disk, std::size_t n, std::uint64_t now_ms) const;

 private:
  struct Entry {
    std::string path;
    std::uint64_t bytes;
    std::uint64_t ready_ms;
  };
  static std::uint64_t blocks_of(std::uint64_t bytes) {
    constexpr std::uint64_t b = limits::pooled_block_bytes;
    return (bytes + b - 1) / b * b;
  }
  void push_locked(int disk, Entry e, bool front);
  mutable std::mutex mu_;
  std::vector<std::deque<Entry>> free_;  // per disk, oldest first; guarded by mu_
  std::vector<std::uint64_t> held_;      // per disk: blocks_of() summed; guarded by mu_
  std::size_t files_max_;
  std::uint64_t blocks_max_;
  std::uint64_t cool_ms_;
};

// FileStock keeps empty files ready in every healthy disk's pool, made on its own
// thread, so that a write takes a file and never creates an inode on the loop thread,
// even when there is nothing to reuse yet (a young store, a disk refilled after a wipe).
// Creating a file is the dearest step of a small write here (see above): on the loop
// thread it held every other request back, e.g. the reads a refilling node answers.
// It tops a disk up to limits::stocked_files_high ready files whenever wake() finds it
// under limits::stocked_files_low. Stocked files live in DISK/tmp like pooled ones: a
// restart takes them into the pool.
// Thread: wake() from the loop thread; the rest is its own. Lifetime: the pool and the
// disks outlive it.
class FileStock {
 public:
  FileStock(FilePool* pool, Disks* disks, std::string prefix);
  ~FileStock();  // stops
  FileStock(const FileStock&) = delete;
  FileStock& operator=(const FileStock&) = delete;

  void start();
  void stop();
  // Tops up `disk` when it has fewer than the low mark of ready files.
  void wake(int disk, std::uint64_t now_ms);
  std::uint64_t files_made() const { return made_.load(std::memory_order_relaxed); }

 private:
  void run();
  FilePool* pool_;
  Disks* disks_;
  std::string prefix_;
  std::uint64_t seq_ = 0;  // stock thread only
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<bool> wanted_;  // per disk; guarded by mu_
  bool stopping_ = false;     // guarded by mu_
  std::atomic<std::uint64_t> made_{0};
  std::thread thread_;
};

// TempFiles opens the file that a write fills before it is renamed under its final name:
// a pooled file when one is ready (overwritten from offset 0: no new inode), else a new
// one in DISK/tmp, and wakes the stock when the pool runs low. A disk that cannot create
// a file is marked failed (the caller tries another or gives up); running out of
// descriptors is not the disk's fault.
// Thread: any (the pool, the stock and the disks lock; the sequence is atomic).
// Lifetime: the pool, the disks and the stock (may be null) outlive it.
class TempFiles {
 public:
  TempFiles(FilePool* pool, Disks* disks, FileStock* stock, std::string prefix)
      : pool_(pool), disks_(disks), stock_(stock), prefix_(std::move(prefix)) {}
  struct File {
    std::string path;
    int fd = -1;                    // open for writing; the caller closes it
    std::uint64_t reused_bytes = 0;  // a pooled file's old size: cut it when longer
  };
  // unavailable: out of descriptors; io_error: the disk cannot create files (marked failed).
  Status open(int disk, File* out);
  // The same on *disk or, when it is failed or cannot create files, on the next healthy
  // disk in order, which *disk then names (for a write not yet renamed or indexed).
  Status open_on_some(int* disk, File* out);
  // Writes `bytes` as the whole of the opened file `t`: at offset 0, and cut to their
  // length when a reused file was longer. On failure errno is left as the call set it.
  static Status fill(const File& t, std::string_view bytes);

 private:
  FilePool* pool_;
  Disks* disks_;
  FileStock* stock_;
  std::string prefix_;
  std::atomic<std::uint64_t> seq_{0};
};

// Milliseconds on a monotonic clock, for FilePool's cooling.
std::uint64_t monotonic_ms();

}  // namespace blobstore
