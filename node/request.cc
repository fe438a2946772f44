#include "node/request.h"

#include <algorithm>
#include <charconv>
#include <ctime>

#include "common/assert.h"
#include "node/limits.h"

namespace node {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t n;
    std::uint32_t cp;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated sequence
    for (std::size_t k = 1; k <= n; k++) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Reject overlong forms, surrogates and values past U+10FFFF.
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000)) return false;
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  if (s.empty()) return std::nullopt;
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

Result<std::string> percent_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); i++) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return Status::invalid("bad_percent_encoding");
    int hi = hex_value(in[i + 1]);
    int lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) return Status::invalid("bad_percent_encoding");
    out.push_back(static_cast<char>(hi << 4 | lo));
    i += 2;
  }
  return out;
}

Status validate_key(std::string_view key) {
  if (key.empty()) return Status::invalid("empty_key");
  if (key.size() > limits::key_bytes_max) {
    return Status(Code::invalid_argument,
                  "key_too_long max_bytes=" + std::to_string(limits::key_bytes_max));
  }
  if (key.find('\0') != std::string_view::npos) return Status::invalid("key_has_nul");
  if (key.substr(0, 2) == "_/") return Status::invalid("key_reserved: keys cannot start with _/");
  if (!valid_utf8(key)) return Status::invalid("key_not_utf8");
  return Status::ok();
}

bool Target::has(std::string_view name) const { return get(name) != nullptr; }

const std::string* Target::get(std::string_view name) const {
  for (const auto& [k, v] : query) {
    if (k == name) return &v;
  }
  return nullptr;
}

Result<Target> parse_target(std::string_view url) {
  if (url.empty() || url[0] != '/') return Status::invalid("bad_target: must start with /");
  Target t;
  std::size_t q = url.find('?');
  std::string_view raw_path = url.substr(1, q == std::string_view::npos ? url.npos : q - 1);
  auto path = percent_decode(raw_path);
  if (!path.is_ok()) return path.take_status();
  t.path = std::move(path.value());
  if (q == std::string_view::npos) return t;
  std::string_view rest = url.substr(q + 1);
  while (!rest.empty()) {
    std::size_t amp = rest.find('&');
    std::string_view part = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    if (part.empty()) continue;
    std::size_t eq = part.find('=');
    auto k = percent_decode(part.substr(0, eq));
    if (!k.is_ok()) return k.take_status();
    std::string v;
    if (eq != std::string_view::npos) {
      auto dv = percent_decode(part.substr(eq + 1));
      if (!dv.is_ok()) return dv.take_status();
      v = std::move(dv.value());
    }
    t.query.emplace_back(std::move(k.value()), std::move(v));
  }
  return t;
}

namespace {

// One byte-range-spec or suffix-range-spec, clipped to the body; whole when malformed.
RangeResult parse_spec(std::string_view spec, std::uint64_t body_bytes) {
  RangeResult whole;
  std::size_t dash = spec.find('-');
  if (dash == std::string_view::npos) return whole;
  std::string_view a = trim(spec.substr(0, dash));
  std::string_view b = trim(spec.substr(dash + 1));
  RangeResult r;
  r.kind = RangeKind::partial;
  if (a.empty()) {  // suffix: the last N bytes
    auto n = parse_u64(b);
    if (!n) return whole;
    if (*n == 0 || body_bytes == 0) return {RangeKind::unsatisfiable, {}};
    std::uint64_t len = *n < body_bytes ? *n : body_bytes;
    r.range = {body_bytes - len, body_bytes - 1};
    return r;
  }
  auto first = parse_u64(a);
  if (!first) return whole;
  std::uint64_t last = body_bytes == 0 ? 0 : body_bytes - 1;
  if (!b.empty()) {
    auto l = parse_u64(b);
    if (!l || *l < *first) return whole;
    if (*l < last) last = *l;
  }
  if (*first >= body_bytes) return {RangeKind::unsatisfiable, {}};
  r.range = {*first, last};
  return r;
}

// Overlapping or adjacent ranges become one (in byte order then); disjoint ones keep
// the order they were asked in.
std::vector<ByteRange> coalesce(std::vector<ByteRange> asked) {
  std::vector<ByteRange> sorted = asked;
  std::sort(sorted.begin(), sorted.end(),
            [](const ByteRange& x, const ByteRange& y) { return x.first < y.first; });
  std::vector<ByteRange> merged;
  for (const ByteRange& r : sorted) {
    // last < body size <= UINT64_MAX, so last + 1 cannot wrap.
    if (!merged.empty() && r.first <= merged.back().last + 1) {
      merged.back().last = std::max(merged.back().last, r.last);
    } else {
      merged.push_back(r);
    }
  }
  return merged.size() == asked.size() ? asked : merged;
}

}  // namespace

RangeResult parse_range(std::string_view header, std::uint64_t body_bytes) {
  RangeResult whole;
  header = trim(header);
  if (header.substr(0, 6) != "bytes=") return whole;
  std::string_view spec = trim(header.substr(6));
  if (spec.find(',') != std::string_view::npos) return whole;  // multi-range: send it all
  return parse_spec(spec, body_bytes);
}

