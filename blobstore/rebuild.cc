// `ringstore rebuild`: the index is derived data; the blob files' footers hold all of it.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <unordered_set>

#include "blobstore/blob_store.h"
#include "ring/hash.h"

namespace blobstore {

namespace {

struct Found {
  BlobMeta meta;
  std::string path;
};

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(name);
  }
  closedir(d);
  return out;
}

// Reads one blob file's footer, checks that its name agrees with it and that its bytes
// match their MD5: a crash can leave a file under its final name that never became
// durable, and a damaged copy must not win over an older whole one.
Result<BlobMeta> inspect(const std::string& path, const std::string& name) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::from_errno("open " + path, errno);
  struct stat st;
  Result<BlobMeta> m = Status::io_error("stat " + path);
  if (fstat(fd, &st) == 0) m = read_footer(fd, static_cast<std::uint64_t>(st.st_size));
  if (m.is_ok() && !m.value().tombstone) {
    if (Status s = verify_body(fd, m.value()); !s.is_ok()) m = Status::corruption(s.message() + ": " + path);
  }
  close(fd);
  if (!m.is_ok()) return m;
  std::string expect = blob_relative_path(m.value().key, m.value().version);
  if (expect.substr(expect.rfind('/') + 1) != name) {
    return Status::corruption("file name does not match its footer: " + path);
  }
  return m;
}

void scan_disk(const std::string& disk, int disk_index, std::map<std::string, Found>* best,
               RebuildStats* stats) {
  std::string root = disk + "/blobs";
  for (const std::string& a : list_dir(root)) {
    for (const std::string& b : list_dir(root + "/" + a)) {
      std::string dir = root + "/" + a + "/" + b;
      for (const std::string& name : list_dir(dir)) {
        std::string path = dir + "/" + name;
        stats->files++;
        auto m = inspect(path, name);
        if (!m.is_ok()) {
          stats->skipped++;
          continue;
        }
        m.value().disk = disk_index;
        auto it = best->find(m.value().key);
        if (it == best->end()) {
          std::string key = m.value().key;
          best->emplace(std::move(key), Found{std::move(m.value()), path});
        } else if (it->second.meta.version < m.value().version) {
          unlink(it->second.path.c_str());  // superseded: LWW already decided
          it->second = Found{std::move(m.value()), path};
        } else {
          unlink(path.c_str());
        }
      }
    }
  }
}

// Small files whose records are still in the commit log (the node stopped by a crash or
// a power cut before a sync round wrote them out) are written out first, so that the
// scan finds them; the highest version of each key wins as for any other file. The
// log's tombstones are not applied (a rebuild knows only files): a value deleted in the
// last sync period before the stop can come back here, and loses again to the other
// replicas' tombstones through anti-entropy. The records stay (the next start replays what the new index names).
Status write_out_log(const std::string& data_dir, const std::vector<std::string>& disks,
                     RebuildStats* stats) {
  std::string path = data_dir + "/commit.log";
  if (access(path.c_str(), F_OK) != 0) return Status::ok();
  auto log = CommitLog::open(path, limits::commit_log_bytes);  // an existing log keeps its size
  if (!log.is_ok()) return log.take_status();
  std::unordered_set<std::string> dirs;
  Status failed = Status::ok();
  Status s = log.value()->replay([&](const CommitLog::Entry& e) {
    if (!failed.is_ok() || std::find(disks.begin(), disks.end(), e.disk_path) == disks.end()) return;
    if (e.tombstone) return;  // no file; see above
    // Written again even when it exists: a power cut after a round's rename but before
    // its sync can leave it short, and the record holds the same bytes whole.
    std::string file = std::string(e.disk_path) + "/" + blob_relative_path(e.key, e.version);
    failed = write_blob_file(file, e.file, &dirs);
    if (failed.is_ok()) stats->from_log++;
  });
  if (!s.is_ok()) return s;
  return failed;
}

// The node's identity outlives its index: its id, and its generation (peers take a
// lower generation for a stale state and would ignore the node), plus the members it
// knew. Only the keys are derived from the disks.
std::vector<std::pair<std::string, std::string>> read_old_identity(const std::string& db_path) {
  std::vector<std::pair<std::string, std::string>> out;
  if (access(db_path.c_str(), F_OK) != 0) return out;
  // The writer's open adds the columns an index of an earlier version lacks, which a
  // reader's statements need; the old file is renamed away afterwards anyway.
  IndexWriter old;
  if (!old.open(db_path, {}).is_ok()) return out;
  for (const char* name : {"node_id", "generation", "peers"}) {
    auto v = old.get_meta(name);
    if (!v.is_ok()) continue;
    if (std::string_view(name) == "node_id" && v.value().size() != 16) continue;
    out.push_back({name, v.value()});
  }
  return out;
}

}  // namespace

Result<RebuildStats> rebuild_index(const std::string& data_dir,
                                   const std::vector<std::string>& disk_args) {
  std::vector<std::string> disks = default_disks(data_dir, disk_args);
  RebuildStats stats;
  if (Status s = write_out_log(data_dir, disks, &stats); !s.is_ok()) return s;
  std::map<std::string, Found> best;
  for (std::size_t i = 0; i < disks.size(); i++) {
    scan_disk(disks[i], static_cast<int>(i), &best, &stats);
  }
  if (mkdir(data_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Status::from_errno("mkdir " + data_dir, errno);
  }
  std::string db = data_dir + "/index.db";
  auto identity = read_old_identity(db);
  for (const char* suffix : {"", "-wal", "-shm"}) {
    std::string from = db + suffix;
    std::string to = data_dir + "/index.db.old" + suffix;
    if (rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) {
      return Status::from_errno("rename " + from, errno);
    }
  }
  IndexWriter w;
  if (Status s = w.open(db, disks); !s.is_ok()) return s;
  if (Status s = w.begin(); !s.is_ok()) return s;
  for (const auto& [name, value] : identity) {
    if (Status s = w.set_meta(name, value); !s.is_ok()) return s;
  }
  for (auto& [key, f] : best) {
    if (Status s = w.upsert(f.meta); !s.is_ok()) return s;
    stats.keys++;
  }
  if (Status s = w.commit(); !s.is_ok()) return s;
  return stats;
}

}  // namespace blobstore
