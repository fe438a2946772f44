#include "blobstore/blob_file.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "blobstore/limits.h"
#include "common/digest.h"
#include "ring/hash.h"

namespace blobstore {

namespace {

void put_u16(std::string& s, std::uint16_t v) {
  for (int i = 0; i < 2; i++) s.push_back(static_cast<char>(v >> (8 * i)));
}
void put_u32(std::string& s, std::uint32_t v) {
  for (int i = 0; i < 4; i++) s.push_back(static_cast<char>(v >> (8 * i)));
}
void put_u64(std::string& s, std::uint64_t v) {
  for (int i = 0; i < 8; i++) s.push_back(static_cast<char>(v >> (8 * i)));
}
std::uint64_t get_le(const std::uint8_t* p, int n) {
  std::uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

std::uint32_t footer_check(std::string_view key, std::string_view ct, std::string_view attrs,
                           const std::uint8_t* fixed, std::size_t fixed_bytes) {
  Md5 m;
  m.update(key.data(), key.size());
  m.update(ct.data(), ct.size());
  m.update(attrs.data(), attrs.size());
  m.update(fixed, fixed_bytes - 4);
  Md5Digest d = m.finish();
  return static_cast<std::uint32_t>(get_le(d.data(), 4));
}

// Reads the strings before a fixed footer (key, content type, attributes) and checks the
// footer's check field against them.
Status read_footer_strings(int fd, const std::uint8_t* fixed, std::size_t fixed_bytes,
                           std::size_t attrs_len, BlobMeta* m, std::size_t key_len,
                           std::size_t ct_len) {
  std::string strings(key_len + ct_len + attrs_len, '\0');
  ssize_t n = pread(fd, strings.data(), strings.size(), static_cast<off_t>(m->size));
  if (n < 0) return Status::from_errno("read footer", errno);
  if (static_cast<std::size_t>(n) != strings.size()) return Status::corruption("short footer");
  m->key = strings.substr(0, key_len);
  m->content_type = strings.substr(key_len, ct_len);
  m->attrs = strings.substr(key_len + ct_len);
  if (footer_check(m->key, m->content_type, m->attrs, fixed, fixed_bytes) !=
      get_le(fixed + fixed_bytes - 4, 4)) {
    return Status::corruption("footer check mismatch");
  }
  return Status::ok();
}

// The fields both formats share, at the same offsets: flags, body size, version, MD5.
Status read_common(const std::uint8_t* fixed, BlobMeta* m) {
  std::uint32_t flags = static_cast<std::uint32_t>(get_le(fixed + 4, 4));
  if ((flags & ~flag_tombstone) != 0) return Status::corruption("unknown footer flags");
  m->tombstone = (flags & flag_tombstone) != 0;
  m->size = get_le(fixed + 8, 8);
  m->version.hlc = get_le(fixed + 16, 8);
  std::memcpy(m->version.node.data(), fixed + 24, 16);
  std::memcpy(m->md5.data(), fixed + 40, 16);
  return Status::ok();
}

// An RSB2 footer ending at file_bytes, or not_found when the tail holds none (the caller
// then tries RSB1; a format-1 file's bytes there are its body or strings).
Result<BlobMeta> read_footer_v2(int fd, std::uint64_t file_bytes) {
  if (file_bytes < footer2_fixed_bytes) return Status::not_found("no RSB2 footer");
  std::uint8_t fixed[footer2_fixed_bytes];
  ssize_t n = pread(fd, fixed, sizeof fixed, static_cast<off_t>(file_bytes - footer2_fixed_bytes));
  if (n < 0) return Status::from_errno("read footer", errno);
  if (static_cast<std::size_t>(n) != sizeof fixed) return Status::corruption("short footer read");
  if (get_le(fixed, 4) != footer2_magic) return Status::not_found("no RSB2 footer");
  BlobMeta m;
  m.format = footer_format_v2;
  if (Status s = read_common(fixed, &m); !s.is_ok()) return s;
  m.expires_ms = get_le(fixed + 56, 8);
  std::size_t key_len = get_le(fixed + 64, 2);
  std::size_t ct_len = get_le(fixed + 66, 2);
  std::size_t attrs_len = get_le(fixed + 68, 2);
  if (get_le(fixed + 70, 2) != 0) return Status::corruption("reserved footer field set");
  if (key_len == 0 || key_len > limits::key_bytes_max) return Status::corruption("bad key length");
  if (ct_len > limits::content_type_bytes_max) return Status::corruption("bad content type length");
  if (attrs_len > limits::attrs_bytes_max) return Status::corruption("bad attributes length");
  std::uint64_t tail = key_len + ct_len + attrs_len + footer2_fixed_bytes;
  if (m.size > file_bytes || file_bytes - m.size != tail) return Status::corruption("bad sizes");
  if (Status s = read_footer_strings(fd, fixed, footer2_fixed_bytes, attrs_len, &m, key_len, ct_len);
      !s.is_ok()) {
    return s;
  }
  return m;
}

}  // namespace

std::string hex(const std::uint8_t* bytes, std::size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (std::size_t i = 0; i < n; i++) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 15];
  }
  return out;
}

