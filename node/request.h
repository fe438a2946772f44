// Pure helpers for the request path: the target (key and query), key rules, Range
// (one or several), the conditional headers of RFC 9110 §13 and HTTP dates. No I/O: the
// fuzz targets call these directly.
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

// Several ranges (RFC 9110 §14.1.2). A malformed header, a unit other than bytes, or
// more than limits::ranges_max specs: whole (the Range is ignored, as §14.2 allows).
// Specs past the end are dropped; none left: unsatisfiable. Overlapping or adjacent
// ranges are merged, and then the parts come in byte order; otherwise in the order
// asked (§15.3.7.2).
struct RangeSet {
  RangeKind kind = RangeKind::whole;
  std::vector<ByteRange> ranges;  // partial: 1..ranges_max, within the body, disjoint
};
RangeSet parse_ranges(std::string_view header, std::uint64_t body_bytes);

// The body of a 206 multipart/byteranges answer: one part per range, each with its
// Content-Type (left out when empty) and Content-Range. REQUIRES: every range lies
// within `body`, and `boundary` does not occur in it.
std::string multipart_byteranges(std::string_view body, const std::vector<ByteRange>& ranges,
                                 std::string_view content_type, std::string_view boundary);

// Entity-tag lists of If-Match and If-None-Match: "*" or 1#entity-tag (RFC 9110 §8.8.3).
bool etag_list_valid(std::string_view header);
// Whether a valid list holds `etag` (quoted, strong, as this node makes them) or is "*".
// Strong comparison (If-Match) matches only a strong tag; weak (If-None-Match) either.
bool etag_list_matches(std::string_view header, std::string_view etag, bool strong);

// IMF-fixdate, and the obsolete RFC 850 and asctime forms a recipient must accept
// (RFC 9110 §5.6.7). nullopt for anything else: a malformed date is treated as absent.
std::optional<std::int64_t> parse_http_date(std::string_view s);

// The conditional headers of a request, as received. A header sent twice: a list
// (If-Match, If-None-Match) is joined with a comma, a date or If-Range is made empty
// and so ignored. Bounded by header_bytes_max like every header.
struct Conditions {
  std::optional<std::string> if_match, if_none_match;
  std::optional<std::string> if_modified_since, if_unmodified_since, if_range;
  // 400 for an entity-tag list that is not well formed: ignoring it would turn a
  // conditional write into an unconditional one.
  Status validate() const;
  // Whether a GET or HEAD has preconditions to evaluate (If-Range is the Range's).
  bool constrain_read() const {
    return if_match || if_none_match || if_modified_since || if_unmodified_since;
  }
  // A write checks its preconditions only when one of these is present: an
  // unconditional write must not pay for the read. A malformed date counts as absent.
  bool constrain_write() const;
};

// What a precondition is checked against: the newest version the read found.
struct Validators {
  bool exists = false;              // a live value (not missing, not a tombstone)
  std::string_view etag;            // quoted
  std::int64_t last_modified_s = 0; // Last-Modified, in seconds
};
enum class Precondition { proceed, not_modified, failed };
struct PreconditionResult {
  Precondition outcome = Precondition::proceed;
  const char* reason = "";  // for failed: why, for the 412's body
};
// RFC 9110 §13.2.2 steps 1-4: If-Match, else If-Unmodified-Since; then If-None-Match,
// else (GET and HEAD only) If-Modified-Since. `read` is GET or HEAD: a matching
// If-None-Match is not_modified (304) there and failed (412) for a write.
PreconditionResult evaluate_preconditions(const Conditions& c, bool read, const Validators& v);
// Step 5: whether an If-Range lets the Range apply (absent, or its validator matches:
// an ETag compared strongly, or a date equal to Last-Modified).
bool if_range_matches(const std::optional<std::string>& if_range, const Validators& v);

// IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
std::string http_date(std::int64_t unix_seconds);

// Parses a decimal u64 with no sign or spaces; nullopt on anything else or overflow.
std::optional<std::uint64_t> parse_u64(std::string_view s);

}  // namespace node
