// Disks is the set of local disks a node stores blobs on. It picks the disk for a new
// blob by rendezvous hashing of the key over healthy disks weighted by free space, and
// remembers which disks have failed.
// Thread: choose() and mark_failed() from the loop thread; path() from any thread
// (paths never change after open).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace blobstore {

struct DiskInfo {
  std::string path;
  std::uint64_t device = 0;  // st_dev: disks on one filesystem share one syncfs()
  bool healthy = true;
  std::uint64_t free_bytes = 0;
  std::uint64_t total_bytes = 0;
};

class Disks {
 public:
  // Creates DISK/tmp and DISK/blobs on each disk. A disk that cannot be prepared is
  // marked failed; at least one must work.
  static Result<std::unique_ptr<Disks>> open(const std::vector<std::string>& paths);

  std::size_t size() const { return disks_.size(); }
  const std::string& path(int disk) const { return disks_.at(disk).path; }
  bool healthy(int disk) const { return disks_.at(disk).healthy; }
  std::uint64_t device(int disk) const { return disks_.at(disk).device; }
  void mark_failed(int disk);
  std::vector<DiskInfo> info(std::uint64_t now_ms);

  // The healthy disk with the highest rendezvous score for `key`, or -1 if none.
  int choose(std::string_view key, std::uint64_t now_ms);

  // Rendezvous weight of one disk for one key: weight / -ln(U), U uniform in (0,1)
  // from SHA-1(path | key). Exposed for tests.
  static double score(std::string_view disk_path, std::string_view key, double weight);

 private:
  void refresh_free_space(std::uint64_t now_ms);
  std::vector<DiskInfo> disks_;
  std::uint64_t stat_at_ms_ = 0;
  bool stat_done_ = false;
};

}  // namespace blobstore
