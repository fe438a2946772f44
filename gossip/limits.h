// Limits of the membership layer. Each one has one outcome: a datagram that is dropped
// and counted, an entry left for the next round, or a member that is not added.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gossip::limits {

// One Ethernet MTU (1500) minus the IPv6 (40) and UDP (8) headers, with 52 bytes to spare
// for tunnels: a datagram is never fragmented, so losing one fragment never loses a
// datagram. Anything longer that arrives is dropped and counted as oversize.
inline constexpr std::size_t datagram_bytes_max = 1400;

// The frame (see gossip/WIRE_FORMAT.md): magic(2) version(1) type(1) sender(16) body mac(32).
inline constexpr std::size_t magic_bytes = 2;
inline constexpr std::size_t version_bytes = 1;
inline constexpr std::size_t type_bytes = 1;
inline constexpr std::size_t node_id_bytes = 16;
inline constexpr std::size_t header_bytes =
    magic_bytes + version_bytes + type_bytes + node_id_bytes;
inline constexpr std::size_t mac_bytes = 32;  // HMAC-SHA256
inline constexpr std::size_t body_bytes_max = datagram_bytes_max - header_bytes - mac_bytes;

// Integers are LEB128 varints: a u64 takes at most 10 bytes, a u32 at most 5.
inline constexpr std::size_t varint_bytes_max = 10;
inline constexpr std::size_t varint32_bytes_max = 5;
inline constexpr std::size_t count_bytes = 2;  // u16 entry counts

// "ip:port": the longest IPv6 text (45) in brackets (2), a colon and 5 digits is 53.
inline constexpr std::size_t addr_bytes_max = 64;
// An operator's label ("eu-west-1a"); it is gossiped every time a full state is sent.
inline constexpr std::size_t zone_bytes_max = 64;

// A digest: id, generation, max version.
inline constexpr std::size_t digest_bytes_max = node_id_bytes + 2 * varint_bytes_max;
inline constexpr std::size_t digest_bytes_min = node_id_bytes + 2;

// A delta: id, generation, field mask, then a version and a value per field present.
// Values: heartbeat (none: its version is the news), gossip_addr, http_addr, status,
// vnodes, zone, disk_used, key_count.
inline constexpr std::size_t field_count = 8;
inline constexpr std::size_t field_values_bytes_max =
    (1 + addr_bytes_max) + (1 + addr_bytes_max) + 1 + varint32_bytes_max + (1 + zone_bytes_max) +
    varint_bytes_max + varint_bytes_max;
inline constexpr std::size_t delta_bytes_max =
    node_id_bytes + varint_bytes_max + 1 + field_count * varint_bytes_max + field_values_bytes_max;
// id, generation, mask, and a heartbeat (a 1-byte version): the smallest delta.
inline constexpr std::size_t delta_bytes_min = node_id_bytes + 1 + 1 + 1;

// SYN body: range lo and hi (ids), a count, digests.
inline constexpr std::size_t syn_fixed_bytes = 2 * node_id_bytes + count_bytes;
// ACK body: a count of requests, requests, a count of deltas, deltas. ACK2: count, deltas.
inline constexpr std::size_t ack_fixed_bytes = 2 * count_bytes;
inline constexpr std::size_t ack2_fixed_bytes = count_bytes;

static_assert(header_bytes + mac_bytes < datagram_bytes_max, "the frame leaves room for a body");
static_assert(header_bytes + syn_fixed_bytes + digest_bytes_max + mac_bytes <= datagram_bytes_max,
              "a SYN always carries at least one digest");
static_assert(header_bytes + ack_fixed_bytes + delta_bytes_max + mac_bytes <= datagram_bytes_max,
              "the largest possible endpoint state fits one ACK, so a state is never split");
static_assert(header_bytes + ack2_fixed_bytes + delta_bytes_max + mac_bytes <= datagram_bytes_max,
              "the largest possible endpoint state fits one ACK2");
static_assert(delta_bytes_max < 400, "three full states of the largest size fit one datagram");

