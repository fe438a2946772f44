#include "blobstore/disks.h"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cerrno>
#include <cmath>

#include "blobstore/limits.h"
#include "ring/hash.h"

namespace blobstore {

namespace {
bool make_dir(const std::string& p) { return mkdir(p.c_str(), 0755) == 0 || errno == EEXIST; }
}  // namespace

Result<std::unique_ptr<Disks>> Disks::open(const std::vector<std::string>& paths) {
  if (paths.empty()) return Status::invalid("no disk given");
  auto d = std::make_unique<Disks>();
  int healthy = 0;
  for (const std::string& p : paths) {
    DiskInfo info;
    info.path = p;
    info.healthy = make_dir(p) && make_dir(p + "/tmp") && make_dir(p + "/blobs");
    struct stat st;
    if (info.healthy && stat(p.c_str(), &st) == 0) info.device = st.st_dev;
    healthy += info.healthy;
    d->disks_.push_back(info);
  }
  if (healthy == 0) return Status::io_error("no disk could be prepared: " + paths[0]);
  return d;
}

void Disks::mark_failed(int disk) { disks_.at(disk).healthy = false; }

void Disks::refresh_free_space(std::uint64_t now_ms) {
  if (stat_done_ && now_ms - stat_at_ms_ < limits::disk_stat_interval_ms) return;
  stat_done_ = true;
  stat_at_ms_ = now_ms;
  for (DiskInfo& d : disks_) {
    struct statvfs s;
    if (statvfs(d.path.c_str(), &s) != 0) {
      d.healthy = false;  // a missing mount
      continue;
    }
    d.free_bytes = static_cast<std::uint64_t>(s.f_bavail) * s.f_frsize;
    d.total_bytes = static_cast<std::uint64_t>(s.f_blocks) * s.f_frsize;
  }
}

std::vector<DiskInfo> Disks::info(std::uint64_t now_ms) {
  refresh_free_space(now_ms);
  return disks_;
}

double Disks::score(std::string_view disk_path, std::string_view key, double weight) {
  std::string buf;
  buf.reserve(disk_path.size() + 1 + key.size());
  buf += disk_path;
  buf += '\0';
  buf += key;
  std::uint64_t h = ring::key_position(buf);
  // 53 random bits mapped into (0,1), never 0 or 1.
  double u = (static_cast<double>(h >> 11) + 0.5) / 9007199254740992.0;
  return weight / -std::log(u);
}

int Disks::choose(std::string_view key, std::uint64_t now_ms) {
  refresh_free_space(now_ms);
  int best = -1;
  double best_score = -1;
  for (std::size_t i = 0; i < disks_.size(); i++) {
    const DiskInfo& d = disks_[i];
    if (!d.healthy) continue;
    // A full disk still gets a tiny weight so a lone full disk reports ENOSPC itself.
    double weight = static_cast<double>(d.free_bytes >> 20) + 1.0;
    double s = score(d.path, key, weight);
    if (s > best_score) {
      best_score = s;
      best = static_cast<int>(i);
    }
  }
  return best;
}

}  // namespace blobstore
