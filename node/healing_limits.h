// Named limits of the node's self-healing paths: hinted handoff, the refetch of lost
// copies (failed disks, damaged blobs) and the scrub's defaults. Part of node::limits;
// kept in their own header because they belong to one feature.
#pragma once

#include <cstddef>
#include <cstdint>

namespace node::limits {
// Hinted handoff, as Cassandra does it: a target down longer than the window gets no
// new hints (anti-entropy repairs what it missed); 3 h covers a reboot or a disk swap.
inline constexpr std::uint64_t hint_window_ms_default = 3ull * 3600 * 1000;
// Hints this node holds for one target, and in all. At 1 KiB values 100k hints are
// ~100 MiB of stand-in copies; a write beyond the cap stores no hint (counted) and
// leaves the miss to anti-entropy.
inline constexpr std::uint64_t hints_per_target_max_default = 100'000;
inline constexpr std::uint64_t hints_total_max_default = 1'000'000;
// Hints handed to their owners per second, as Cassandra's 1 MiB/s handoff throttle does
// for 1 KiB values. A 20 s partition under ~250 writes/s leaves ~5k hints: they reach
// the returning owner in ~5 s (measured: 5,099 in 4.8 s; at 100/s it took 48 s) and
// 100k in ~2 min. Each delivery waits for the owner's group commit (20-50 ms when its
// disks are busy), so 32 in flight keep the rate.
inline constexpr std::uint32_t hint_deliveries_per_s_default = 1000;
inline constexpr std::size_t hints_in_flight_max = 32;
// Pending hints per target are recounted this often (one GROUP BY over the hint rows,
// which the partial index blobs_hint_for keeps proportional to the hints held); caps
// are checked against that count plus the hints taken since.
inline constexpr std::uint64_t hint_count_interval_ms = 1'000;

// Refetching lost copies from other replicas: keys per second and fetches at a time.
// 200 keys/s refills a disk of 10k keys in ~50 s. Each refetched copy waits for a group
// commit (one syncfs, 20-50 ms here when the filesystem is busy), so the fetches in
// flight set the batch size: 8 gave ~170 keys/s, 32 lets a batch carry 32 copies.
inline constexpr std::uint32_t repair_keys_per_s_default = 200;
inline constexpr std::size_t repair_in_flight_max = 32;
// Keys waiting for a fetch. A failed disk is enumerated a page at a time only while the
// queue has room, so this bounds memory, never what gets repaired; damaged copies
// reported beyond it are counted and left to the next scrub pass or anti-entropy.
inline constexpr std::size_t repair_queue_max = 10'000;
inline constexpr std::size_t repair_page_rows = 256;
// How often the repair looks at the disks and its queue.
inline constexpr std::uint32_t repair_tick_ms = 100;
// A key whose fetch failed (no replica reachable) is tried again after this long, at
// most repair_attempts_max times; then anti-entropy owns it.
inline constexpr std::uint64_t repair_retry_ms = 2'000;
inline constexpr std::uint32_t repair_attempts_max = 5;
static_assert(repair_page_rows * 4 <= repair_queue_max);
static_assert(hints_per_target_max_default <= hints_total_max_default);
}  // namespace node::limits
