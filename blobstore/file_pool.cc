#include "blobstore/file_pool.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "blobstore/blob_file.h"
#include "blobstore/limits.h"
#include "common/assert.h"
#include "common/status.h"
#include "common/thread_name.h"

namespace blobstore {

std::uint64_t monotonic_ms() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

FilePool::FilePool(std::size_t disk_count, std::size_t files_max_per_disk, std::uint64_t blocks_bytes_max_per_disk,
                   std::uint64_t cool_ms)
    : free_(disk_count),
      held_(disk_count, 0),
      files_max_(files_max_per_disk),
      blocks_max_(blocks_bytes_max_per_disk),
      cool_ms_(cool_ms) {}

FilePool::Taken FilePool::take(int disk, std::uint64_t now_ms) {
  std::lock_guard<std::mutex> l(mu_);
  auto& q = free_.at(static_cast<std::size_t>(disk));
  if (q.empty() || q.front().ready_ms > now_ms) return {};
  Taken t{std::move(q.front().path), q.front().bytes};
  held_[static_cast<std::size_t>(disk)] -= blocks_of(t.bytes);
  q.pop_front();
  return t;
}

bool FilePool::wants(int disk, std::uint64_t bytes) const {
  if (bytes > limits::pooled_file_bytes_max) return false;  // big files would hold space
  std::lock_guard<std::mutex> l(mu_);
  auto i = static_cast<std::size_t>(disk);
  return free_.at(i).size() < files_max_ && held_[i] + blocks_of(bytes) <= blocks_max_;
}

void FilePool::push_locked(int disk, Entry e, bool front) {
  auto i = static_cast<std::size_t>(disk);
  held_.at(i) += blocks_of(e.bytes);
  if (front) {
    free_[i].push_front(std::move(e));
  } else {
    free_[i].push_back(std::move(e));
  }
}

void FilePool::add(int disk, std::string path, std::uint64_t bytes, std::uint64_t now_ms) {
  std::lock_guard<std::mutex> l(mu_);
  push_locked(disk, {std::move(path), bytes, now_ms + cool_ms_}, false);
}

void FilePool::add_ready(int disk, std::string path, std::uint64_t bytes) {
  std::lock_guard<std::mutex> l(mu_);
  push_locked(disk, {std::move(path), bytes, 0}, true);
}

std::size_t FilePool::size(int disk) const {
  std::lock_guard<std::mutex> l(mu_);
  return free_.at(static_cast<std::size_t>(disk)).size();
}

bool FilePool::has_ready(int disk, std::size_t n, std::uint64_t now_ms) const {
  std::lock_guard<std::mutex> l(mu_);
  const auto& q = free_.at(static_cast<std::size_t>(disk));
  // Ready files come first: the ones found at start and the stock at the front, then
  // superseded ones in the order they cool.
  std::size_t ready = 0;
  for (auto it = q.begin(); it != q.end() && ready < n && it->ready_ms <= now_ms; ++it) ready++;
  return ready >= n;
}

FileStock::FileStock(FilePool* pool, Disks* disks, std::string prefix)
    : pool_(pool), disks_(disks), prefix_(std::move(prefix)), wanted_(disks->size(), false) {}

FileStock::~FileStock() { stop(); }

void FileStock::start() {
  ASSERT(!thread_.joinable());
  thread_ = std::thread([this] {
    common::name_this_thread("rs-file-stock");
    run();
  });
}

void FileStock::stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void FileStock::wake(int disk, std::uint64_t now_ms) {
  if (pool_->has_ready(disk, limits::stocked_files_low, now_ms)) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    wanted_.at(static_cast<std::size_t>(disk)) = true;
  }
  cv_.notify_one();
}

void FileStock::run() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    cv_.wait(l, [this] {
      return stopping_ || std::find(wanted_.begin(), wanted_.end(), true) != wanted_.end();
    });
    if (stopping_) return;
    for (std::size_t i = 0; i < wanted_.size() && !stopping_; i++) {
      if (!wanted_[i]) continue;
      wanted_[i] = false;
      int disk = static_cast<int>(i);
      l.unlock();
      // A disk that cannot create files is the write path's to mark failed; the stock
      // just stops there until the next wake().
      while (disks_->writable(disk) && pool_->wants(disk, 0) &&
             !pool_->has_ready(disk, limits::stocked_files_high, monotonic_ms())) {
        std::string path = disks_->path(disk) + "/tmp/" + prefix_ + std::to_string(++seq_);
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) break;
        close(fd);
        pool_->add_ready(disk, std::move(path), 0);
        made_.fetch_add(1, std::memory_order_relaxed);
        std::lock_guard<std::mutex> g(mu_);
        if (stopping_) break;
      }
      l.lock();
    }
  }
}

Status TempFiles::open(int disk, File* out) {
  std::uint64_t now = monotonic_ms();
  FilePool::Taken reused = pool_->take(disk, now);
  if (stock_ != nullptr) stock_->wake(disk, now);
  if (!reused.path.empty()) {
    int fd = ::open(reused.path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      *out = File{std::move(reused.path), fd, reused.bytes};
      return Status::ok();
    }
    unlink(reused.path.c_str());
  }
  std::string path = disks_->path(disk) + "/tmp/" + prefix_ + std::to_string(++seq_) + ".tmp";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd >= 0) {
    *out = File{std::move(path), fd, 0};
    return Status::ok();
  }
  int err = errno;
  if (err == EMFILE || err == ENFILE) return Status::unavailable("out of file descriptors");
  std::string why = std::string("cannot create a file: ") + std::strerror(err);
  if (is_full_error(err)) {  // no room, or read-only: it still serves what it holds
    disks_->mark_full(disk, why);
    return no_room();
  }
  disks_->mark_failed(disk, why);
  return Status::io_error(why);
}

Status TempFiles::open_on_some(int* disk, File* out) {
  const int n = static_cast<int>(disks_->size());
  Status s = Status::unavailable("no healthy disk");
  for (int attempt = 0; attempt < n; attempt++) {
    int d = *disk;
    for (int k = 1; k < n && !disks_->writable(d); k++) d = (*disk + k) % n;
    if (!disks_->writable(d)) return disks_->any_healthy() >= 0 ? no_room() : Status::unavailable("no healthy disk");
    *disk = d;
    s = open(d, out);
    // Done, or out of descriptors: no disk helps. A disk found full: try the next one.
    if (s.code() != Code::io_error && s.code() != Code::insufficient_storage) return s;
  }
  return s;
}

Status TempFiles::fill(const File& t, std::string_view bytes) {
  Status s = write_all(t.fd, bytes.data(), bytes.size(), t.path, 0);
  if (s.is_ok() && t.reused_bytes > bytes.size() && ftruncate(t.fd, static_cast<off_t>(bytes.size())) != 0) {
    s = Status::from_errno("truncate " + t.path, errno);
  }
  return s;
}

}  // namespace blobstore
