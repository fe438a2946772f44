// ValueCache keeps recently read or written small values in memory (read ones already
// checksum-verified, written ones as they were checksummed on arrival), so a hot GET
// costs no SQLite query and no file system call. Least recently used goes first once
// the byte budget is spent.
// Coherence: when a write of a key completes, before it is acknowledged, BlobStore
// replaces the key's entry on the loop thread with the committed value, or drops it; a
// read that raced with the commit can only have cached the version that was current
// when it ran, and completions run in commit order.
// Thread: the loop thread only.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "blobstore/blob_file.h"

namespace blobstore {

struct CachedValue {
  BlobMeta meta;
  std::string body;          // empty for a tombstone
  mutable std::string extra;  // for the reader's own use (the node keeps response headers)
};

class ValueCache {
 public:
  explicit ValueCache(std::uint64_t bytes_max) : bytes_max_(bytes_max) {}
  std::shared_ptr<const CachedValue> get(std::string_view key);
  // Like get(), without counting or touching the recency order.
  std::shared_ptr<const CachedValue> peek(std::string_view key) const {
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : *it->second;
  }
  void put(std::shared_ptr<const CachedValue> v);
  void erase(std::string_view key);
  std::uint64_t bytes() const { return bytes_; }
  std::uint64_t bytes_max() const { return bytes_max_; }
  std::uint64_t hits() const { return hits_; }
  std::uint64_t misses() const { return misses_; }

 private:
  static std::uint64_t cost(const CachedValue& v) {
    return v.body.size() + v.meta.key.size() + v.meta.attrs.size() + 256;
  }
  using Lru = std::list<std::shared_ptr<const CachedValue>>;
  std::uint64_t bytes_max_;
  std::uint64_t bytes_ = 0;
  std::uint64_t hits_ = 0, misses_ = 0;
  Lru lru_;  // front: most recently used
  std::unordered_map<std::string_view, Lru::iterator> map_;  // views into lru_ entries' keys
};

}  // namespace blobstore
