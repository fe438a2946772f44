// Names the calling thread so that top -H, perf and gdb tell a node's threads apart.
#pragma once

#include <pthread.h>

namespace common {

// `name` is at most 15 characters (the kernel's limit); longer names are cut.
inline void name_this_thread(const char* name) {
  char buf[16];
  int i = 0;
  for (; i < 15 && name[i] != '\0'; i++) buf[i] = name[i];
  buf[i] = '\0';
  pthread_setname_np(pthread_self(), buf);
}

}  // namespace common
