// libFuzzer target for the pure request helpers in node/request.h: percent_decode,
// validate_key, parse_target, parse_range, parse_ranges, the entity-tag
// lists and preconditions of conditional requests, parse_u64, http_date and
// parse_http_date.
//
// Input: fields separated by '\n' (missing fields are empty):
//   0 request target      → parse_target, and percent_decode + validate_key on its path
//   1 Range header        → parse_range(header, size)
//   2 body size (decimal) → the size for parse_range; not a number: the field's length
//   1 also                → parse_ranges(header, size)
//   3 If-None-Match       → etag_list_matches(field 3, field 4); as If-Match,
//                           If-None-Match and If-Range: evaluate_preconditions
//   4 ETag
//   5 anything            → parse_u64, percent_decode, validate_key, parse_http_date
// The whole input also goes through every helper. Each call is checked against
// invariants that must hold for any input; a broken one traps (CHECK stays on in every
// build type).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "node/limits.h"
#include "node/request.h"
#include "tools/fuzzers/fuzz_support.h"


namespace {

using node::RangeKind;

// Reference UTF-8 check written from RFC 3629's table of well-formed sequences, kept
// independent of the one in request.cc so the two can be compared.
bool ref_utf8(std::string_view s) {
  std::size_t i = 0;
  auto in = [&](std::size_t k, unsigned lo, unsigned hi) {
    if (k >= s.size()) return false;
    auto c = static_cast<unsigned char>(s[k]);
    return c >= lo && c <= hi;
  };
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c <= 0x7F) {
      i += 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      if (!in(i + 1, 0x80, 0xBF)) return false;
      i += 2;
    } else if (c == 0xE0) {
      if (!in(i + 1, 0xA0, 0xBF) || !in(i + 2, 0x80, 0xBF)) return false;
      i += 3;
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
      if (!in(i + 1, 0x80, 0xBF) || !in(i + 2, 0x80, 0xBF)) return false;
      i += 3;
    } else if (c == 0xED) {
      if (!in(i + 1, 0x80, 0x9F) || !in(i + 2, 0x80, 0xBF)) return false;
      i += 3;
    } else if (c == 0xF0) {
      if (!in(i + 1, 0x90, 0xBF) || !in(i + 2, 0x80, 0xBF) || !in(i + 3, 0x80, 0xBF)) return false;
      i += 4;
    } else if (c >= 0xF1 && c <= 0xF3) {
      if (!in(i + 1, 0x80, 0xBF) || !in(i + 2, 0x80, 0xBF) || !in(i + 3, 0x80, 0xBF)) return false;
      i += 4;
    } else if (c == 0xF4) {
      if (!in(i + 1, 0x80, 0x8F) || !in(i + 2, 0x80, 0xBF) || !in(i + 3, 0x80, 0xBF)) return false;
      i += 4;
    } else {
      return false;
    }
  }
  return true;
}

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool all_digits(std::string_view s) {
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "%XX" for every byte: always decodes back to the input.
std::string encode_all(std::string_view s) {
  static const char digits[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(3 * s.size());
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    out += '%';
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

void check_u64(std::string_view s) {
  auto v = node::parse_u64(s);
  // Reference: digits only, and the value (leading zeros dropped) fits in 64 bits.
  bool expect = !s.empty() && all_digits(s);
  std::string_view sig = s;
  while (sig.size() > 1 && sig.front() == '0') sig.remove_prefix(1);
  if (expect) {
    static const std::string_view max = "18446744073709551615";
    expect = sig.size() < max.size() || (sig.size() == max.size() && sig <= max);
  }
  CHECK(v.has_value() == expect);
  if (v) CHECK(std::to_string(*v) == sig);
}

void check_decode(std::string_view in) {
  auto r = node::percent_decode(in);
  std::size_t pct = 0;
  bool well_formed = true;
  for (std::size_t i = 0; i < in.size(); i++) {
    if (in[i] != '%') continue;
    pct++;
    if (i + 2 >= in.size() || !is_hex(in[i + 1]) || !is_hex(in[i + 2])) {
      well_formed = false;
      break;
    }
    i += 2;
  }
  CHECK(r.is_ok() == well_formed);
  if (r.is_ok()) {
    CHECK(r.value().size() == in.size() - 2 * pct);
    if (pct == 0) CHECK(r.value() == in);
  }
  // Fully encoded bytes always decode back, whatever they are.
  std::string_view head = in.substr(0, 512);
  auto back = node::percent_decode(encode_all(head));
  CHECK(back.is_ok() && back.value() == head);
}

void check_key(std::string_view key) {
  Status s = node::validate_key(key);
  bool expect = !key.empty() && key.size() <= node::limits::key_bytes_max &&
                key.find('\0') == std::string_view::npos && key.substr(0, 2) != "_/" &&
                ref_utf8(key);
  CHECK(s.is_ok() == expect);
  if (s.is_ok()) {
    CHECK(!key.empty() && key.size() <= 1024);
  } else {
    CHECK(s.code() == Code::invalid_argument);
    CHECK(!s.message().empty());
  }
}

void check_decoded_key(std::string_view raw) {
  check_decode(raw);
  auto d = node::percent_decode(raw);
  if (d.is_ok()) check_key(d.value());
}

void check_target(std::string_view url) {
  auto r = node::parse_target(url);
  if (url.empty() || url[0] != '/') {
    CHECK(!r.is_ok());
    return;
  }
  std::size_t q = url.find('?');
  std::string_view raw_path = url.substr(1, q == std::string_view::npos ? url.npos : q - 1);
  auto path = node::percent_decode(raw_path);
  if (!path.is_ok()) {
    CHECK(!r.is_ok());
    return;
  }
  if (!r.is_ok()) {
    CHECK(q != std::string_view::npos);  // only a bad query can fail it now
    CHECK(r.status().code() == Code::invalid_argument);
    return;
  }
  const node::Target& t = r.value();
  CHECK(t.path == path.value());
  if (q == std::string_view::npos) {
    CHECK(t.query.empty());
    return;
  }
  // Every non-empty '&' part is one query entry, in order.
  std::string_view rest = url.substr(q + 1);
  std::size_t parts = 0;
  while (true) {
    std::size_t amp = rest.find('&');
    std::string_view part = rest.substr(0, amp);
    if (!part.empty()) {
      CHECK(parts < t.query.size());
      std::size_t eq = part.find('=');
      auto k = node::percent_decode(part.substr(0, eq));
      CHECK(k.is_ok() && k.value() == t.query[parts].first);
      if (eq == std::string_view::npos) CHECK(t.query[parts].second.empty());
      parts++;
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  CHECK(parts == t.query.size());
  for (const auto& [k, v] : t.query) {
    const std::string* got = t.get(k);
    CHECK(got != nullptr && t.has(k));
    // get() returns the first entry with that name.
    for (const auto& [k2, v2] : t.query) {
      if (k2 == k) {
        CHECK(got == &v2);
        break;
      }
    }
  }
}

void check_range(std::string_view header, std::uint64_t size) {
  node::RangeResult r = node::parse_range(header, size);
  std::string_view h = trim(header);
  bool bytes_unit = h.substr(0, 6) == "bytes=";
  std::string_view spec = bytes_unit ? trim(h.substr(6)) : std::string_view();
  if (!bytes_unit || spec.find(',') != std::string_view::npos ||
      spec.find('-') == std::string_view::npos) {
    CHECK(r.kind == RangeKind::whole);
    return;
  }
  if (r.kind == RangeKind::partial) {
    // The promise the handlers rely on: the range lies within the body.
    CHECK(size > 0);
    CHECK(r.range.first <= r.range.last);
    CHECK(r.range.last < size);
    CHECK(r.range.length() >= 1 && r.range.length() <= size);
  }
  std::size_t dash = spec.find('-');
  std::string_view a = trim(spec.substr(0, dash));
  std::string_view b = trim(spec.substr(dash + 1));
  auto an = node::parse_u64(a);
  auto bn = node::parse_u64(b);
  if (a.empty()) {  // "-N": the last N bytes
    if (!bn) {
      CHECK(r.kind == RangeKind::whole);
    } else if (*bn == 0 || size == 0) {
      CHECK(r.kind == RangeKind::unsatisfiable);
    } else {
      CHECK(r.kind == RangeKind::partial);
      CHECK(r.range.last == size - 1);
      CHECK(r.range.length() == (*bn < size ? *bn : size));
    }
    return;
  }
  if (!an || (!b.empty() && (!bn || *bn < *an))) {
    CHECK(r.kind == RangeKind::whole);
    return;
  }
  if (*an >= size) {
    CHECK(r.kind == RangeKind::unsatisfiable);
    return;
  }
  CHECK(r.kind == RangeKind::partial);
  CHECK(r.range.first == *an);
  std::uint64_t want_last = size - 1;
  if (bn && *bn < want_last) want_last = *bn;
  CHECK(r.range.last == want_last);
}

void check_etag(std::string_view inm, std::string_view etag) {
  bool m = node::etag_list_matches(inm, etag, /*strong=*/false);
  if (trim(inm) == "*") CHECK(m);
  if (inm.empty()) CHECK(!m);
  // One well-formed strong tag matches itself in any position of a list, weakly when
  // written weak and strongly only when not.
  bool tag = etag.size() >= 2 && etag.front() == '"' && etag.back() == '"' &&
             std::all_of(etag.begin() + 1, etag.end() - 1, [](char ch) {
               auto u = static_cast<unsigned char>(ch);
               return u >= 0x21 && u != '"' && u != 0x7f;
             });
  if (tag) {
    std::string e(etag);
    CHECK(node::etag_list_valid(e));
    CHECK(node::etag_list_matches(e, etag, true));
    CHECK(node::etag_list_matches("W/" + e, etag, false));
    CHECK(!node::etag_list_matches("W/" + e, etag, true));
    CHECK(node::etag_list_matches(" \"other\" , " + e + " ", etag, true));
  }
}

// The promises serve_blob relies on: 1..ranges_max ranges within the body, disjoint.
void check_ranges(std::string_view header, std::uint64_t size) {
  node::RangeSet r = node::parse_ranges(header, size);
  if (r.kind != RangeKind::partial) {
    CHECK(r.ranges.empty());
    return;
  }
  CHECK(!r.ranges.empty() && r.ranges.size() <= node::limits::ranges_max);
  std::vector<node::ByteRange> sorted = r.ranges;
  std::sort(sorted.begin(), sorted.end(),
            [](const node::ByteRange& a, const node::ByteRange& b) { return a.first < b.first; });
  for (std::size_t i = 0; i < sorted.size(); i++) {
    CHECK(sorted[i].first <= sorted[i].last);
    CHECK(sorted[i].last < size);
    if (i > 0) CHECK(sorted[i - 1].last + 1 < sorted[i].first);  // merged when touching
  }
  // A single spec agrees with the one-range parser.
  if (header.find(',') == std::string_view::npos) {
    node::RangeResult one = node::parse_range(header, size);
    CHECK(one.kind == RangeKind::partial);
    CHECK(r.ranges.size() == 1 && r.ranges[0].first == one.range.first && r.ranges[0].last == one.range.last);
  }
}

// Entity-tag lists and the precondition order, for any header text.
void check_conditions(std::string_view header, std::string_view etag_in) {
  std::string etag = "\"" + std::string(etag_in.substr(0, 64)) + "\"";
  bool valid = node::etag_list_valid(header);
  bool strong = node::etag_list_matches(header, etag, true);
  bool weak = node::etag_list_matches(header, etag, false);
  if (strong) CHECK(weak);  // a strong match is a weak one too
  bool opaque = std::all_of(etag.begin() + 1, etag.end() - 1, [](char ch) {
    auto u = static_cast<unsigned char>(ch);
    return u >= 0x21 && u != '"' && u != 0x7f;
  });
  if (valid && opaque && trim(header) != "*") {  // "*" is a list of its own
    CHECK(node::etag_list_matches(std::string(header) + ", " + etag, etag, true));
  }
  node::Conditions c;
  c.if_match = std::string(header);
  c.if_none_match = std::string(header);
  c.if_modified_since = std::string(header);
  c.if_unmodified_since = std::string(header);
  c.if_range = std::string(header);
  CHECK(c.validate().is_ok() == valid);
  for (bool exists : {false, true}) {
    node::Validators v{exists, etag, 784111777};
    for (bool read : {false, true}) {
      node::PreconditionResult p = node::evaluate_preconditions(c, read, v);
      if (!read) CHECK(p.outcome != node::Precondition::not_modified);
      if (!exists) CHECK(p.outcome == node::Precondition::failed);  // If-Match with no value
    }
    if (!exists) CHECK(!node::if_range_matches(c.if_range, v));
  }
}

// A date that parses prints back to the same instant.
void check_parsed_date(std::string_view s) {
  auto secs = node::parse_http_date(s);
  if (!secs || *secs < 0 || *secs > 253402300799) return;
  CHECK(node::parse_http_date(node::http_date(*secs)) == secs);
}

void check_date(std::int64_t secs) {
  std::string d = node::http_date(secs);
  // Within years 1970..9999 the IMF-fixdate form is fixed width.
  if (secs >= 0 && secs <= 253402300799) {
    CHECK(d.size() == 29);
    CHECK(d.substr(25) == " GMT");
    CHECK(d[3] == ',' && d[4] == ' ');
  }
  if (secs == 784111777) CHECK(d == "Sun, 06 Nov 1994 08:49:37 GMT");
}

std::vector<std::string_view> split(std::string_view in, std::size_t n) {
  std::vector<std::string_view> out(n);
  for (std::size_t i = 0; i < n; i++) {
    std::size_t nl = in.find('\n');
    out[i] = in.substr(0, nl);
    if (nl == std::string_view::npos) {
      in = std::string_view();
    } else {
      in.remove_prefix(nl + 1);
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);

  // The whole input, through every helper.
  check_u64(in);
  check_decoded_key(in);
  check_key(in);
  check_target(in);
  check_range(in, size);
  check_etag(in, in);

  auto f = split(in, 6);
  check_target(f[0]);
  std::size_t q = f[0].find('?');
  if (!f[0].empty() && f[0][0] == '/') {
    check_decoded_key(f[0].substr(1, q == std::string_view::npos ? q : q - 1));
  }

  auto parsed_size = node::parse_u64(f[2]);
  check_u64(f[2]);
  std::uint64_t body = parsed_size ? *parsed_size : f[2].size();
  check_range(f[1], body);
  check_range(f[1], 0);
  check_range(f[1], 1);
  check_range(f[1], std::numeric_limits<std::uint64_t>::max());
  check_ranges(f[1], body);
  check_ranges(f[1], 0);
  check_ranges(f[1], std::numeric_limits<std::uint64_t>::max());
  check_ranges(in, size);

  check_etag(f[3], f[4]);
  check_etag(f[4], f[4]);
  check_conditions(f[3], f[4]);
  check_conditions(in, f[4]);

  check_u64(f[5]);
  check_decoded_key(f[5]);
  check_parsed_date(f[5]);
  check_parsed_date(in);

  std::uint64_t bits = 0;
  for (std::size_t i = 0; i < 8 && i < size; i++) bits = bits << 8 | data[i];
  check_date(static_cast<std::int64_t>(bits));
  check_date(static_cast<std::int64_t>(bits & 0x3FFFFFFFF));  // about years 1970..2514
  check_date(784111777);
  CHECK(node::parse_http_date(node::http_date(784111777)) == 784111777);
  return 0;
}
