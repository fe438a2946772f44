// Value types shared by the membership state machine, its wire format and its users.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/node_id.h"

namespace gossip {

using NodeId = common::NodeId;

// Ids order as 128-bit big-endian numbers (memcmp order), compared a word at a time.
inline std::uint64_t id_word(const NodeId& id, std::size_t i) {
  std::uint64_t w;
  std::memcpy(&w, id.data() + 8 * i, sizeof w);
  if constexpr (std::endian::native == std::endian::little) w = __builtin_bswap64(w);
  return w;
}
inline int compare_ids(const NodeId& a, const NodeId& b) {
  for (std::size_t i = 0; i < 2; i++) {
    std::uint64_t x = id_word(a, i), y = id_word(b, i);
    if (x != y) return x < y ? -1 : 1;
  }
  return 0;
}
inline bool id_less(const NodeId& a, const NodeId& b) { return compare_ids(a, b) < 0; }

// A member's place in the ring's life cycle. Only an explicit status change removes a
// member from the ring; liveness (phi) never does.
enum class NodeStatus : std::uint8_t { joining, normal, leaving, left, removed };
inline constexpr std::uint8_t node_status_max = static_cast<std::uint8_t>(NodeStatus::removed);

// What a node says about itself. Each field is versioned separately inside Membership,
// so a change to one field gossips only that field.
struct AppState {
  std::string http_addr;  // "127.0.0.1:3001"
  NodeStatus status = NodeStatus::normal;
  std::uint32_t vnodes = 0;
  std::string zone;
  std::uint64_t disk_used_bytes = 0, key_count = 0;

  bool operator==(const AppState&) const = default;
};

// The versioned fields of an endpoint's state, in wire order (bit i of a delta's mask).
// The heartbeat has a version and no value: bumping it is the news.
enum class Field : std::uint8_t {
  heartbeat,
  gossip_addr,
  http_addr,
  status,
  vnodes,
  zone,
  disk_used_bytes,
  key_count,
};
inline constexpr std::size_t field_count = 8;
inline constexpr std::uint8_t field_mask_all = 0xff;
inline constexpr std::uint8_t field_bit(Field f) {
  return static_cast<std::uint8_t>(1u << static_cast<unsigned>(f));
}

// An endpoint's field values: where it gossips, what it says about itself.
struct EndpointValues {
  std::string gossip_addr;  // "ip:port" of its UDP socket
  AppState app;

  bool operator==(const EndpointValues&) const = default;
};

}  // namespace gossip
