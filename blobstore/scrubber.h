// Scrubber walks the index in key order on its own thread and re-reads every blob file,
// checking its size and MD5, at a bounded pace (bytes/s and files/s, whichever is
// slower). A copy that fails goes to `on_damaged`; a read that fails the way a bad
// device does marks the disk failed. Its position (the last key verified) is kept in
// the meta table as "scrub_position", so a restarted node resumes where it stopped;
// a finished pass starts over from the first key.
// Owns: its thread and its own SQLite connection. Thread: start(), stop() and the
// getters from the loop thread; on_damaged runs on the scrub thread.
// Lifetime: `disks` must outlive the Scrubber; stop() (or the destructor) joins.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "blobstore/blob_file.h"
#include "blobstore/disks.h"
#include "blobstore/limits.h"
#include "blobstore/pending_files.h"

namespace blobstore {

struct ScrubConfig {
  // 0 in either disables the scrub.
  std::uint64_t bytes_per_s = limits::scrub_bytes_per_s_default;
  std::uint32_t files_per_s = limits::scrub_files_per_s_default;
  bool enabled() const { return bytes_per_s > 0 && files_per_s > 0; }
};

struct ScrubStats {
  std::uint64_t files_verified = 0, bytes_verified = 0, damaged = 0, passes = 0;
  std::uint64_t read_errors = 0;
  std::string position;  // last key verified in this pass ("" at the start of a pass)
};

class Scrubber {
 public:
  // `pending` (may be null): versions whose files are not written yet are skipped.
  Scrubber(std::string db_path, Disks* disks, std::vector<int> disk_ids,
           const PendingFiles* pending, ScrubConfig config,
           std::function<void(const BlobMeta&)> on_damaged);
  ~Scrubber();
  Scrubber(const Scrubber&) = delete;
  Scrubber& operator=(const Scrubber&) = delete;

  void start();
  void stop();
  ScrubStats stats() const;
  const ScrubConfig& config() const { return config_; }

  // Checks one blob file against `m` (its size and MD5). ok, corruption (damaged or
  // missing), or io_error with the errno-class failure (the disk's fault). Pure I/O:
  // used by the scrub thread and by tests.
  static Status verify_file(const std::string& path, const BlobMeta& m, int* err);

 private:
  void run();
  // Waits until `t` or stop; false when stopping.
  bool pace_until(std::chrono::steady_clock::time_point t);

  std::string db_path_;
  Disks* disks_;
  std::vector<int> disk_ids_;
  const PendingFiles* pending_;
  ScrubConfig config_;
  std::function<void(const BlobMeta&)> on_damaged_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  ScrubStats stats_;       // guarded by mu_
};

}  // namespace blobstore
