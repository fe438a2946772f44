// Pure helpers for the request path: the target (key and query), key rules, Range,
// If-None-Match and HTTP dates. No I/O: the fuzz targets call these directly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace node {

// "%41b" → "Ab". A '%' not followed by two hex digits is an error.
Result<std::string> percent_decode(std::string_view in);

// Keys: 1..key_bytes_max bytes after decoding, valid UTF-8 (so listings are valid
// JSON, as S3 requires), no NUL, and not under the reserved "_/" prefix.
Status validate_key(std::string_view key);

struct Target {
  std::string path;  // decoded, without the leading '/'
  std::vector<std::pair<std::string, std::string>> query;  // decoded, in order
  bool has(std::string_view name) const;
  const std::string* get(std::string_view name) const;
};
Result<Target> parse_target(std::string_view url);

// One byte range, inclusive at both ends, already clipped to the body.
struct ByteRange {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  std::uint64_t length() const { return last - first + 1; }
};
enum class RangeKind { whole, partial, unsatisfiable };
struct RangeResult {
  RangeKind kind = RangeKind::whole;
  ByteRange range;
};
// RFC 9110 §14: a malformed or multi-range header is ignored (whole body); a single
// range that starts past the end is unsatisfiable (416).
RangeResult parse_range(std::string_view header, std::uint64_t body_bytes);

// True when an If-None-Match header lists `etag` (quoted, weak or strong) or is "*".
bool etag_matches(std::string_view if_none_match, std::string_view etag);

// IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
std::string http_date(std::int64_t unix_seconds);

// Parses a decimal u64 with no sign or spaces; nullopt on anything else or overflow.
std::optional<std::uint64_t> parse_u64(std::string_view s);

}  // namespace node
