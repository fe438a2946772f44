// Hashes the ring is built on: SHA-1 of a key, and a key's position (the first 8 bytes
// of that digest, big-endian). Pure functions: no I/O, no allocation.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace ring {

using Sha1Digest = std::array<std::uint8_t, 20>;

Sha1Digest sha1(std::string_view bytes);

// The first 8 bytes of SHA-1(key) as a big-endian u64: where the key sits on the ring.
std::uint64_t key_position(std::string_view key);
std::uint64_t position_of(const Sha1Digest& digest);

}  // namespace ring
