// The seed of a simulation: SIM_SEED from the environment (to replay a failure), else a
// fresh random one. Every simulation test prints the seed it ran with.
#pragma once

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>

namespace sim {

inline std::uint64_t seed_from_env_or_random() {
  if (const char* text = std::getenv("SIM_SEED"); text != nullptr && *text != '\0') {
    std::uint64_t seed = 0;
    auto [end, ec] = std::from_chars(text, text + std::strlen(text), seed);
    if (ec == std::errc() && *end == '\0') return seed;
  }
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) | rd();
}

}  // namespace sim
