#include "blobstore/value_cache.h"

namespace blobstore {

std::shared_ptr<const CachedValue> ValueCache::get(std::string_view key) {
  auto it = map_.find(key);
  if (it == map_.end()) {
    misses_++;
    return nullptr;
  }
  hits_++;
  lru_.splice(lru_.begin(), lru_, it->second);
  return *it->second;
}

void ValueCache::put(std::shared_ptr<const CachedValue> v) {
  if (cost(*v) > bytes_max_ / 8) return;  // one value never takes most of the budget
  erase(v->meta.key);
  bytes_ += cost(*v);
  lru_.push_front(std::move(v));
  map_.emplace(std::string_view(lru_.front()->meta.key), lru_.begin());
  while (bytes_ > bytes_max_ && !lru_.empty()) erase(lru_.back()->meta.key);
}

void ValueCache::erase(std::string_view key) {
  auto it = map_.find(key);
  if (it == map_.end()) return;
  Lru::iterator e = it->second;
  bytes_ -= cost(**e);
  map_.erase(it);  // before the entry that owns the key's bytes goes
  lru_.erase(e);
}

}  // namespace blobstore
