#include "blobstore/disks.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>

#include "blobstore/limits.h"
#include "blobstore/version.h"
#include "ring/hash.h"

namespace blobstore {

namespace {
bool make_dir(const std::string& p) { return mkdir(p.c_str(), 0755) == 0 || errno == EEXIST; }

std::uint64_t wall_ms() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch()).count());
}

// The marker's contents, or "" when it cannot be read.
std::string read_marker(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  char buf[64];
  ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

// Writes `bytes` to a new file at `path` and makes it durable (file and directory).
bool write_synced(const std::string& path, const std::string& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  bool ok = ::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()) &&
            fsync(fd) == 0;
  ::close(fd);
  return ok;
}
}  // namespace

bool is_full_error(int err) { return err == ENOSPC || err == EDQUOT || err == EROFS; }

bool is_disk_error(int err) {
  switch (err) {
    case EIO: case ENOSPC: case EROFS: case EDQUOT: case ENXIO: case ENODEV:
    case ESTALE: case EUCLEAN:
      return true;
    default:
      return false;
  }
}

Result<std::unique_ptr<Disks>> Disks::open(const std::vector<std::string>& paths) {
  if (paths.empty()) return Status::invalid("no disk given");
  auto d = std::make_unique<Disks>();
  d->state_ = std::make_unique<std::atomic<std::uint8_t>[]>(paths.size());
  d->tokens_.resize(paths.size());
  int healthy = 0;
  for (std::size_t i = 0; i < paths.size(); i++) {
    DiskInfo info;
    info.path = paths[i];
    d->disks_.push_back(info);
    bool ok = d->prepare(&d->disks_.back());
    if (ok) d->tokens_[i] = read_marker(paths[i] + "/" + marker_name);
    d->state_[i] = static_cast<std::uint8_t>(ok ? DiskState::healthy : DiskState::failed);
    if (!ok) d->disks_.back().failure = "cannot be prepared";
    healthy += ok;
  }
  if (healthy == 0) return Status::io_error("no disk could be prepared: " + paths[0]);
  return d;
}

// The directories, and the marker when there is none yet (a new disk gets a new token).
bool Disks::prepare(DiskInfo* d) {
  const std::string& p = d->path;
  if (!make_dir(p) || !make_dir(p + "/tmp") || !make_dir(p + "/blobs")) return false;
  std::string marker = p + "/" + marker_name;
  if (read_marker(marker).empty()) {
    std::uint8_t raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1) return false;
    if (!write_synced(marker, hex(raw, sizeof raw))) return false;
    int dfd = ::open(p.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      fsync(dfd);
      ::close(dfd);
    }
  }
  struct stat st;
  if (stat(p.c_str(), &st) != 0) return false;
  d->device = st.st_dev;
  return true;
}

bool Disks::healthy(int disk) const {
  ASSERT(disk >= 0 && static_cast<std::size_t>(disk) < disks_.size());
  return state_[disk].load(std::memory_order_acquire) != static_cast<std::uint8_t>(DiskState::failed);
}

bool Disks::writable(int disk) const {
  ASSERT(disk >= 0 && static_cast<std::size_t>(disk) < disks_.size());
  return state_[disk].load(std::memory_order_acquire) == static_cast<std::uint8_t>(DiskState::healthy);
}

int Disks::any_healthy() const {
  for (std::size_t i = 0; i < disks_.size(); i++) {
    if (healthy(static_cast<int>(i))) return static_cast<int>(i);
  }
  return -1;
}

void Disks::mark_error(int disk, int err, const std::string& why) {
  if (is_full_error(err)) return mark_full(disk, why);
  if (is_disk_error(err)) mark_failed(disk, why);
}

void Disks::mark_full(int disk, const std::string& why) {
  ASSERT(disk >= 0 && static_cast<std::size_t>(disk) < disks_.size());
  auto expected = static_cast<std::uint8_t>(DiskState::healthy);
  if (!state_[disk].compare_exchange_strong(expected, static_cast<std::uint8_t>(DiskState::full))) return;
  std::lock_guard<std::mutex> l(why_mu_);
  disks_[disk].failure = "full: " + why;
  disks_[disk].failed_at_ms = wall_ms();
}

void Disks::mark_failed(int disk, const std::string& why) {
  ASSERT(disk >= 0 && static_cast<std::size_t>(disk) < disks_.size());
  std::uint8_t was = state_[disk].exchange(static_cast<std::uint8_t>(DiskState::failed));
  if (was == static_cast<std::uint8_t>(DiskState::failed)) return;
  std::lock_guard<std::mutex> l(why_mu_);
  disks_[disk].failure = why;
  disks_[disk].failed_at_ms = wall_ms();
  disks_[disk].failures++;
}

