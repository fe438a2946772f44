// ASSERT catches our own bugs (broken invariants) and stays on in release builds.
// Never ASSERT on bytes from the network or the disk: validate those, return a Status.
#pragma once

#include <cstdio>
#include <cstdlib>

#define RS_STRINGIFY2(x) #x
#define RS_STRINGIFY(x) RS_STRINGIFY2(x)

#define ASSERT(cond)                                                                   \
  do {                                                                                 \
    if (!(cond)) [[unlikely]] {                                                        \
      std::fprintf(stderr, "assertion failed: %s at %s:%d\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

#ifdef NDEBUG
#define DEBUG_ASSERT(cond) ((void)0)
#else
#define DEBUG_ASSERT(cond) ASSERT(cond)
#endif

#define UNREACHABLE()                                                          \
  do {                                                                         \
    std::fprintf(stderr, "unreachable at %s:%d\n", __FILE__, __LINE__);        \
    std::abort();                                                              \
  } while (0)
