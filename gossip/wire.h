// The gossip wire format (gossip/WIRE_FORMAT.md): messages, their encoding into
// datagrams of at most limits::datagram_bytes_max bytes, and the HMAC-SHA256 that
// authenticates every datagram. Pure code: no I/O, no clock.
#pragma once

#include <openssl/types.h>

#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "gossip/limits.h"
#include "gossip/types.h"

namespace gossip {

static_assert(field_count == limits::field_count);

inline constexpr std::uint8_t wire_magic[limits::magic_bytes] = {'R', 'G'};
inline constexpr std::uint8_t wire_version = 1;

enum class MessageType : std::uint8_t { syn = 1, ack = 2, ack2 = 3 };

// What a node holds about one endpoint: its generation and the highest version of any
// of its fields. As a request in an ACK: "send me what is newer than this".
struct Digest {
  NodeId id{};
  std::uint64_t generation = 0;  // 0: known by address only (Membership::add_known)
  std::uint64_t max_version = 0;

  bool operator==(const Digest&) const = default;
};

// Some or all fields of one endpoint's state, each with its version. A delta with every
// field (full()) may create an endpoint or replace it with a newer generation; a partial
// one only updates an endpoint of the same generation.
struct Delta {
  NodeId id{};
  std::uint64_t generation = 0;                       // >= 1
  std::uint8_t field_mask = 0;                        // bit i: Field(i) is present; never 0
  std::array<std::uint64_t, field_count> versions{};  // >= 1 for each field present
  EndpointValues values;  // meaningful only for fields present (decoding reuses Deltas)

  bool full() const { return field_mask == field_mask_all; }
  bool has(Field f) const { return (field_mask & field_bit(f)) != 0; }
  bool operator==(const Delta&) const = default;
};

// One datagram's content.
// SYN:  `digests` is the sender's complete digest for ids in [range_lo, range_hi], in
//       ascending id order: an id in the range and absent from it is unknown to the sender.
// ACK:  `digests` are requests ("send me what is newer"), `deltas` what the receiver of
//       the SYN holds newer than the sender.
// ACK2: `deltas` answering an ACK's requests.
struct Message {
  MessageType type = MessageType::syn;
  NodeId sender{};
  NodeId range_lo{}, range_hi{};  // SYN only
  std::vector<Digest> digests;
  std::vector<Delta> deltas;

  bool operator==(const Message&) const = default;
};

// Whether `s` can travel as an address or a zone: at most `max` bytes of printable ASCII.
bool is_wire_string(std::string_view s, std::size_t max);

// Why a datagram was dropped. Each maps to one counter of Membership::Counters.
enum class DropReason : std::uint8_t { none, oversize, malformed, bad_mac, bad_version };

// An HMAC-SHA256 key ready to sign and verify datagrams.
// Owns: one EVP_MAC_CTX, keyed once and re-initialised (not re-keyed) per datagram.
// Thread: one thread at a time (the context is reused); make one per thread.
class MacKey {
 public:
  // An empty secret is a valid (insecure) key: datagrams are still checksummed.
  explicit MacKey(std::string_view secret);
  ~MacKey();
  MacKey(const MacKey&) = delete;
  MacKey& operator=(const MacKey&) = delete;

  using Mac = std::array<std::uint8_t, limits::mac_bytes>;
  Mac sign(std::span<const std::uint8_t> bytes) const;
  // Compares in constant time.
  bool verify(std::span<const std::uint8_t> bytes, std::span<const std::uint8_t> mac) const;

 private:
  EVP_MAC_CTX* ctx_ = nullptr;
};

// Writes one datagram entry by entry into a byte vector, so that a sender fills it up to
// limits::datagram_bytes_max without building a Message first. An add_* that would not
// fit writes nothing and returns false: finish this datagram and start another.
// Lifetime: `out` must outlive the builder.
class DatagramBuilder {
 public:
  // Clears `out` and writes the frame's header.
  DatagramBuilder(MessageType type, const NodeId& sender, std::vector<std::uint8_t>* out);

  // A SYN's digest (ids ascending) or an ACK's request.
  // REQUIRES: type syn or ack; for an ack, no delta added yet.
  bool add_digest(const Digest& d);
  // The fields of `mask` with their versions and values. REQUIRES: type ack or ack2;
  // mask != 0; generation >= 1; versions >= 1 for the fields in mask; strings in limits.
  bool add_delta(const NodeId& id, std::uint64_t generation, std::uint8_t mask,
                 const std::array<std::uint64_t, field_count>& versions,
                 const EndpointValues& values);
  bool add_delta(const Delta& d) {
    return add_delta(d.id, d.generation, d.field_mask, d.versions, d.values);
  }

  std::size_t digest_count() const { return digests_; }
  std::size_t delta_count() const { return deltas_; }
  // Patches the counts (and a SYN's range) and appends the MAC. REQUIRES: for a SYN,
  // lo <= every digest's id <= hi. The builder must not be used afterwards.
  void finish(const MacKey& key, const NodeId& range_lo = {}, const NodeId& range_hi = {});

 private:
  bool fits(std::size_t mark);  // undoes the entry written since `mark` if it overflows

  MessageType type_;
  std::vector<std::uint8_t>* out_;
  std::size_t digests_ = 0, deltas_ = 0;
  std::size_t deltas_count_at_ = 0;  // where an ACK's delta count goes, once known
  NodeId last_digest_{};
};

// Encodes and signs `m` (with DatagramBuilder) into `out`, replacing what it held.
// REQUIRES: the encoding fits limits::datagram_bytes_max; ids of a SYN ascend within
// its range; every delta has a non-empty mask, generation >= 1 and versions >= 1.
void encode_datagram(const Message& m, const MacKey& key, std::vector<std::uint8_t>* out);

// Decodes and authenticates one datagram. Checks, in order: size (oversize, or too
// short for a frame: malformed), MAC (bad_mac), magic (malformed), version
// (bad_version), then the type, every length and value of the body, and that nothing
// trails it (malformed). Never crashes and never asserts, whatever the bytes. On error
// `*reason` says which counter to bump and `*out` is unspecified; `out` keeps its
// capacity between calls.
Status decode_datagram(std::span<const std::uint8_t> bytes, const MacKey& key, Message* out,
                       DropReason* reason);
// The same with a key made from `secret` (slower: for tests and fuzzing).
Status decode_datagram(std::span<const std::uint8_t> bytes, std::string_view secret, Message* out,
                       DropReason* reason);

}  // namespace gossip