std::string Disks::missing_reason(std::size_t i) const {
  const DiskInfo& d = disks_[i];
  struct stat st;
  if (stat(d.path.c_str(), &st) != 0) return "directory gone";
  if (!S_ISDIR(st.st_mode)) return "not a directory";
  if (st.st_dev != d.device) return "another device is mounted there";
  if (read_marker(d.path + "/" + marker_name) != tokens_[i]) return "marker file missing or changed";
  if (stat((d.path + "/blobs").c_str(), &st) != 0) return "blobs directory gone";
  return "";
}

bool Disks::check(std::uint64_t now_ms) {
  (void)now_ms;
  bool changed = false;
  for (std::size_t i = 0; i < disks_.size(); i++) {
    if (!healthy(static_cast<int>(i))) continue;
    if (!writable(static_cast<int>(i))) changed |= recheck_full(i);
    std::string why = missing_reason(i);
    if (why.empty()) continue;
    mark_failed(static_cast<int>(i), why);
    changed = true;
  }
  return changed;
}

bool Disks::recheck(int disk, bool drained) {
  ASSERT(!healthy(disk));
  DiskInfo& d = disks_.at(disk);
  struct stat st;
  if (stat(d.path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return false;
  std::string marker = read_marker(d.path + "/" + marker_name);
  bool same = !marker.empty() && marker == tokens_[disk] && st.st_dev == d.device;
  if (!same && !drained) return false;  // its rows must move to other disks first
  if (!same) {
    ::unlink((d.path + "/" + marker_name).c_str());
    if (!prepare(&d)) return false;
    tokens_[disk] = read_marker(d.path + "/" + marker_name);
  } else if (!make_dir(d.path + "/tmp") || !make_dir(d.path + "/blobs")) {
    return false;
  }
  std::string probe = d.path + "/tmp/probe";
  bool ok = write_synced(probe, "probe");
  ::unlink(probe.c_str());
  if (!ok || tokens_[disk].empty()) return false;
  state_[disk].store(static_cast<std::uint8_t>(DiskState::healthy), std::memory_order_release);
  std::lock_guard<std::mutex> l(why_mu_);
  d.failure.clear();
  return true;
}

bool Disks::recheck_full(std::size_t i) {
  DiskInfo& d = disks_[i];
  struct statvfs s;
  if (statvfs(d.path.c_str(), &s) != 0) return false;
  std::uint64_t free = static_cast<std::uint64_t>(s.f_bavail) * s.f_frsize;
  std::uint64_t total = static_cast<std::uint64_t>(s.f_blocks) * s.f_frsize;
  if (free < std::min<std::uint64_t>(limits::disk_free_resume_bytes, total / 20)) return false;
  std::string probe = d.path + "/tmp/probe";
  bool ok = write_synced(probe, "probe");
  ::unlink(probe.c_str());
  if (!ok) return false;
  auto expected = static_cast<std::uint8_t>(DiskState::full);
  if (!state_[i].compare_exchange_strong(expected, static_cast<std::uint8_t>(DiskState::healthy))) return false;
  std::lock_guard<std::mutex> l(why_mu_);
  d.failure.clear();
  d.free_bytes = free;
  return true;
}

void Disks::refresh_free_space(std::uint64_t now_ms) {
  if (stat_done_ && now_ms - stat_at_ms_ < limits::disk_stat_interval_ms) return;
  stat_done_ = true;
  stat_at_ms_ = now_ms;
  for (std::size_t i = 0; i < disks_.size(); i++) {
    DiskInfo& d = disks_[i];
    struct statvfs s;
    if (statvfs(d.path.c_str(), &s) != 0) {
      mark_failed(static_cast<int>(i), "statvfs failed: a missing mount");
      continue;
    }
    d.free_bytes = static_cast<std::uint64_t>(s.f_bavail) * s.f_frsize;
    d.total_bytes = static_cast<std::uint64_t>(s.f_blocks) * s.f_frsize;
  }
}

std::vector<DiskInfo> Disks::info(std::uint64_t now_ms) {
  refresh_free_space(now_ms);
  std::lock_guard<std::mutex> l(why_mu_);
  std::vector<DiskInfo> out = disks_;
  for (std::size_t i = 0; i < out.size(); i++) {
    out[i].healthy = healthy(static_cast<int>(i));
    out[i].full = out[i].healthy && !writable(static_cast<int>(i));
  }
  return out;
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
    if (!writable(static_cast<int>(i))) continue;
    // A nearly full disk still gets a tiny weight: the write that fills it marks it full.
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
