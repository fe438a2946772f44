// A node's identity: 16 random bytes made at first boot and kept in SQLite. One type
// for every module (the ring places it, gossip spreads it, versions carry it).
#pragma once

#include <array>
#include <cstdint>

namespace common {

using NodeId = std::array<std::uint8_t, 16>;

}  // namespace common
