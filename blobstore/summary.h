// Summaries of a node's replica rows, (key, version, tombstone), per arc of the ring,
// for anti-entropy: two replicas compare these instead of their key lists.
//
// A key's entry hashes to 128 bits (the first 16 bytes of SHA-256 over the key, the
// version and the tombstone flag). An arc's Leaf is the XOR of its entries' hashes
// plus their count, so adding and removing an entry are the same O(1) operation and
// the leaf of a set does not depend on the order it was built in: a summary kept
// current write by write equals one rebuilt from the index. Leaves combine the same way
// (XOR the hashes, add the counts), which is how groups of arcs are compared first.
//
// Arc i is the ring interval (token[i-1], token[i]]: every key in it has the same
// preference list (the one of position token[i]). Arc 0 wraps: (token[last], 2^64) and
// [0, token[0]].
// Pure: no I/O, no clock. Thread: whoever owns it (the loop thread).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "blobstore/version.h"

namespace blobstore {

struct Leaf {
  std::uint64_t h0 = 0, h1 = 0;   // XOR of the entries' 128-bit hashes
  std::uint64_t count = 0;        // entries
  std::uint64_t tombstones = 0;   // of which tombstones

  void add(const Leaf& e) {
    h0 ^= e.h0;
    h1 ^= e.h1;
    count += e.count;
    tombstones += e.tombstones;
  }
  // Removes an entry added before. Returns false when the counts would go below zero,
  // which means the summary missed an add (see RangeSummaries): the counts stop at zero
  // and anti-entropy recomputes the arc from the index when it next differs.
  bool remove(const Leaf& e);
  // Two replicas hold the same set when hash and count agree.
  bool same(const Leaf& o) const { return h0 == o.h0 && h1 == o.h1 && count == o.count; }
  bool empty() const { return count == 0; }
  std::string hash_hex() const;  // 32 hex digits
  static bool parse_hash(std::string_view hex, Leaf* out);
};

// The leaf of one entry.
Leaf entry_leaf(std::string_view key, const Version& version, bool tombstone);

class RangeSummaries {
 public:
  // REQUIRES: `tokens` sorted ascending and not empty.
  explicit RangeSummaries(std::vector<std::uint64_t> tokens);

  std::size_t arc_count() const { return tokens_.size(); }
  // The arc holding `position`: the first token at or after it, wrapping to arc 0.
  std::size_t arc_of(std::uint64_t position) const;
  // The positions of arc i, as one or two inclusive intervals [first, last] (arc 0
  // wraps). Returns how many intervals were written to out (1 or 2).
  int arc_intervals(std::size_t arc, std::uint64_t out_first[2], std::uint64_t out_last[2]) const;
  std::uint64_t token(std::size_t arc) const { return tokens_[arc]; }

  void add(std::uint64_t position, const Leaf& entry) { leaves_[arc_of(position)].add(entry); }
  bool remove(std::uint64_t position, const Leaf& entry) { return leaves_[arc_of(position)].remove(entry); }
  const Leaf& leaf(std::size_t arc) const { return leaves_[arc]; }
  void set(std::size_t arc, const Leaf& l) { leaves_[arc] = l; }
  bool operator==(const RangeSummaries& o) const;

 private:
  std::vector<std::uint64_t> tokens_;
  std::vector<Leaf> leaves_;
};

}  // namespace blobstore
