// The blob file format: the value's bytes first (so a GET reads from offset 0), then a
// footer that makes the file self-describing for `ringstore rebuild`. Files are written
// in format 2 ("RSB2"); format 1 ("RSB1", no attributes, no expiry) is still read:
//
//   RSB2: body[body_size] key[key_len] content_type[ct_len] attrs[attrs_len] fixed[76]
//   fixed = magic u32 | flags u32 | body_size u64 | hlc u64 | node[16] | md5[16]
//           | expires_ms u64 | key_len u16 | ct_len u16 | attrs_len u16 | zero u16
//           | check u32                                       (little-endian)
//   check = first 4 bytes of MD5(key | content_type | attrs | fixed[0..72])
//
//   RSB1: body[body_size] key[key_len] content_type[ct_len] fixed[64]
//   fixed = magic u32 | flags u32 | body_size u64 | hlc u64 | node[16] | md5[16]
//           | key_len u16 | ct_len u16 | check u32
//   check = first 4 bytes of MD5(key | content_type | fixed[0..60])
//
// docs/FORMATS.md has the same tables. A file is named
// DISK/blobs/xx/yy/<hex sha1(key)>.<version>.
#pragma once

#include <array>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <unordered_set>

#include "blobstore/version.h"
#include "common/status.h"

namespace blobstore {

using Md5Digest = std::array<std::uint8_t, 16>;

inline constexpr std::uint32_t footer_magic = 0x31425352;  // "RSB1"
inline constexpr std::size_t footer_fixed_bytes = 64;      // of an RSB1 footer
inline constexpr std::uint32_t footer2_magic = 0x32425352;  // "RSB2"
inline constexpr std::size_t footer2_fixed_bytes = 76;
inline constexpr std::uint32_t flag_tombstone = 1;
// The footer format a file is written in, and the one an index row's file has.
inline constexpr std::uint8_t footer_format_v1 = 1;
inline constexpr std::uint8_t footer_format_v2 = 2;

// Everything the index holds about one stored version of a key.
struct BlobMeta {
  std::string key;
  Version version;
  bool tombstone = false;
  std::uint64_t size = 0;
  Md5Digest md5{};
  std::string content_type;
  // A tombstone written by UNLINK (a virtual delete): reads as deleted, and is listed
  // by `?unlinked` until a DELETE replaces it. Index only (a tombstone has no file).
  bool unlinked = false;
  // Stored response headers (user metadata, Content-Encoding, ...): zero or more lines
  // "name: value\r\n", names lower-case, sorted by name (node/attrs.h makes them). They
  // are sent back verbatim with the value; nothing parses them on the read path.
  std::string attrs;
  // Absolute expiry (Unix ms, chosen by the coordinator); 0: the value never expires.
  std::uint64_t expires_ms = 0;
  // The file's footer format: 1 for files written before attributes existed.
  std::uint8_t format = footer_format_v2;
  int disk = -1;  // index into the store's disk list
  // A hint: this node keeps the copy only until it reaches `hint_for`, a replica that
  // was down when the write happened. Kept in the index only (not in the footer).
  bool is_hint = false;
  NodeId hint_for{};
};

// Whether a value with this expiry is gone at `now_ms` (a tombstone is gone anyway).
inline bool expired_at(std::uint64_t expires_ms, std::uint64_t now_ms) {
  return expires_ms != 0 && now_ms >= expires_ms;
}

// Bytes to append after the body, in meta.format: key, content type, attributes (RSB2)
// and the fixed footer. REQUIRES: a format-1 meta has no attrs and no expiry.
std::string encode_footer(const BlobMeta& meta);
// The footer's length for `meta` (so a file's length is meta.size + footer_bytes(meta)).
std::uint64_t footer_bytes(const BlobMeta& meta);

// Reads and checks the footer of an open blob file of `file_bytes` bytes, either format.
Result<BlobMeta> read_footer(int fd, std::uint64_t file_bytes);

// "blobs/xx/yy/<sha1hex>.<version>" relative to the disk root.
std::string blob_relative_path(std::string_view key, const Version& v);

std::string md5_hex(const Md5Digest& d);

// The directory part of a path ("a/b/c" -> "a/b").
std::string parent_of(const std::string& path);
// fsync() of the file or directory at `path`; syncfs() of the filesystem that holds it.
Status fsync_path(const std::string& path);
Status syncfs_path(const std::string& path);
// mkdir -p for the two levels of a blob directory `dir` (DISK/blobs/xx/yy). The parents
// of the directories it makes are added to `created` (when not null), so that the caller
// can make the new entries durable; `known` holds the directories already there.
Status make_blob_dir(const std::string& dir, std::set<std::string>* created,
                     std::unordered_set<std::string>* known);

// Writes a whole blob file (a commit log record's bytes) under its final name `path`,
// making its blob directories (`known` as for make_blob_dir); unsynced.
Status write_blob_file(const std::string& path, std::string_view bytes,
                       std::unordered_set<std::string>* known);

// Reads the first meta.size bytes of an open blob file and checks them against meta.md5.
Status verify_body(int fd, const BlobMeta& meta);

// Writes all n bytes (retrying short writes and EINTR): at the file offset when at < 0,
// else at `at` (pwrite). On failure errno is left as the call set it.
Status write_all(int fd, const char* data, std::size_t n, const std::string& what, std::int64_t at = -1);

// Streaming MD5 (the ETag): one per upload or verified read.
class Md5 {
 public:
  Md5();
  ~Md5();
  Md5(const Md5&) = delete;
  Md5& operator=(const Md5&) = delete;
  void update(const void* data, std::size_t n);
  Md5Digest finish();

 private:
  void* ctx_;  // EVP_MD_CTX
};

Md5Digest md5_of(std::string_view bytes);

}  // namespace blobstore
