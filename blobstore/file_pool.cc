#include "blobstore/file_pool.h"

#include <chrono>

#include "blobstore/limits.h"
#include "common/status.h"

namespace blobstore {

std::uint64_t monotonic_ms() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

FilePool::FilePool(std::size_t disk_count, std::size_t files_max_per_disk, std::uint64_t cool_ms)
    : free_(disk_count), files_max_(files_max_per_disk), cool_ms_(cool_ms) {}

FilePool::Taken FilePool::take(int disk, std::uint64_t now_ms) {
  std::lock_guard<std::mutex> l(mu_);
  auto& q = free_.at(static_cast<std::size_t>(disk));
  if (q.empty() || q.front().ready_ms > now_ms) return {};
  Taken t{std::move(q.front().path), q.front().bytes};
  q.pop_front();
  return t;
}

bool FilePool::wants(int disk, std::uint64_t bytes) const {
  if (bytes > limits::pooled_file_bytes_max) return false;  // big files would hold space
  std::lock_guard<std::mutex> l(mu_);
  return free_.at(static_cast<std::size_t>(disk)).size() < files_max_;
}

void FilePool::add(int disk, std::string path, std::uint64_t bytes, std::uint64_t now_ms) {
  std::lock_guard<std::mutex> l(mu_);
  free_.at(static_cast<std::size_t>(disk)).push_back({std::move(path), bytes, now_ms + cool_ms_});
}

void FilePool::add_ready(int disk, std::string path, std::uint64_t bytes) {
  std::lock_guard<std::mutex> l(mu_);
  free_.at(static_cast<std::size_t>(disk)).push_front({std::move(path), bytes, 0});
}

std::size_t FilePool::size(int disk) const {
  std::lock_guard<std::mutex> l(mu_);
  return free_.at(static_cast<std::size_t>(disk)).size();
}

}  // namespace blobstore
