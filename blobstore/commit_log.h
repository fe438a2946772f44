// CommitLog: what makes a batch of small writes and deletes durable in the always mode.
// The committer appends each small file (body and footer, whole) and each tombstone to
// one log file and fdatasyncs it once per batch: an overwrite of a few KiB and a cache
// flush, where a syncfs() writes back everything the filesystem holds dirty. A record
// says everything the key's index row says, so the log is the index's write-ahead record
// too: the files stay in memory (PendingFiles), and the index commit of a batch whose
// every op is logged is not synced. A sync round (syncfs of each filesystem and of the
// index's, off the batch path) later makes those files and index rows durable, and the
// records before it are dropped: the log is a ring of fixed capacity.
// After a power cut, replay() hands back every record after the last checkpoint, and
// the store writes again each file that its index row still names, and applies again
// each record whose row the index lost.
//
// Format (little-endian; docs/FORMATS.md has the same tables):
//   header at offset 0: magic u32 "RSLH" | format u32 (2; 1 before RSL2 records) | ring u64
//                       | tail u64 | tail_seq u64 | check u32 (CRC-32 of the 32 bytes before it)
//   records from offset 4096, at logical positions; a record never straddles the end
//   of the ring (it starts again at 4096 instead):
//     magic u32 "RSL2" | crc u32 (CRC-32 of every byte after it) | seq u64 | len u32
//     | disk_len u16 | key_len u16 | hlc u64 | node[16] | file_len u32 | flags u8
//     | hint_for[16] | disk path | key | file bytes
//   flags: 1 tombstone (no file bytes), 2 unlinked, 4 a hint for `hint_for`. A record
//   "RSL1" (written before) has neither flags nor hint_for: a value, not a hint.
// `ring` is the bytes of records the ring holds (fixed when the log is made), `tail` the
// logical position of the first record still needed, `tail_seq` its seq;
// seqs grow by one per record, so a stale record left by an earlier lap never passes.
// Thread: append() on the committer thread; head(), checkpoint() on any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "blobstore/version.h"
#include "common/status.h"

namespace blobstore {

class CommitLog {
 public:
  struct Entry {
    std::string_view disk_path;  // the --disk root the file lives on (the row names it)
    std::string_view key;
    Version version;
    std::string_view file;       // the whole file: body and footer; empty for a tombstone
    bool tombstone = false;
    bool unlinked = false;       // a tombstone written by UNLINK
    bool is_hint = false;        // the copy is a hint for `hint_for`
    NodeId hint_for{};
  };
  // A point in the log: everything appended before it.
  struct Mark {
    std::uint64_t pos = 0, seq = 0;
  };

  static constexpr std::uint64_t header_bytes = 4096;
  static constexpr std::size_t record_fixed_bytes = 69;  // of an RSL2 record
  static constexpr std::size_t record_min_bytes = 52;    // an RSL1 record's fixed part

  // Opens or creates the log at `path` holding up to `capacity` bytes of records.
  static Result<std::unique_ptr<CommitLog>> open(const std::string& path, std::uint64_t capacity);
  ~CommitLog();
  CommitLog(const CommitLog&) = delete;
  CommitLog& operator=(const CommitLog&) = delete;

  // Every record after the last checkpoint, oldest first; stops at the first record that
  // is torn, stale or corrupt. Call before the first append.
  Status replay(const std::function<void(const Entry&)>& fn);
  // Whether a record for an entry of these sizes can ever go to the log.
  bool can_hold(std::size_t disk_path, std::size_t key, std::size_t file) const;
  // Whether the entries fit now beside the records still needed (never after a failed
  // append, until a checkpoint at the head).
  bool fits(const std::vector<Entry>& entries) const;
  // Writes the records and makes them durable (one fdatasync). The caller checked fits().
  Status append(const std::vector<Entry>& entries);
  Mark head() const;
  // The records before `m` are durable elsewhere: they are dropped (the header moves).
  Status checkpoint(Mark m);
  // Records appended and bytes they took since open (for tests and metrics).
  std::uint64_t records() const;

 private:
  CommitLog(int fd, std::uint64_t capacity) : fd_(fd), ring_(capacity) {}
  static std::size_t record_bytes(const Entry& e);
  std::uint64_t physical(std::uint64_t pos) const { return header_bytes + pos % ring_; }
  // The logical position a record of n bytes starts at when the log is at `pos`.
  std::uint64_t place(std::uint64_t pos, std::size_t n) const;
  // The logical position after the entries' records, appended at `pos`.
  std::uint64_t end_of(std::uint64_t pos, const std::vector<Entry>& entries) const;
  Status write_header(Mark tail);
  Status allocate_to(std::uint64_t end);

  int fd_;
  std::uint64_t ring_;  // bytes of records the ring holds
  std::string buf_;     // committer thread: the batch's records
  // Committer thread: the file's bytes (zeros where no record was written yet). The ring
  // is filled with zeros ahead of the records, a MiB at a time, so that an append
  // overwrites allocated blocks and its fdatasync writes no inode.
  std::uint64_t allocated_ = 0;
  mutable std::mutex mu_;
  Mark head_, tail_;  // guarded by mu_
  std::uint64_t records_ = 0;  // guarded by mu_
  bool broken_ = false;        // guarded by mu_: an append failed since the last checkpoint
  std::mutex header_mu_;  // one header write at a time
};

// CRC-32 (IEEE), as zlib computes it.
std::uint32_t crc32(const void* data, std::size_t n, std::uint32_t crc = 0);

}  // namespace blobstore
