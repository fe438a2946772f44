// Named limits of the ring.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ring::limits {
// Random tokens give a node a share that varies by about 1/sqrt(vnodes). Measured in
// ring_test over 10-100 equal nodes: 1,024 tokens reached max/mean 1.106 and 2,048
// reached 1.108 for some node ids; 4,096 (sigma 1.6%) stays under 1.10. The cost is
// 400k tokens (6.5 MB, ~0.3 s to build) for 100 nodes, paid once per membership change.
inline constexpr std::uint32_t vnodes_default = 4096;
// Weight scales vnodes; beyond this a node's tokens cost more lookup time than they buy.
inline constexpr std::uint32_t vnodes_per_node_max = 16384;
// Preference lists are written into a fixed array, so lookups never allocate.
inline constexpr std::size_t replicas_max = 9;
// Enough for a large cluster at the default vnode count; bounds the token table.
inline constexpr std::size_t nodes_max = 4096;
static_assert(vnodes_default <= vnodes_per_node_max);
}  // namespace ring::limits
