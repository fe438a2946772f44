#include "node/request.h"

#include <charconv>
#include <ctime>

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

RangeResult parse_range(std::string_view header, std::uint64_t body_bytes) {
  RangeResult whole;
  header = trim(header);
  if (header.substr(0, 6) != "bytes=") return whole;
  std::string_view spec = trim(header.substr(6));
  if (spec.find(',') != std::string_view::npos) return whole;  // multi-range: send it all
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

bool etag_matches(std::string_view header, std::string_view etag) {
  while (!header.empty()) {
    std::size_t comma = header.find(',');
    std::string_view tag = trim(header.substr(0, comma));
    header = comma == std::string_view::npos ? std::string_view() : header.substr(comma + 1);
    if (tag == "*") return true;
    if (tag.substr(0, 2) == "W/") tag.remove_prefix(2);
    if (tag == etag) return true;
  }
  return false;
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
