#include "blobstore/summary.h"

#include <openssl/evp.h>

#include <algorithm>

#include "common/digest.h"
#include "common/status.h"

namespace blobstore {

namespace {
std::uint64_t load_be(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}
}  // namespace

bool Leaf::remove(const Leaf& e) {
  h0 ^= e.h0;
  h1 ^= e.h1;
  bool ok = count >= e.count && tombstones >= e.tombstones;
  count = count >= e.count ? count - e.count : 0;
  tombstones = tombstones >= e.tombstones ? tombstones - e.tombstones : 0;
  return ok;
}

std::string Leaf::hash_hex() const {
  std::uint8_t b[16];
  for (int i = 0; i < 8; i++) {
    b[i] = static_cast<std::uint8_t>(h0 >> (56 - 8 * i));
    b[8 + i] = static_cast<std::uint8_t>(h1 >> (56 - 8 * i));
  }
  return hex(b, sizeof b);
}

bool Leaf::parse_hash(std::string_view text, Leaf* out) {
  std::uint8_t b[16];
  if (text.size() != 32 || !unhex(text, b, sizeof b)) return false;
  out->h0 = load_be(b);
  out->h1 = load_be(b + 8);
  return true;
}

Leaf entry_leaf(std::string_view key, const Version& version, bool tombstone) {
  // key length (u16) | key | hlc (u64 BE) | node (16) | tombstone (1): unambiguous.
  std::string buf;
  buf.reserve(2 + key.size() + 8 + 16 + 1);
  buf.push_back(static_cast<char>(key.size() >> 8));
  buf.push_back(static_cast<char>(key.size() & 0xff));
  buf.append(key);
  for (int i = 0; i < 8; i++) buf.push_back(static_cast<char>(version.hlc >> (56 - 8 * i)));
  buf.append(reinterpret_cast<const char*>(version.node.data()), version.node.size());
  buf.push_back(tombstone ? 1 : 0);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  ASSERT(EVP_Digest(buf.data(), buf.size(), md, &len, common::sha256_digest(), nullptr) == 1);
  Leaf l;
  l.h0 = load_be(md);
  l.h1 = load_be(md + 8);
  l.count = 1;
  l.tombstones = tombstone ? 1 : 0;
  return l;
}

RangeSummaries::RangeSummaries(std::vector<std::uint64_t> tokens)
    : tokens_(std::move(tokens)), leaves_(tokens_.size()) {
  ASSERT(!tokens_.empty());
  ASSERT(std::is_sorted(tokens_.begin(), tokens_.end()));
}

std::size_t RangeSummaries::arc_of(std::uint64_t position) const {
  auto it = std::lower_bound(tokens_.begin(), tokens_.end(), position);
  return it == tokens_.end() ? 0 : static_cast<std::size_t>(it - tokens_.begin());
}

int RangeSummaries::arc_intervals(std::size_t arc, std::uint64_t first[2],
                                  std::uint64_t last[2]) const {
  ASSERT(arc < tokens_.size());
  if (arc > 0) {
    first[0] = tokens_[arc - 1] + 1;
    last[0] = tokens_[arc];
    // Two tokens at one position leave an empty arc: [t+1, t] holds nothing.
    if (first[0] > last[0]) return 0;
    return 1;
  }
  std::uint64_t after_last = tokens_.back() + 1;  // 0 when the last token is 2^64-1
  int n = 0;
  if (after_last != 0) {
    first[n] = after_last;
    last[n] = ~0ull;
    n++;
  }
  first[n] = 0;
  last[n] = tokens_[0];
  return n + 1;
}

bool RangeSummaries::operator==(const RangeSummaries& o) const {
  if (tokens_ != o.tokens_) return false;
  for (std::size_t i = 0; i < leaves_.size(); i++) {
    if (!leaves_[i].same(o.leaves_[i]) || leaves_[i].tombstones != o.leaves_[i].tombstones) return false;
  }
  return true;
}

}  // namespace blobstore
