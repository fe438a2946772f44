// Named limits of the blobstore. Each has a unit and a reason.
#pragma once

#include <cstddef>
#include <cstdint>

namespace blobstore::limits {
// Keys index a SQLite column; 1 KiB covers deep paths and keeps the index small.
inline constexpr std::size_t key_bytes_max = 1024;
// Content-Type is stored in the footer (u16 length) and the index.
inline constexpr std::size_t content_type_bytes_max = 256;
// Stored response headers of one value (BlobMeta::attrs: "name: value\r\n" lines),
// kept in the footer (u16 length), the index and every replica's request headers: 8 KiB
// is four times what S3 allows for user metadata and stays well inside one request's
// header budget.
inline constexpr std::size_t attrs_bytes_max = 8 * 1024;
// Values stream to disk, so this bounds disk use per object, not memory.
inline constexpr std::uint64_t body_bytes_max_default = 5ull << 30;
// Group commit: at most this many writes share one durability point and SQLite
// transaction. 256 × ~1 KiB keeps one batch's latency near one fsync (~1-2 ms here).
inline constexpr std::size_t commit_batch_max = 256;
// Writes waiting for the committer; beyond this begin_write says unavailable (503).
inline constexpr std::size_t commit_queue_max = 4096;
// Free space is re-read with statvfs at most this often when choosing a disk.
inline constexpr std::uint64_t disk_stat_interval_ms = 2'000;
// A listing page holds at most this many keys.
inline constexpr std::size_t list_limit_max = 10'000;
inline constexpr std::size_t list_limit_default = 1'000;
// A batch larger than this uses one syncfs() per disk instead of an fsync per file.
inline constexpr std::size_t syncfs_batch_min = 3;
// A background write (a repair, a hint delivered, a range streamed: no client waits
// for it) waits up to this long for others, so that one syncfs() makes a batch of them
// durable instead of an fsync of each file and its directory. Refilling a node one key
// at a time otherwise costs an fsync per key (~1.5 ms of CPU here, most of it in the
// kernel), CPU that the foreground then misses. A foreground write ends the wait.
inline constexpr std::uint64_t background_linger_ms = 20;
// The always mode's commit log (blobstore/commit_log.h): the bytes of records it holds.
// A sync round every --sync-period-ms drops them; at ~3 MiB/s of 1 KiB writes per node
// a round's worth is a few MiB, so a full log (which takes a round inline) is rare.
inline constexpr std::uint64_t commit_log_bytes = 64ull << 20;
// Values up to this size are read whole, verified, and may be cached.
inline constexpr std::size_t small_value_bytes_max = 64 * 1024;
// A larger value passing through a node whose every disk is full (a PUT it coordinates
// for the other replicas, a GET of a copy only they hold) has nowhere to be spooled: it
// is held in memory up to relay_bytes_max, and all such values together up to
// relay_total_bytes_max; beyond either the answer is 507.
inline constexpr std::size_t relay_bytes_max = 8 << 20;
inline constexpr std::uint64_t relay_total_bytes_max = 64ull << 20;
// Files of superseded versions kept per disk for reuse (blobstore/file_pool.h), the
// blocks they may hold, and the largest one kept: a small value with its footer (key,
// content type, attributes, 76 fixed bytes). A steady overwrite load puts rate × pooled_file_cool_ms
// files in the pool before the first comes back out (~1,300 writes/s per disk under the
// 1 KiB PUT bench: ~13,000 files); a pool that is full unlinks the rest, and freed inodes
// make every inode created in the next minute dearer on this filesystem (see
// file_pool.h), so both bounds sit well above that. The blocks (sizes rounded up to
// whole filesystem blocks) bound the space: 256 MiB per disk. The count bounds the
// files that hold no block (empty stocked ones) and the pool's memory (a path of ~100
// bytes each, ~6 MiB per disk): as many as fit the blocks at one block each (65,536).
inline constexpr std::uint64_t pooled_block_bytes = 4096;
inline constexpr std::uint64_t pooled_blocks_bytes_max = 256ull << 20;
inline constexpr std::size_t pooled_files_max = pooled_blocks_bytes_max / pooled_block_bytes;
inline constexpr std::uint64_t pooled_file_bytes_max = 74 * 1024 + 512;
// A superseded file is reused only after this long: far longer than reading a small
// value whole or sending one to a replica (replica_timeout_ms is 2 s).
inline constexpr std::uint64_t pooled_file_cool_ms = 10'000;
// Empty files kept ready per disk (blobstore/file_pool.h, FileStock): topped up to the
// high mark once a disk has fewer than the low mark.
inline constexpr std::size_t stocked_files_low = 32;
inline constexpr std::size_t stocked_files_high = 128;
static_assert(stocked_files_low < stocked_files_high && stocked_files_high < pooled_files_max);
static_assert(pooled_file_bytes_max >=
              small_value_bytes_max + key_bytes_max + content_type_bytes_max + attrs_bytes_max + 76);
static_assert(attrs_bytes_max < 65536, "the footer keeps its length in a u16");
// Disks are looked at for disappearance (directory, marker, device) this often; a
// failed one is re-checked as often. A few stat() calls per disk every 2 s cost nothing.
inline constexpr std::uint64_t disk_check_interval_ms = 2'000;
// A disk marked full takes writes again once this much of it is free (or 5% of a
// smaller disk), so that it does not flap between full and writable at every write.
inline constexpr std::uint64_t disk_free_resume_bytes = 64ull << 20;
// The scrub re-reads every blob and checks its MD5. Its default pace is gentle: 4 MiB/s
// and 50 files/s is ~1% of what one disk here reads, and a pass over 100 GiB of 1 MiB
// blobs takes ~7 h (100 GiB / 4 MiB/s); over 1M small files ~5.8 h (1M / 50/s).
inline constexpr std::uint64_t scrub_bytes_per_s_default = 4ull << 20;
inline constexpr std::uint32_t scrub_files_per_s_default = 50;
// Rows the scrub reads from the index at a time; its position is saved after each.
inline constexpr std::size_t scrub_batch_files = 32;
// After a full pass (or over an empty index) the scrub waits this long before the next.
inline constexpr std::uint64_t scrub_pass_pause_ms = 1'000;
// Damaged copies found by the scrub waiting for the loop thread; more are found again
// on the next pass.
inline constexpr std::size_t damaged_queue_max = 4096;
static_assert(commit_batch_max <= commit_queue_max);
static_assert(list_limit_default <= list_limit_max);
}  // namespace blobstore::limits
