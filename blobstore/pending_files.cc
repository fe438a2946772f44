#include "blobstore/pending_files.h"

namespace blobstore {

void PendingFiles::add(const std::string& path, File f) {
  ASSERT(f.bytes != nullptr);
  std::lock_guard<std::mutex> l(mu_);
  auto [it, inserted] = files_.try_emplace(path, File{});
  if (!inserted) bytes_ -= it->second.bytes->size();
  bytes_ += f.bytes->size();
  it->second = std::move(f);
}

std::shared_ptr<const std::string> PendingFiles::find(const std::string& path) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = files_.find(path);
  return it == files_.end() ? nullptr : it->second.bytes;
}

bool PendingFiles::erase(const std::string& path) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = files_.find(path);
  if (it == files_.end()) return false;
  bytes_ -= it->second.bytes->size();
  files_.erase(it);
  return true;
}

std::vector<std::pair<std::string, PendingFiles::File>> PendingFiles::snapshot() const {
  std::lock_guard<std::mutex> l(mu_);
  return {files_.begin(), files_.end()};
}

Status PendingFiles::place(const std::string& path, const std::function<Status()>& put, bool* held) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = files_.find(path);
  *held = it != files_.end();
  if (!*held) return Status::ok();
  Status s = put();
  if (s.is_ok()) {
    bytes_ -= it->second.bytes->size();
    files_.erase(it);
  }
  return s;
}

std::size_t PendingFiles::count() const {
  std::lock_guard<std::mutex> l(mu_);
  return files_.size();
}

std::uint64_t PendingFiles::bytes() const {
  std::lock_guard<std::mutex> l(mu_);
  return bytes_;
}

}  // namespace blobstore
