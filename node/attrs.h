// Stored response headers ("attributes") and expiry of a value: what a PUT may carry
// besides its body and Content-Type, how it is stored (BlobMeta::attrs, a block of
// "name: value\r\n" lines, names lower-case, sorted by name, each name once), and how it
// travels between nodes. The block is general: any header the API layer decides to keep
// (the native API: X-Ringstore-Meta-*, Content-Encoding, Content-Disposition,
// Cache-Control) is stored and sent back verbatim, so a read never parses it.
// Between nodes every line travels as its own header, "X-Ringstore-Attr-<name>: value"
// (a replica write, a push, a replica's answer to HEAD/GET /_/internal/blob), so the
// receiver rebuilds the same block byte for byte whatever names it holds; the expiry as
// X-Ringstore-Expires-Ms and the tombstone kind as X-Ringstore-Tombstone: 1|unlinked.
// Pure helpers: no I/O; the time comes in as an argument.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "blobstore/blob_file.h"
#include "blobstore/limits.h"
#include "common/clock.h"
#include "common/status.h"

namespace node {

namespace attr_limits {
// The stored block of one value: 400 {"error":"metadata_too_large","max_bytes":8192}.
inline constexpr std::size_t attrs_bytes_max = blobstore::limits::attrs_bytes_max;
// X-Ringstore-TTL: 1 second to 10 years. → 400 bad_ttl
inline constexpr std::uint64_t ttl_seconds_max = 10ull * 365 * 24 * 3600;
// Replica requests carry the block as X-Ringstore-Attr-* headers: each line gains 17
// bytes of prefix, so a block of the shortest lines ("a: \r\n", 5 bytes) takes at most
// 22/5 of its size on the wire. Internal requests get this much header room on top of
// the client limit, so that any stored block fits in a replica write.
inline constexpr std::size_t internal_header_bytes_extra = 5 * attrs_bytes_max;
}  // namespace attr_limits

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// Whether a value with this expiry (0: none) has expired by this node's wall clock. The
// clock is read only for a value that has an expiry: every GET asks.
inline bool expired_now(std::uint64_t expires_ms, const common::Clock& clock) {
  return expires_ms != 0 && blobstore::expired_at(expires_ms, clock.wall_ms());
}

// Whether a client header (lower-case name) is kept with the value by the native API.
bool is_stored_header(std::string_view lower_name);

// Names and values of stored headers: printable ASCII (0x20..0x7e), names non-empty
// and without ':' or spaces.
bool valid_header_text(std::string_view s);

// The stored block of `headers` (names lower-cased here; a repeated name keeps its last
// value), or 400 metadata_too_large / bad_metadata.
Result<std::string> encode_attrs(HeaderList headers);

// Calls fn(name, value) for each line of a stored block.
template <typename Fn>
void for_each_attr(std::string_view block, Fn fn) {
  while (!block.empty()) {
    std::size_t eol = block.find("\r\n");
    std::string_view line = block.substr(0, eol);
    block = eol == std::string_view::npos ? std::string_view() : block.substr(eol + 2);
    std::size_t colon = line.find(": ");
    if (colon == std::string_view::npos) continue;
    fn(line.substr(0, colon), line.substr(colon + 2));
  }
}

// The headers a replica write, a push or a replica's answer carries about a version
// beyond its version, MD5 and content type: tombstone kind, attributes, expiry.
std::string replica_meta_headers(const blobstore::BlobMeta& m);

// Reads back what replica_meta_headers() wrote: `get(name)` looks up a lower-case
// header name; `ringstore_headers` lists (name after "x-ringstore-", value) pairs.
// False on a malformed expiry or block.
bool replica_meta_from(const HeaderList& ringstore_headers, blobstore::BlobMeta* m);

// What a client sees of a value beyond ETag, Content-Type and the rest: the stored block
// and, for a value that expires, X-Ringstore-Expires (HTTP date) and -Expires-Ms.
std::string client_meta_headers(const blobstore::BlobMeta& m);

// The expiry of a client PUT from X-Ringstore-TTL (seconds), at coordinator time now_ms:
// 0 without the header, else now_ms + ttl; 400 bad_ttl for anything but 1..max.
Result<std::uint64_t> expiry_from_ttl(const std::string* ttl, std::uint64_t now_ms);

}  // namespace node
