#include "blobstore/commit_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "blobstore/blob_file.h"
#include "common/assert.h"

namespace blobstore {

namespace {

constexpr std::uint32_t header_magic = 0x484c5352;  // "RSLH"
constexpr std::uint32_t record1_magic = 0x314c5352;  // "RSL1"
constexpr std::uint32_t record_magic = 0x324c5352;   // "RSL2"
constexpr std::uint32_t format = 2;
constexpr std::uint8_t rec_tombstone = 1, rec_unlinked = 2, rec_hint = 4;
constexpr std::size_t header_used = 36;
constexpr std::uint64_t ring_bytes_max = 1ull << 30;

std::array<std::uint32_t, 256> make_crc_table() {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; i++) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

void put(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::uint64_t get(const char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; i++) v |= static_cast<std::uint64_t>(static_cast<std::uint8_t>(p[i])) << (8 * i);
  return v;
}

Status pread_all(int fd, char* out, std::size_t n, std::uint64_t at, bool* short_read) {
  std::size_t done = 0;
  while (done < n) {
    ssize_t r = pread(fd, out + done, n - done, static_cast<off_t>(at + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::from_errno("read the commit log", errno);
    if (r == 0) {
      *short_read = true;
      return Status::ok();
    }
    done += static_cast<std::size_t>(r);
  }
  *short_read = false;
  return Status::ok();
}

}  // namespace

std::uint32_t crc32(const void* data, std::size_t n, std::uint32_t crc) {
  static const std::array<std::uint32_t, 256> table = make_crc_table();
  const auto* p = static_cast<const std::uint8_t*>(data);
  crc = ~crc;
  for (std::size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

Result<std::unique_ptr<CommitLog>> CommitLog::open(const std::string& path, std::uint64_t capacity) {
  ASSERT(capacity >= 64 * 1024 && capacity <= ring_bytes_max);
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Status::from_errno("open " + path, errno);
  std::unique_ptr<CommitLog> log(new CommitLog(fd, capacity));
  char h[header_used];
  bool short_read = false;
  if (Status s = pread_all(fd, h, sizeof h, 0, &short_read); !s.is_ok()) return s;
  struct stat st;
  if (fstat(fd, &st) != 0) return Status::from_errno("stat " + path, errno);
  // The zeros ahead of the records start past the header block.
  log->allocated_ = std::max<std::uint64_t>(static_cast<std::uint64_t>(st.st_size), header_bytes);
  if (short_read && st.st_size == 0) {
    // A new log: its header made durable (with its directory entry) before any record.
    log->tail_ = log->head_ = Mark{0, 1};
    if (Status s = log->write_header(log->tail_); !s.is_ok()) return s;
    std::string dir = parent_of(path);
    if (Status s = fsync_path(dir.empty() ? "/" : dir); !s.is_ok()) return s;
    return log;
  }
  if (short_read || get(h, 4) != header_magic || get(h + 32, 4) != crc32(h, 32)) {
    return Status::corruption(path + ": the commit log header is damaged");
  }
  if (get(h + 4, 4) != format && get(h + 4, 4) != 1) {
    return Status::corruption(path + ": unknown commit log format");
  }
  log->ring_ = get(h + 8, 8);  // the ring keeps the size it was made with
  if (log->ring_ < 64 * 1024 || log->ring_ > ring_bytes_max) {
    return Status::corruption(path + ": bad commit log size");
  }
  log->tail_ = log->head_ = Mark{get(h + 16, 8), get(h + 24, 8)};
  return log;
}

CommitLog::~CommitLog() { close(fd_); }

std::size_t CommitLog::record_bytes(const Entry& e) {
  return record_fixed_bytes + e.disk_path.size() + e.key.size() + e.file.size();
}

bool CommitLog::can_hold(std::size_t disk_path, std::size_t key, std::size_t file) const {
  return disk_path <= 0xffff && key <= 0xffff && file <= 0xffffffffu &&
         record_fixed_bytes + disk_path + key + file <= ring_ / 4;
}

std::uint64_t CommitLog::place(std::uint64_t pos, std::size_t n) const {
  if (pos % ring_ + n > ring_) return (pos / ring_ + 1) * ring_;
  return pos;
}

bool CommitLog::fits(const std::vector<Entry>& entries) const {
  std::lock_guard<std::mutex> l(mu_);
  if (broken_) return false;
  return end_of(head_.pos, entries) - tail_.pos <= ring_;
}

std::uint64_t CommitLog::end_of(std::uint64_t p, const std::vector<Entry>& entries) const {
  for (const Entry& e : entries) {
    std::size_t n = record_bytes(e);
    p = place(p, n) + n;
  }
  return p;
}

Status CommitLog::append(const std::vector<Entry>& entries) {
  Mark h = head();
  const Mark end{end_of(h.pos, entries), h.seq + entries.size()};
  // A failed append may still reach the disk, whole or in part, and the records after
  // it must not reuse its place or seqs: the log takes no more until a checkpoint past
  // it (a sync round) drops it.
  auto fail = [&](Status s) {
    std::lock_guard<std::mutex> l(mu_);
    head_ = end;
    broken_ = true;
    return s;
  };
  std::uint64_t run_start = h.pos;  // logical position of buf_[0]
  buf_.clear();
  auto flush = [&]() -> Status {
    if (buf_.empty()) return Status::ok();
    if (Status s = allocate_to(physical(run_start) + buf_.size()); !s.is_ok()) return s;
    Status s = write_all(fd_, buf_.data(), buf_.size(), "the commit log",
                         static_cast<std::int64_t>(physical(run_start)));
    buf_.clear();
    return s;
  };
  for (const Entry& e : entries) {
    ASSERT(can_hold(e.disk_path.size(), e.key.size(), e.file.size()));
    std::size_t n = record_bytes(e);
    std::uint64_t at = place(h.pos, n);
    // A new lap: at the ring's start, whether the last one ended early or just filled.
    if (at != h.pos || (at % ring_ == 0 && !buf_.empty())) {
      if (Status s = flush(); !s.is_ok()) return fail(std::move(s));
      run_start = at;
    }
    std::size_t start = buf_.size();
    put(buf_, record_magic, 4);
    put(buf_, 0, 4);  // the crc, below
    put(buf_, h.seq, 8);
    put(buf_, n, 4);
    put(buf_, e.disk_path.size(), 2);
    put(buf_, e.key.size(), 2);
    put(buf_, e.version.hlc, 8);
    buf_.append(reinterpret_cast<const char*>(e.version.node.data()), e.version.node.size());
    put(buf_, e.file.size(), 4);
    put(buf_, (e.tombstone ? rec_tombstone : 0) | (e.unlinked ? rec_unlinked : 0) | (e.is_hint ? rec_hint : 0), 1);
    buf_.append(reinterpret_cast<const char*>(e.hint_for.data()), e.hint_for.size());
    buf_.append(e.disk_path);
    buf_.append(e.key);
    buf_.append(e.file);
    std::uint32_t c = crc32(buf_.data() + start + 8, n - 8);
    for (int i = 0; i < 4; i++) buf_[start + 4 + i] = static_cast<char>((c >> (8 * i)) & 0xff);
    h.pos = at + n;
    h.seq++;
  }
  ASSERT(h.pos == end.pos && h.seq == end.seq);
  if (Status s = flush(); !s.is_ok()) return fail(std::move(s));
  if (fdatasync(fd_) != 0) return fail(Status::from_errno("fdatasync the commit log", errno));
  std::lock_guard<std::mutex> l(mu_);
  ASSERT(h.pos - tail_.pos <= ring_);
  head_ = h;
  records_ += entries.size();
  return Status::ok();
}

// Zeros from the end of the file to a MiB past `end` (within the ring): on the first lap
// the records then land in blocks that the fdatasync of an earlier batch allocated.
Status CommitLog::allocate_to(std::uint64_t end) {
  constexpr std::uint64_t step = 1 << 20;
  const std::uint64_t limit = header_bytes + ring_;
  if (end <= allocated_ || allocated_ >= limit) return Status::ok();
  std::uint64_t target = std::min(limit, (end / step + 2) * step);
  static const std::string zeros(step, '\0');
  while (allocated_ < target) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(step, target - allocated_));
    if (Status s = write_all(fd_, zeros.data(), n, "the commit log", static_cast<std::int64_t>(allocated_));
        !s.is_ok()) {
      return s;
    }
    allocated_ += n;
  }
  return Status::ok();
}

CommitLog::Mark CommitLog::head() const {
  std::lock_guard<std::mutex> l(mu_);
  return head_;
}

std::uint64_t CommitLog::records() const {
  std::lock_guard<std::mutex> l(mu_);
  return records_;
}

Status CommitLog::write_header(Mark tail) {
  std::string h;
  put(h, header_magic, 4);
  put(h, format, 4);
  put(h, ring_, 8);
  put(h, tail.pos, 8);
  put(h, tail.seq, 8);
  put(h, crc32(h.data(), h.size()), 4);
  ASSERT(h.size() == header_used);
  if (Status s = write_all(fd_, h.data(), h.size(), "the commit log header", 0); !s.is_ok()) return s;
  if (fdatasync(fd_) != 0) return Status::from_errno("fdatasync the commit log", errno);
  return Status::ok();
}

Status CommitLog::checkpoint(Mark m) {
  std::lock_guard<std::mutex> hl(header_mu_);
  {
    std::lock_guard<std::mutex> l(mu_);
    if (m.pos <= tail_.pos) return Status::ok();
    ASSERT(m.pos <= head_.pos);
  }
  if (Status s = write_header(m); !s.is_ok()) return s;
  std::lock_guard<std::mutex> l(mu_);
  tail_ = m;
  if (m.pos >= head_.pos) broken_ = false;
  return Status::ok();
}

Status CommitLog::replay(const std::function<void(const Entry&)>& fn) {
  Mark m = head();
  std::string rec;
  // Reads the record for `seq` at logical position `pos`; false when there is none.
  auto read_at = [&](std::uint64_t pos, std::uint64_t seq, bool* found) -> Status {
    *found = false;
    char fixed[record_min_bytes];
    bool short_read = false;
    if (Status s = pread_all(fd_, fixed, sizeof fixed, physical(pos), &short_read); !s.is_ok() || short_read) {
      return s;
    }
    std::uint64_t magic = get(fixed, 4);
    std::uint64_t fixed_len = magic == record_magic ? record_fixed_bytes : record_min_bytes;
    std::uint64_t n = get(fixed + 16, 4);
    std::uint64_t disk_len = get(fixed + 20, 2), key_len = get(fixed + 22, 2);
    std::uint64_t file_len = get(fixed + 48, 4);
    if ((magic != record_magic && magic != record1_magic) || get(fixed + 8, 8) != seq ||
        n < fixed_len || pos % ring_ + n > ring_ || n != fixed_len + disk_len + key_len + file_len) {
      return Status::ok();
    }
    rec.resize(n);
    if (Status s = pread_all(fd_, rec.data(), n, physical(pos), &short_read); !s.is_ok() || short_read) {
      return s;
    }
    if (get(rec.data() + 4, 4) != crc32(rec.data() + 8, n - 8)) return Status::ok();
    *found = true;
    return Status::ok();
  };
  for (;;) {
    bool found = false;
    std::uint64_t at = m.pos;
    if (Status s = read_at(at, m.seq, &found); !s.is_ok()) return s;
    if (!found && m.pos % ring_ != 0) {  // maybe the writer went on at the next lap
      at = (m.pos / ring_ + 1) * ring_;
      if (Status s = read_at(at, m.seq, &found); !s.is_ok()) return s;
    }
    if (!found) break;
    Entry e;
    const char* p = rec.data();
    std::size_t disk_len = get(p + 20, 2), key_len = get(p + 22, 2);
    e.version.hlc = get(p + 24, 8);
    std::memcpy(e.version.node.data(), p + 32, e.version.node.size());
    std::size_t fixed_len = record_min_bytes;
    if (get(p, 4) == record_magic) {
      fixed_len = record_fixed_bytes;
      std::uint64_t flags = get(p + 52, 1);
      e.tombstone = (flags & rec_tombstone) != 0;
      e.unlinked = (flags & rec_unlinked) != 0;
      e.is_hint = (flags & rec_hint) != 0;
      std::memcpy(e.hint_for.data(), p + 53, e.hint_for.size());
    }
    e.disk_path = std::string_view(p + fixed_len, disk_len);
    e.key = std::string_view(p + fixed_len + disk_len, key_len);
    e.file = std::string_view(p + fixed_len + disk_len + key_len, rec.size() - fixed_len - disk_len - key_len);
    fn(e);
    m.pos = at + rec.size();
    m.seq++;
  }
  std::lock_guard<std::mutex> l(mu_);
  head_ = m;
  return Status::ok();
}

}  // namespace blobstore
