// Disks is the set of local disks a node stores blobs on. It picks the disk for a new
// blob by rendezvous hashing of the key over healthy disks weighted by free space, and
// keeps each disk's health.
//
// A disk is *full* when a write on it fails with ENOSPC, EDQUOT or EROFS: nothing is
// wrong with what it holds, so it keeps serving its copies (healthy() stays true) but
// takes no new file (writable() is false) until check() finds room on it again (at
// least disk_free_resume_bytes, or 5% of it, free, and a probe file written and synced).
// A full disk is no damage: no copy on it is refetched or dropped.
// A disk fails when an operation on it errors the way a bad device does (EIO, ENXIO,
// ...: see is_disk_error) or when it disappears: its directory or its
// marker file (DISK/.ringstore-disk, holding a random token written when the disk was
// first prepared) is gone, or the directory now sits on another device (unmounted or
// replaced). check() looks for disappearance (BlobStore calls it every
// disk_check_interval_ms); a failed disk is re-checked then too and returns to service only after a probe file could be
// written and synced on it (and, for a disk that came back empty, only once the caller
// says no index row still points at it: see recheck()).
// Thread: choose(), info(), check() and recheck() from the loop thread; healthy(),
// mark_failed() and path() from any thread (health is atomic, paths never change).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace blobstore {

enum class DiskState : std::uint8_t { healthy, failed, full };

struct DiskInfo {
  std::string path;
  std::uint64_t device = 0;  // st_dev: disks on one filesystem share one syncfs()
  bool healthy = true;   // its copies can be read (healthy or full)
  bool full = false;     // it takes no new files: out of space, or read-only
  std::string failure;  // why it failed or filled up, when it did
  std::uint64_t failed_at_ms = 0;
  std::uint64_t failures = 0;  // times it was marked failed since start
  std::uint64_t free_bytes = 0;
  std::uint64_t total_bytes = 0;
};

// What a write that found no room answers (507): no path, no errno of this node.
inline Status no_room() {
  return Status(Code::insufficient_storage, "insufficient_storage: no disk of this node has room for the value");
}

// Errors that say the device, not the request, is at fault.
bool is_disk_error(int err);
// Those of them that say the device is out of room or read-only: it is full, not failed.
bool is_full_error(int err);

class Disks {
 public:
  // Creates DISK/tmp, DISK/blobs and the marker on each disk. A disk that cannot be
  // prepared is marked failed; at least one must work.
  static Result<std::unique_ptr<Disks>> open(const std::vector<std::string>& paths);

  std::size_t size() const { return disks_.size(); }
  const std::string& path(int disk) const { return disks_.at(disk).path; }
  // Its copies can be read: not failed (a full disk is healthy).
  bool healthy(int disk) const;
  // It takes new files: neither failed nor full.
  bool writable(int disk) const;
  std::uint64_t device(int disk) const { return disks_.at(disk).device; }
  // Marks a disk failed (idempotent) with a reason for /_/status.
  void mark_failed(int disk, const std::string& why);
  void mark_failed(int disk) { mark_failed(disk, "error"); }
  // After an operation failed with errno `err`: full for is_full_error(err), failed for
  // any other is_disk_error(err), nothing otherwise.
  void mark_error(int disk, int err, const std::string& why);
  // Marks a healthy disk full (a failed one stays failed).
  void mark_full(int disk, const std::string& why);
  std::vector<DiskInfo> info(std::uint64_t now_ms);

  // Looks for disks that disappeared and marks them failed (a few stat calls per disk;
  // the caller paces it). Returns true when some disk changed state.
  bool check(std::uint64_t now_ms);
  // Tries to bring failed disk `disk` back: its directory must exist on a device, a
  // probe file must be written and synced. A disk whose marker is missing or changed
  // came back empty or replaced: it is prepared afresh, but only when `drained` (no
  // index row points at it any more). Returns true when it is healthy again.
  bool recheck(int disk, bool drained);

  // The writable disk with the highest rendezvous score for `key`, or -1 if none.
  int choose(std::string_view key, std::uint64_t now_ms);
  // The first disk that is not failed (a tombstone's row names one), or -1.
  int any_healthy() const;

  // Rendezvous weight of one disk for one key: weight / -ln(U), U uniform in (0,1)
  // from SHA-1(path | key). Exposed for tests.
  static double score(std::string_view disk_path, std::string_view key, double weight);

  static constexpr const char* marker_name = ".ringstore-disk";

 private:
  void refresh_free_space(std::uint64_t now_ms);
  // A full disk with room again and a probe written: writable. True when it changed.
  bool recheck_full(std::size_t disk);
  // Why the disk looks gone, or "" when its directory and marker are as prepared.
  std::string missing_reason(std::size_t disk) const;
  bool prepare(DiskInfo* d);
  std::vector<DiskInfo> disks_;
  std::vector<std::string> tokens_;  // marker contents, per disk
  std::unique_ptr<std::atomic<std::uint8_t>[]> state_;  // DiskState per disk
  mutable std::mutex why_mu_;  // guards failure, failed_at_ms and failures in disks_
  std::uint64_t stat_at_ms_ = 0;
  bool stat_done_ = false;
};

}  // namespace blobstore