// Members one node keeps, including itself and left/removed ones. Bounds memory (about
// 0.5 KiB each) and the digest a SYN carries. A new member beyond this is not added.
inline constexpr std::size_t members_max = 4096;
// Two live endpoints claiming one id (a copied data dir) are told apart from a member
// that restarted elsewhere by both addresses sending: each heard within this window,
// the second one for at least twin_persist_ms (a restarted member's old address falls
// silent: its process is gone).
inline constexpr std::uint64_t twin_window_ms = 10'000;
inline constexpr std::uint64_t twin_persist_ms = 3'000;
// A full digest list is sent every round, split by id range across this many datagrams.
inline constexpr std::size_t digests_per_syn_min =
    (body_bytes_max - syn_fixed_bytes) / digest_bytes_max;
inline constexpr std::size_t syn_datagrams_max =
    (members_max + digests_per_syn_min - 1) / digests_per_syn_min;
static_assert(digests_per_syn_min >= 32, "a SYN datagram carries a useful share of the digest");
static_assert(syn_datagrams_max <= 128, "a round's digest to one peer stays under 180 KB");

// Datagrams sent in answer to one received datagram (ACK for a SYN, ACK2 for an ACK).
// A SYN datagram covers up to ~55 members; their heartbeat deltas (~22 bytes each) fit
// one reply, and a newcomer that knows few members gets up to ~100 full states (~110
// bytes each) per SYN datagram. What does not fit goes in a later round. The cap also
// bounds how much an authenticated datagram can make us send (amplification).
inline constexpr std::size_t reply_datagrams_max = 8;

// Live peers gossiped to per round (fewer when fewer are live). Each exchange is a full
// digest sync, so this sets how often a peer's heartbeat reaches us: with 1 (Cassandra's
// choice) heartbeats arrive in bursts and the detector must either wait longer or err;
// with 3, simulated 5- to 1,000-node clusters at 10% loss convict a dead node in under
// 10 s and take a live one for dead in under one (observer, peer) sample in a million.
// It triples the traffic of 1: about 110 datagrams a second per node at 1,000 nodes.
inline constexpr std::uint32_t live_peers_per_round = 3;

// Failure detection (failure_detector.h). A window of 1,000 heartbeat intervals (as
// Cassandra and Akka keep) is ~17 minutes at one a second; intervals are kept as u16 ms,
// so a peer costs 2 KiB once its window is full.
inline constexpr std::size_t phi_window_samples = 1000;
// In multiples of the gossip interval:
// - the first sample a new peer gets (Cassandra's fd_initial_value is 2 s with 1 s
//   gossip), so that it is not convicted before its second heartbeat can arrive;
inline constexpr double phi_initial_interval_factor = 2.0;
// - the smallest standard deviation assumed, so that a peer whose heartbeats arrive like
//   clockwork is not convicted after a few lost rounds: at phi 8 a conviction then
//   takes at least mean + 5.6 * 0.7 intervals, ~5 s with 1 s gossip. Simulated 1,000
//   nodes at 10% loss: at 0.5 (~3.8 s) about ten live pairs were wrongly down at any
//   moment; at 0.7, a few per ten million samples, and the last of 999 observers
//   convicted a dead node after 7-9.5 s (at 0.75: none wrong, 0.3 s later);
inline constexpr double phi_stddev_min_factor = 0.7;
// - arrivals closer than this to the previous one are the same news by two paths;
inline constexpr double phi_sample_factor_min = 0.25;
// - intervals longer than this are gaps (losses, a pause, a partition), not samples
//   (Cassandra ignores those over 2 s too): learning them would teach the detector to
//   wait that long, for the whole window, after a single bad minute.
inline constexpr double phi_sample_factor_max = 2.0;
static_assert(phi_initial_interval_factor <= phi_sample_factor_max);
static_assert(phi_sample_factor_max < 1 + 5 * phi_stddev_min_factor,
              "a gap long enough to be ignored is not already a conviction at phi 8");

// A removal announced by another node takes the removed member's generation plus this:
// a node's generation grows by one per restart, so a retired node would have to restart
// four billion times before its own word outranked the removal again.
inline constexpr std::uint64_t removal_generation_step = 1ull << 32;
inline constexpr std::uint32_t interval_ms_min = 10;
inline constexpr std::uint32_t interval_ms_max = 30'000;
static_assert(phi_sample_factor_max * interval_ms_max <= UINT16_MAX, "samples fit u16 ms");

}  // namespace gossip::limits