bool unhex(std::string_view text, std::uint8_t* out, std::size_t n) {
  if (text.size() != 2 * n) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < n; i++) {
    int hi = nibble(text[2 * i]);
    int lo = nibble(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return true;
}

std::string Version::to_string() const {
  std::uint8_t be[8];
  for (int i = 0; i < 8; i++) be[i] = static_cast<std::uint8_t>(hlc >> (56 - 8 * i));
  return hex(be, 8) + "-" + hex(node.data(), node.size());
}

std::optional<Version> Version::parse(std::string_view text) {
  if (text.size() != version_text_bytes || text[16] != '-') return std::nullopt;
  std::uint8_t be[8];
  Version v;
  if (!unhex(text.substr(0, 16), be, 8)) return std::nullopt;
  if (!unhex(text.substr(17), v.node.data(), v.node.size())) return std::nullopt;
  for (int i = 0; i < 8; i++) v.hlc = (v.hlc << 8) | be[i];
  return v;
}

Md5::Md5() : ctx_(EVP_MD_CTX_new()) {
  ASSERT(ctx_ != nullptr);
  int ok = EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), common::md5_digest(), nullptr);
  ASSERT(ok == 1);
}
Md5::~Md5() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }
void Md5::update(const void* data, std::size_t n) {
  int ok = EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, n);
  ASSERT(ok == 1);
}
Md5Digest Md5::finish() {
  Md5Digest d{};
  unsigned int len = 0;
  int ok = EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), d.data(), &len);
  ASSERT(ok == 1);
  ASSERT(len == d.size());
  return d;
}

Md5Digest md5_of(std::string_view bytes) {
  Md5Digest d{};
  unsigned int len = 0;
  int ok = EVP_Digest(bytes.data(), bytes.size(), d.data(), &len, common::md5_digest(), nullptr);
  ASSERT(ok == 1);
  return d;
}

std::string md5_hex(const Md5Digest& d) { return hex(d.data(), d.size()); }

Status write_all(int fd, const char* data, std::size_t n, const std::string& what, std::int64_t at) {
  while (n > 0) {
    ssize_t w = at < 0 ? ::write(fd, data, n) : ::pwrite(fd, data, n, static_cast<off_t>(at));
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::from_errno("write " + what, errno);
    }
    if (w == 0) {
      errno = EIO;
      return Status::from_errno("write " + what, EIO);
    }
    data += w;
    n -= static_cast<std::size_t>(w);
    if (at >= 0) at += w;
  }
  return Status::ok();
}

Status verify_body(int fd, const BlobMeta& meta) {
  constexpr std::size_t chunk_bytes = 256 * 1024;
  std::string buf(chunk_bytes, '\0');
  Md5 md5;
  std::uint64_t done = 0;
  while (done < meta.size) {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_bytes, meta.size - done));
    ssize_t n = pread(fd, buf.data(), want, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::from_errno("read blob", errno);
    if (n == 0) return Status::corruption("blob file truncated");
    md5.update(buf.data(), static_cast<std::size_t>(n));
    done += static_cast<std::uint64_t>(n);
  }
  if (md5.finish() != meta.md5) return Status::corruption("checksum mismatch");
  return Status::ok();
}

std::uint64_t footer_bytes(const BlobMeta& meta) {
  std::uint64_t strings = meta.key.size() + meta.content_type.size();
  if (meta.format == footer_format_v1) return strings + footer_fixed_bytes;
  return strings + meta.attrs.size() + footer2_fixed_bytes;
}

std::string encode_footer(const BlobMeta& meta) {
  ASSERT(meta.key.size() <= limits::key_bytes_max);
  ASSERT(meta.content_type.size() <= limits::content_type_bytes_max);
  ASSERT(meta.attrs.size() <= limits::attrs_bytes_max);
  ASSERT(meta.format == footer_format_v1 || meta.format == footer_format_v2);
  const bool v1 = meta.format == footer_format_v1;
  ASSERT(!v1 || (meta.attrs.empty() && meta.expires_ms == 0));
  std::string out;
  out.reserve(footer_bytes(meta));
  out += meta.key;
  out += meta.content_type;
  if (!v1) out += meta.attrs;
  std::string fixed;
  put_u32(fixed, v1 ? footer_magic : footer2_magic);
  put_u32(fixed, meta.tombstone ? flag_tombstone : 0);
  put_u64(fixed, meta.size);
  put_u64(fixed, meta.version.hlc);
  fixed.append(reinterpret_cast<const char*>(meta.version.node.data()), meta.version.node.size());
  fixed.append(reinterpret_cast<const char*>(meta.md5.data()), meta.md5.size());
  if (!v1) put_u64(fixed, meta.expires_ms);
  put_u16(fixed, static_cast<std::uint16_t>(meta.key.size()));
  put_u16(fixed, static_cast<std::uint16_t>(meta.content_type.size()));
  if (!v1) {
    put_u16(fixed, static_cast<std::uint16_t>(meta.attrs.size()));
    put_u16(fixed, 0);
  }
  const std::size_t fixed_bytes = v1 ? footer_fixed_bytes : footer2_fixed_bytes;
  ASSERT(fixed.size() == fixed_bytes - 4);
  put_u32(fixed, footer_check(meta.key, meta.content_type, v1 ? std::string_view() : meta.attrs,
                              reinterpret_cast<const std::uint8_t*>(fixed.data()), fixed_bytes));
  out += fixed;
  return out;
}

