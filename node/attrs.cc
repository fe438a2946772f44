#include "node/attrs.h"

#include <algorithm>

#include "node/http_status.h"
#include "node/request.h"

namespace node {

namespace {
constexpr std::string_view meta_prefix = "x-ringstore-meta-";
constexpr std::string_view attr_prefix = "attr-";  // after "x-ringstore-"

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}
}  // namespace

bool is_stored_header(std::string_view n) {
  if (n.size() > meta_prefix.size() && n.substr(0, meta_prefix.size()) == meta_prefix) return true;
  return n == "content-encoding" || n == "content-disposition" || n == "cache-control";
}

bool valid_header_text(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c <= 0x7e; });
}

Result<std::string> encode_attrs(HeaderList headers) {
  for (auto& [name, value] : headers) name = lower(name);
  // A stable sort keeps repeated names in arrival order; the last of each is kept.
  std::stable_sort(headers.begin(), headers.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string out;
  for (std::size_t i = 0; i < headers.size(); i++) {
    if (i + 1 < headers.size() && headers[i + 1].first == headers[i].first) continue;
    const auto& [name, value] = headers[i];
    if (name.empty() || !valid_header_text(name) || !valid_header_text(value) ||
        name.find_first_of(": ") != std::string::npos) {
      return Status::invalid("bad_metadata: header names and values must be printable ASCII");
    }
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
    if (out.size() > attr_limits::attrs_bytes_max) {
      return limit_error(Code::invalid_argument, "metadata_too_large", attr_limits::attrs_bytes_max);
    }
  }
  return out;
}

std::string replica_meta_headers(const blobstore::BlobMeta& m) {
  std::string h;
  if (m.tombstone) h += m.unlinked ? "X-Ringstore-Tombstone: unlinked\r\n" : "X-Ringstore-Tombstone: 1\r\n";
  if (m.expires_ms != 0) h += "X-Ringstore-Expires-Ms: " + std::to_string(m.expires_ms) + "\r\n";
  for_each_attr(m.attrs, [&](std::string_view name, std::string_view value) {
    h += "X-Ringstore-Attr-";
    h += name;
    h += ": ";
    h += value;
    h += "\r\n";
  });
  return h;
}

bool replica_meta_from(const HeaderList& ringstore_headers, blobstore::BlobMeta* m) {
  HeaderList attrs;
  m->tombstone = false;
  m->unlinked = false;
  m->expires_ms = 0;
  for (const auto& [name, value] : ringstore_headers) {
    if (name == "tombstone") {
      m->tombstone = value == "1" || value == "unlinked";
      m->unlinked = value == "unlinked";
    } else if (name == "expires-ms") {
      auto ms = parse_u64(value);
      if (!ms) return false;
      m->expires_ms = *ms;
    } else if (name.size() > attr_prefix.size() && name.compare(0, attr_prefix.size(), attr_prefix) == 0) {
      attrs.emplace_back(name.substr(attr_prefix.size()), value);
    }
  }
  auto block = encode_attrs(std::move(attrs));
  if (!block.is_ok()) return false;
  m->attrs = std::move(block.value());
  return true;
}

std::string client_meta_headers(const blobstore::BlobMeta& m) {
  if (m.expires_ms == 0) return m.attrs;
  return m.attrs + "X-Ringstore-Expires: " +
         http_date(static_cast<std::int64_t>(m.expires_ms / 1000)) + "\r\nX-Ringstore-Expires-Ms: " +
         std::to_string(m.expires_ms) + "\r\n";
}

Result<std::uint64_t> expiry_from_ttl(const std::string* ttl, std::uint64_t now_ms) {
  if (ttl == nullptr) return std::uint64_t{0};
  auto s = parse_u64(*ttl);
  if (!s || *s == 0 || *s > attr_limits::ttl_seconds_max) {
    return Status::invalid("bad_ttl: X-Ringstore-TTL must be 1.." +
                           std::to_string(attr_limits::ttl_seconds_max) + " seconds");
  }
  return now_ms + *s * 1000;
}

}  // namespace node
