// Named limits of the node. Each maps to one outcome: an HTTP status or a closed
// connection. The runtime values live in ServerLimits (flags may lower them for tests);
// these are the defaults.
#pragma once

#include <cstddef>
#include <cstdint>

#include "blobstore/limits.h"

namespace node::limits {
// Keys index a SQLite column; 1 KiB covers deep paths and keeps the index small. → 400
inline constexpr std::size_t key_bytes_max = blobstore::limits::key_bytes_max;
// llhttp has no cap of its own: the callbacks count request-line and header bytes. → 431
inline constexpr std::size_t header_bytes_max = 16 * 1024;
// The request target alone (percent-encoded key plus query). → 414
inline constexpr std::size_t url_bytes_max = 4 * key_bytes_max + 1024;
// Values stream to disk, so this bounds disk use per object, not memory. → 413
inline constexpr std::uint64_t body_bytes_max = blobstore::limits::body_bytes_max_default;
// Open client connections; one more is answered 503 and closed.
inline constexpr std::uint32_t connections_max = 1024;
// Bytes a client may send ahead while its request is answered (pipelining) before the
// node stops reading from it: the next request's head, and then some.
inline constexpr std::size_t pending_bytes_max = 64 * 1024;
// Ranges of one Range header. Each part costs ~100 bytes of part headers and a copy,
// so a header of many tiny ranges is mostly overhead; RFC 9110 §14.2 allows ignoring
// such a header. More than this: the whole value, 200.
inline constexpr std::size_t ranges_max = 64;
// A keep-alive connection with no request in progress is closed after this long.
inline constexpr std::uint32_t idle_timeout_ms = 60'000;
// A request's line and headers must arrive within this long of its first byte. → 408
inline constexpr std::uint32_t header_timeout_ms = 10'000;
// A body that makes no progress for this long is abandoned. → 408
inline constexpr std::uint32_t body_timeout_ms = 30'000;
// A client that reads none of a response for this long is cut off.
inline constexpr std::uint32_t send_timeout_ms = 30'000;
// On SIGTERM, requests in flight get this long to finish.
inline constexpr std::uint32_t drain_timeout_ms = 10'000;
// Bodies up to blobstore::limits::small_value_bytes_max are read and verified whole
// before the first byte is sent. Larger ones stream in chunks of stream_chunk_bytes:
// the per-connection window.
inline constexpr std::size_t stream_chunk_bytes = 256 * 1024;
// One read buffer per connection.
inline constexpr std::size_t read_buffer_bytes = 64 * 1024;
// A restarted node refuses client requests until gossip has described every member it
// remembers (Cluster::set_unheard), for at most this long: one live peer's answer to the
// first SYN (sent within one gossip interval, 1 s by default) carries them all, so ten
// rounds without one mean no live peer knows of the missing members. → 503
inline constexpr std::uint32_t ring_learn_timeout_ms = 10'000;
// Another live process under this node's id (a copied data dir): the one that started
// less than this long ago is the newer and stops; an older one keeps the id under a
// higher generation, which the newer then sees. Peers show a claim within a few gossip
// rounds (1 s each), so the newer hears of it well inside this window.
inline constexpr std::uint32_t twin_start_window_ms = 30'000;
// An older process takes a higher generation this often at most; past it, both are
// long-running and it stops rather than wage a war of generations.
inline constexpr std::uint32_t twin_defends_max = 3;
static_assert(url_bytes_max < header_bytes_max, "the request line is part of the headers");
static_assert(3 * key_bytes_max < url_bytes_max, "a fully percent-encoded key fits");
static_assert(header_timeout_ms < idle_timeout_ms);
}  // namespace node::limits

namespace node {
struct ServerLimits {
  std::size_t header_bytes_max = limits::header_bytes_max;
  std::uint64_t body_bytes_max = limits::body_bytes_max;
  std::uint32_t connections_max = limits::connections_max;
  std::uint32_t idle_timeout_ms = limits::idle_timeout_ms;
  std::uint32_t header_timeout_ms = limits::header_timeout_ms;
  std::uint32_t body_timeout_ms = limits::body_timeout_ms;
  std::uint32_t send_timeout_ms = limits::send_timeout_ms;
  std::uint32_t drain_timeout_ms = limits::drain_timeout_ms;
};
}  // namespace node