namespace {
Result<BlobMeta> read_footer_v1(int fd, std::uint64_t file_bytes) {
  if (file_bytes < footer_fixed_bytes) return Status::corruption("blob file shorter than footer");
  std::uint8_t fixed[footer_fixed_bytes];
  ssize_t n = pread(fd, fixed, sizeof fixed, static_cast<off_t>(file_bytes - footer_fixed_bytes));
  if (n < 0) return Status::from_errno("read footer", errno);
  if (static_cast<std::size_t>(n) != sizeof fixed) return Status::corruption("short footer read");
  if (get_le(fixed, 4) != footer_magic) return Status::corruption("bad footer magic");
  BlobMeta m;
  m.format = footer_format_v1;
  if (Status s = read_common(fixed, &m); !s.is_ok()) return s;
  std::size_t key_len = get_le(fixed + 56, 2);
  std::size_t ct_len = get_le(fixed + 58, 2);
  if (key_len == 0 || key_len > limits::key_bytes_max) return Status::corruption("bad key length");
  if (ct_len > limits::content_type_bytes_max) return Status::corruption("bad content type length");
  std::uint64_t tail = key_len + ct_len + footer_fixed_bytes;
  if (m.size > file_bytes || file_bytes - m.size != tail) return Status::corruption("bad sizes");
  if (Status s = read_footer_strings(fd, fixed, footer_fixed_bytes, 0, &m, key_len, ct_len);
      !s.is_ok()) {
    return s;
  }
  return m;
}
}  // namespace

// RSB2 first. A format-1 file whose tail happens to hold "RSB2" 76 bytes from its end
// fails the RSB2 checks (sizes, check field) and is then read as RSB1.
Result<BlobMeta> read_footer(int fd, std::uint64_t file_bytes) {
  auto v2 = read_footer_v2(fd, file_bytes);
  if (v2.is_ok()) return v2;
  auto v1 = read_footer_v1(fd, file_bytes);
  if (v1.is_ok() || v2.status().code() == Code::not_found) return v1;
  return v2;
}

std::string blob_relative_path(std::string_view key, const Version& v) {
  ring::Sha1Digest d = ring::sha1(key);
  std::string h = hex(d.data(), d.size());
  return "blobs/" + h.substr(0, 2) + "/" + h.substr(2, 2) + "/" + h + "." + v.to_string();
}

std::string parent_of(const std::string& path) { return path.substr(0, path.rfind('/')); }

namespace {

// Opens `path` and calls `sync` (fsync or syncfs) on it.
Status sync_open(const std::string& path, int (*sync)(int), const char* what) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::from_errno("open " + path, errno);
  int rc = sync(fd);
  int err = errno;
  close(fd);
  if (rc != 0) return Status::from_errno(std::string(what) + " " + path, err);
  return Status::ok();
}

}  // namespace

Status fsync_path(const std::string& path) { return sync_open(path, fsync, "fsync"); }
Status syncfs_path(const std::string& path) { return sync_open(path, syncfs, "syncfs"); }

Status write_blob_file(const std::string& path, std::string_view bytes,
                       std::unordered_set<std::string>* known) {
  if (Status s = make_blob_dir(parent_of(path), nullptr, known); !s.is_ok()) return s;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::from_errno("open " + path, errno);
  Status s = write_all(fd, bytes.data(), bytes.size(), path, 0);
  close(fd);
  return s;
}

Status make_blob_dir(const std::string& dir, std::set<std::string>* created,
                     std::unordered_set<std::string>* known) {
  if (known->count(dir)) return Status::ok();
  std::string parent = parent_of(dir);
  for (const std::string& d : {parent, dir}) {
    if (known->count(d)) continue;  // the 256 first-level directories are made once
    if (mkdir(d.c_str(), 0755) == 0) {
      if (created != nullptr) created->insert(parent_of(d));
    } else if (errno != EEXIST) {
      return Status::from_errno("mkdir " + d, errno);
    }
    known->insert(d);  // at most 65,792 per disk
  }
  return Status::ok();
}

}  // namespace blobstore
