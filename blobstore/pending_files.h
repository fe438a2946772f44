// PendingFiles holds the small blob files of the always mode that the commit log has
// made durable but that are not yet written under their final names. A small write
// (limits::small_value_bytes_max) goes to the log with one append and one fdatasync,
// and its file waits here, in memory, until the next sync round writes it out, renames
// it into place and syncs it, after which the log drops its record. A version that is
// superseded before that round (a DELETE soon after a PUT, an overwrite) never gets a
// file at all: no inode made, renamed or retired for it.
//
// Readers find a version here before they look for its file, so an acknowledged write
// is served at once. The order of events makes that safe:
//   - the committer adds a file before its record is appended to the log, so a round
//     that takes the log's head and then the files here writes out every record before
//     that head (its checkpoint drops nothing that is only here);
//   - the index names a version only after it is here, and a file leaves only once it
//     is under its final name (place()) or its version is superseded in the committed
//     index (erase()): a reader that saw the row finds the bytes here or the file on
//     disk, or a newer row when it looks again.
// place() runs its callback under the lock, so a file is never renamed into place after
// the committer decided that its version had no file.
// The bytes held are bounded by the commit log's capacity: every file here has its
// record in the log, and the log takes no more than it holds (a full log takes a round).
// Thread: any; one mutex guards the map.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "blobstore/blob_file.h"
#include "common/status.h"

namespace blobstore {

class PendingFiles {
 public:
  struct File {
    int disk = -1;                             // --disk index
    std::shared_ptr<const std::string> bytes;  // the whole file: body and footer
  };

  // Committer: the file for `path` (its final name) before its record is logged.
  void add(const std::string& path, File f);
  // The bytes waiting for `path`, or null when its file is on disk (or never will be).
  std::shared_ptr<const std::string> find(const std::string& path) const;
  // Committer: the version at `path` is superseded, purged or failed. True when it was
  // still here, i.e. no file was made for it.
  bool erase(const std::string& path);
  // The files held now (for a sync round).
  std::vector<std::pair<std::string, File>> snapshot() const;
  // Runs `put` (which writes the file under `path`) if `path` is still held, and on
  // success lets it go. *held tells whether it was. `put` runs under the lock: keep it
  // to a rename.
  Status place(const std::string& path, const std::function<Status()>& put, bool* held);
  std::size_t count() const;
  std::uint64_t bytes() const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, File> files_;  // guarded by mu_
  std::uint64_t bytes_ = 0;                      // guarded by mu_
};

}  // namespace blobstore
