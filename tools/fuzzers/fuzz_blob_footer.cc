// libFuzzer target for blobstore::read_footer: the bytes of a blob file as `ringstore
// rebuild` and every GET find them on disk.
//
// Input: one mode byte, then the file. Mode bit 0 recomputes the footer's check field
// and bit 1 sets its body_size so the sizes agree, where the layout allows it: without
// them random bytes almost never pass the MD5-based check, and nothing past it would be
// reached.
//
// read_footer must never crash, whatever the file. When it accepts one:
//   - the lengths are in bounds and add up to the file size;
//   - encode_footer(meta) is byte for byte the file's tail (only the flag bits
//     read_footer knows are kept, so unknown ones are compared masked);
//   - the re-encoded file reads back to the same meta.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "blobstore/blob_file.h"
#include "blobstore/limits.h"
#include "tools/fuzzers/fuzz_support.h"


namespace {

using fuzz::get_le;
using fuzz::set_le;

using blobstore::footer_fixed_bytes;

int file_fd = -1;
int copy_fd = -1;

int make_memfd(const char* name) {
  int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) {
    std::fprintf(stderr, "fuzz_blob_footer: memfd_create: %s\n", std::strerror(errno));
    std::abort();
  }
  return fd;
}

void put_file(int fd, std::string_view bytes) {
  CHECK(ftruncate(fd, 0) == 0);
  std::size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = pwrite(fd, bytes.data() + off, bytes.size() - off, static_cast<off_t>(off));
    CHECK(n > 0);
    off += static_cast<std::size_t>(n);
  }
}

// Makes the footer's size and check fields agree with the rest of it, as asked.
void fix_up(std::string& file, unsigned mode) {
  if (file.size() < footer_fixed_bytes) return;
  char* fixed = file.data() + file.size() - footer_fixed_bytes;
  std::uint64_t key_len = get_le(fixed + 56, 2);
  std::uint64_t ct_len = get_le(fixed + 58, 2);
  std::uint64_t tail = key_len + ct_len + footer_fixed_bytes;
  if ((mode & 2) && tail <= file.size()) set_le(fixed + 8, file.size() - tail, 8);
  if (mode & 1) {
    std::uint64_t body = get_le(fixed + 8, 8);
    if (body > file.size() || file.size() - body < key_len + ct_len) return;
    blobstore::Md5 m;
    m.update(file.data() + body, key_len + ct_len);  // key then content type
    m.update(fixed, footer_fixed_bytes - 4);
    blobstore::Md5Digest d = m.finish();
    std::memcpy(fixed + 60, d.data(), 4);
  }
}

bool same_meta(const blobstore::BlobMeta& a, const blobstore::BlobMeta& b) {
  return a.key == b.key && a.version == b.version && a.tombstone == b.tombstone &&
         a.size == b.size && a.md5 == b.md5 && a.content_type == b.content_type &&
         a.attrs == b.attrs && a.expires_ms == b.expires_ms && a.format == b.format;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  file_fd = make_memfd("blob");
  copy_fd = make_memfd("reencoded");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  unsigned mode = data[0];
  std::string file(reinterpret_cast<const char*>(data + 1), size - 1);
  fix_up(file, mode);
  put_file(file_fd, file);

  // A wrong file size (a file that shrank or grew since it was measured) must be safe too.
  for (std::uint64_t claimed : {std::uint64_t{file.size()} + 1, std::uint64_t{file.size()} + 4096,
                                file.size() > 0 ? std::uint64_t{file.size()} - 1 : 0}) {
    auto r = blobstore::read_footer(file_fd, claimed);
    if (r.is_ok()) CHECK(claimed <= file.size());
  }

  auto r = blobstore::read_footer(file_fd, file.size());
  if (!r.is_ok()) {
    Code c = r.status().code();
    CHECK(c == Code::corruption || c == Code::io_error);
    return 0;
  }
  const blobstore::BlobMeta& meta = r.value();
  CHECK(!meta.key.empty() && meta.key.size() <= blobstore::limits::key_bytes_max);
  CHECK(meta.content_type.size() <= blobstore::limits::content_type_bytes_max);
  CHECK(meta.size <= file.size());
  CHECK(meta.attrs.size() <= blobstore::limits::attrs_bytes_max);
  std::uint64_t tail_bytes = blobstore::footer_bytes(meta);  // either format
  CHECK(file.size() - meta.size == tail_bytes);

  std::string tail = file.substr(meta.size);
  std::string enc = blobstore::encode_footer(meta);
  CHECK(enc.size() == tail.size());
  const std::size_t flags_from_end =
      (meta.format == blobstore::footer_format_v1 ? footer_fixed_bytes : blobstore::footer2_fixed_bytes) - 4;
  std::uint32_t flags = static_cast<std::uint32_t>(get_le(tail.data() + tail.size() - flags_from_end, 4));
  if ((flags & ~blobstore::flag_tombstone) == 0) {
    CHECK(enc == tail);
  } else {
    // Unknown flag bits are dropped on re-encoding, which changes the check too.
    std::size_t f = tail.size() - footer_fixed_bytes;
    CHECK(enc.compare(0, f + 4, tail, 0, f + 4) == 0);
    CHECK(enc.compare(f + 8, 52, tail, f + 8, 52) == 0);
  }

  // The same body with the re-encoded footer reads back to the same meta.
  std::string again = file.substr(0, meta.size) + enc;
  put_file(copy_fd, again);
  auto r2 = blobstore::read_footer(copy_fd, again.size());
  CHECK(r2.is_ok());
  CHECK(same_meta(meta, r2.value()));
  return 0;
}
