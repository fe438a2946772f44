// What the libFuzzer targets share: an invariant check that stops the run with the
// broken condition, and little-endian field access for shaping inputs.
#pragma once

#include <cstdint>
#include <cstdio>

// Traps (libFuzzer keeps the input) when an invariant does not hold.
#define CHECK(cond)                                                               \
  do {                                                                            \
    if (!(cond)) [[unlikely]] {                                                   \
      std::fprintf(stderr, "%s: invariant broken: %s (line %d)\n", __FILE_NAME__, \
                   #cond, __LINE__);                                              \
      __builtin_trap();                                                           \
    }                                                                             \
  } while (0)

namespace fuzz {

inline std::uint64_t get_le(const char* p, int n) {
  std::uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = (v << 8) | static_cast<std::uint8_t>(p[i]);
  return v;
}

inline void set_le(char* p, std::uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = static_cast<char>(v >> (8 * i));
}

}  // namespace fuzz