RangeSet parse_ranges(std::string_view header, std::uint64_t body_bytes) {
  RangeSet whole;
  header = trim(header);
  if (header.substr(0, 6) != "bytes=") return whole;
  std::string_view rest = header.substr(6);
  std::vector<ByteRange> asked;
  std::size_t specs = 0;
  while (!rest.empty()) {  // at most header_bytes_max rounds
    std::size_t comma = rest.find(',');
    std::string_view spec = trim(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    if (spec.empty()) continue;  // empty list elements are allowed (RFC 9110 §5.6.1)
    if (++specs > limits::ranges_max) return whole;
    RangeResult one = parse_spec(spec, body_bytes);
    if (one.kind == RangeKind::whole) return whole;  // one malformed spec spoils the header
    if (one.kind == RangeKind::partial) asked.push_back(one.range);
  }
  if (specs == 0) return whole;
  if (asked.empty()) return {RangeKind::unsatisfiable, {}};
  return {RangeKind::partial, coalesce(std::move(asked))};
}

std::string multipart_byteranges(std::string_view body, const std::vector<ByteRange>& ranges,
                                 std::string_view content_type, std::string_view boundary) {
  std::string out;
  std::size_t bytes = 0;
  for (const ByteRange& r : ranges) bytes += r.length() + 128 + content_type.size() + boundary.size();
  out.reserve(bytes + boundary.size() + 8);
  const std::string size = std::to_string(body.size());
  for (const ByteRange& r : ranges) {
    ASSERT(r.first <= r.last);
    ASSERT(r.last < body.size());
    out += "--";
    out += boundary;
    out += "\r\n";
    if (!content_type.empty()) {
      out += "Content-Type: ";
      out += content_type;
      out += "\r\n";
    }
    out += "Content-Range: bytes " + std::to_string(r.first) + "-" + std::to_string(r.last) + "/" +
           size + "\r\n\r\n";
    out += body.substr(r.first, r.length());
    out += "\r\n";
  }
  out += "--";
  out += boundary;
  out += "--\r\n";
  return out;
}

namespace {

// Reads the next entity-tag of a list from `rest` (RFC 9110 §8.8.3: [W/] DQUOTE *etagc
// DQUOTE, where etagc may be a comma): 1 with *tag (quotes included) and *weak set, 0 at
// the end of the list, -1 when it is not well formed.
int next_etag(std::string_view& rest, std::string_view* tag, bool* weak) {
  while (!rest.empty() && (rest[0] == ' ' || rest[0] == '\t' || rest[0] == ',')) rest.remove_prefix(1);
  if (rest.empty()) return 0;
  *weak = rest.substr(0, 2) == "W/";
  if (*weak) rest.remove_prefix(2);
  if (rest.empty() || rest[0] != '"') return -1;
  std::size_t end = 1;
  for (; end < rest.size() && rest[end] != '"'; end++) {
    auto ch = static_cast<unsigned char>(rest[end]);
    if (ch < 0x21 || ch == 0x7f) return -1;
  }
  if (end == rest.size()) return -1;  // no closing quote
  *tag = rest.substr(0, end + 1);
  rest.remove_prefix(end + 1);
  std::size_t i = 0;
  while (i < rest.size() && (rest[i] == ' ' || rest[i] == '\t')) i++;
  if (i < rest.size() && rest[i] != ',') return -1;
  rest.remove_prefix(i);
  return 1;
}

}  // namespace

bool etag_list_valid(std::string_view header) {
  std::string_view rest = trim(header);
  if (rest == "*") return true;
  std::string_view tag;
  bool weak = false;
  int tags = 0;
  for (int got; (got = next_etag(rest, &tag, &weak)) != 0; tags++) {  // one tag per round
    if (got < 0) return false;
  }
  return tags > 0;
}

bool etag_list_matches(std::string_view header, std::string_view etag, bool strong) {
  std::string_view rest = trim(header);
  if (rest == "*") return true;
  std::string_view tag;
  bool weak = false;
  while (next_etag(rest, &tag, &weak) == 1) {
    if (strong && weak) continue;  // a weak tag never matches strongly
    if (tag == etag) return true;
  }
  return false;
}

namespace {

int month_of(std::string_view m) {
  static constexpr std::string_view names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                               "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  for (int i = 0; i < 12; i++) {
    if (m == names[i]) return i + 1;
  }
  return 0;
}

bool day_name(std::string_view d, bool long_form) {
  static constexpr std::string_view names[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                               "Friday", "Saturday", "Sunday"};
  for (std::string_view n : names) {
    if (long_form ? d == n : d == n.substr(0, 3)) return true;
  }
  return false;
}

// Fixed-width decimal digits (a leading space allowed where asctime pads the day).
std::optional<int> digits(std::string_view s) {
  if (!s.empty() && s[0] == ' ') s.remove_prefix(1);
  if (s.empty()) return std::nullopt;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

// Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (H. Hinnant).
std::int64_t days_from_civil(std::int64_t y, int m, int d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const std::int64_t yoe = y - era * 400;
  const std::int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

// "HH:MM:SS" with the date's parts into seconds since the epoch.
std::optional<std::int64_t> to_unix(std::optional<int> year, int month, std::optional<int> day,
                                    std::string_view hms) {
  if (!year || month == 0 || !day || hms.size() != 8 || hms[2] != ':' || hms[5] != ':') {
    return std::nullopt;
  }
  auto h = digits(hms.substr(0, 2));
  auto m = digits(hms.substr(3, 2));
  auto sec = digits(hms.substr(6, 2));
  if (!h || !m || !sec || hms[0] == ' ' || hms[3] == ' ' || hms[6] == ' ') return std::nullopt;
  if (*day < 1 || *day > 31 || *h > 23 || *m > 59 || *sec > 60) return std::nullopt;
  return days_from_civil(*year, month, *day) * 86400 + *h * 3600 + *m * 60 + *sec;
}

}  // namespace

std::optional<std::int64_t> parse_http_date(std::string_view s) {
  s = trim(s);
  // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
  if (s.size() == 29 && s[3] == ',' && s[4] == ' ' && s[7] == ' ' && s[11] == ' ' &&
      s[16] == ' ' && s.substr(25) == " GMT" && day_name(s.substr(0, 3), false) && s[5] != ' ') {
    return to_unix(digits(s.substr(12, 4)), month_of(s.substr(8, 3)), digits(s.substr(5, 2)),
                   s.substr(17, 8));
  }
  // asctime: "Sun Nov  6 08:49:37 1994"
  if (s.size() == 24 && s[3] == ' ' && s[7] == ' ' && s[10] == ' ' && s[19] == ' ' &&
      day_name(s.substr(0, 3), false)) {
    return to_unix(digits(s.substr(20, 4)), month_of(s.substr(4, 3)), digits(s.substr(8, 2)),
                   s.substr(11, 8));
  }
  // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"; a two-digit year below 70 is 20xx.
  std::size_t comma = s.find(',');
  if (comma == std::string_view::npos || !day_name(s.substr(0, comma), true)) return std::nullopt;
  std::string_view rest = s.substr(comma + 1);
  if (rest.size() != 23 || rest[0] != ' ' || rest[3] != '-' || rest[7] != '-' || rest[10] != ' ' ||
      rest.substr(19) != " GMT" || rest[1] == ' ' || rest[8] == ' ') {
    return std::nullopt;
  }
  auto yy = digits(rest.substr(8, 2));
  if (yy) yy = *yy < 70 ? 2000 + *yy : 1900 + *yy;
  return to_unix(yy, month_of(rest.substr(4, 3)), digits(rest.substr(1, 2)), rest.substr(11, 8));
}

Status Conditions::validate() const {
  if (if_match && !etag_list_valid(*if_match)) {
    return Status::invalid("bad_if_match: not \"*\" or a list of quoted entity-tags");
  }
  if (if_none_match && !etag_list_valid(*if_none_match)) {
    return Status::invalid("bad_if_none_match: not \"*\" or a list of quoted entity-tags");
  }
  return Status::ok();
}

bool Conditions::constrain_write() const {
  return if_match || if_none_match || (if_unmodified_since && parse_http_date(*if_unmodified_since));
}

PreconditionResult evaluate_preconditions(const Conditions& c, bool read, const Validators& v) {
  using P = Precondition;
  if (c.if_match) {
    if (!v.exists) return {P::failed, "if_match: the key has no current value"};
    if (!etag_list_matches(*c.if_match, v.etag, /*strong=*/true)) {
      return {P::failed, "if_match: the current ETag is not listed"};
    }
  } else if (c.if_unmodified_since && v.exists) {
    auto since = parse_http_date(*c.if_unmodified_since);
    if (since && v.last_modified_s > *since) {
      return {P::failed, "if_unmodified_since: modified since that date"};
    }
  }
  if (c.if_none_match) {
    if (v.exists && etag_list_matches(*c.if_none_match, v.etag, /*strong=*/false)) {
      if (read) return {P::not_modified, ""};
      return {P::failed, trim(*c.if_none_match) == "*" ? "if_none_match: the key exists"
                                                       : "if_none_match: the current ETag is listed"};
    }
  } else if (read && c.if_modified_since && v.exists) {
    auto since = parse_http_date(*c.if_modified_since);
    if (since && v.last_modified_s <= *since) return {P::not_modified, ""};
  }
  return {};
}

bool if_range_matches(const std::optional<std::string>& if_range, const Validators& v) {
  if (!if_range) return true;
  if (!v.exists) return false;
  std::string_view t = trim(*if_range);
  if (t.empty()) return false;  // sent twice, or empty: no validator matches
  if (t[0] == '"' || t.substr(0, 2) == "W/") {
    std::string_view tag;
    bool weak = false;
    if (next_etag(t, &tag, &weak) != 1 || !t.empty()) return false;  // one tag, nothing after
    return !weak && tag == v.etag;
  }
  auto date = parse_http_date(t);
  return date && *date == v.last_modified_s;
}

std::string http_date(std::int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::size_t n = std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return std::string(buf, n);
}

}  // namespace node
