// libFuzzer target for blobstore::CommitLog: the log file as a node finds it at start
// after a power cut (torn records, stale laps, damaged bytes).
//
// Input: one mode byte, then the file. Without mode bit 0 the first 36 bytes are
// replaced by a valid header (ring 64 KiB, tail and tail_seq from those bytes). With
// bit 1 the records from the tail on get their crc recomputed wherever their length
// field is in bounds: random bytes almost never pass the CRC otherwise.
//
// open() and replay() must never crash. When the log opens:
//   - every replayed record fits the ring, and there are no more than it can hold;
//   - a record appended after the replay is replayed last by a reopened log;
//   - after a checkpoint at the head, a reopened log replays nothing.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "blobstore/commit_log.h"
#include "tools/fuzzers/fuzz_support.h"


namespace {

using fuzz::get_le;
using fuzz::set_le;

using blobstore::CommitLog;
constexpr std::uint64_t ring = 64 * 1024;

std::string log_path;

void write_file(const std::string& bytes) {
  int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  CHECK(fd >= 0);
  std::size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = pwrite(fd, bytes.data() + off, bytes.size() - off, static_cast<off_t>(off));
    CHECK(n > 0);
    off += static_cast<std::size_t>(n);
  }
  close(fd);
}

// Recomputes the crc of each record from the tail on whose length is in bounds.
void fix_records(std::string& file, std::uint64_t tail) {
  std::uint64_t pos = tail;
  for (int i = 0; i < 64; i++) {
    std::uint64_t at = CommitLog::header_bytes + pos % ring;
    if (at + CommitLog::record_min_bytes > file.size()) return;
    std::uint64_t n = get_le(file.data() + at + 16, 4);
    if (n < CommitLog::record_min_bytes || pos % ring + n > ring || at + n > file.size()) return;
    set_le(file.data() + at + 4, blobstore::crc32(file.data() + at + 8, n - 8), 4);
    pos += n;
  }
}

std::vector<std::string> replay_all(CommitLog& log) {
  std::vector<std::string> keys;
  Status s = log.replay([&](const CommitLog::Entry& e) {
    CHECK(CommitLog::record_min_bytes + e.disk_path.size() + e.key.size() + e.file.size() <= ring);
    keys.emplace_back(e.key);
  });
  CHECK(s.is_ok() || s.code() == Code::io_error);
  CHECK(keys.size() <= ring / CommitLog::record_min_bytes);
  return keys;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::string root = "/tmp";
  if (const char* r = std::getenv("RINGSTORE_FUZZ_DATA_ROOT"); r != nullptr && *r != '\0') root = r;
  log_path = root + "/fuzz_commit_log." + std::to_string(getpid());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  unsigned mode = data[0];
  std::string file(reinterpret_cast<const char*>(data + 1), size - 1);
  std::uint64_t tail = 0;
  if (!(mode & 1)) {
    if (file.size() < CommitLog::header_bytes) file.resize(CommitLog::header_bytes, '\0');
    tail = get_le(file.data() + 16, 8) % (4 * ring);
    set_le(file.data(), 0x484c5352, 4);  // "RSLH"
    set_le(file.data() + 4, 1, 4);
    set_le(file.data() + 8, ring, 8);
    set_le(file.data() + 16, tail, 8);
    set_le(file.data() + 32, blobstore::crc32(file.data(), 32), 4);
  }
  if (mode & 2) fix_records(file, tail);
  write_file(file);

  auto log = CommitLog::open(log_path, ring);
  if (!log.is_ok()) {
    CHECK(log.status().code() == Code::corruption || log.status().code() == Code::io_error);
    unlink(log_path.c_str());
    return 0;
  }
  std::vector<std::string> before = replay_all(*log.value());

  const std::string file_bytes(100 + mode, 'f');
  std::vector<CommitLog::Entry> entry = {{"/disk", "appended-key", blobstore::Version{}, file_bytes}};
  bool appended = false;
  if (log.value()->fits(entry)) {
    CHECK(log.value()->append(entry).is_ok());
    appended = true;
  }
  log.value().reset();
  auto again = CommitLog::open(log_path, ring);
  CHECK(again.is_ok());
  std::vector<std::string> after = replay_all(*again.value());
  if (appended) {
    CHECK(after.size() == before.size() + 1);
    CHECK(after.back() == "appended-key");
  } else {
    CHECK(after.size() == before.size());
  }
  CHECK(again.value()->checkpoint(again.value()->head()).is_ok());
  again.value().reset();
  auto last = CommitLog::open(log_path, ring);
  CHECK(last.is_ok());
  CHECK(replay_all(*last.value()).empty());
  last.value().reset();
  unlink(log_path.c_str());
  return 0;
}
