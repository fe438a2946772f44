// The header being assembled by llhttp's callbacks: a field and a value may each arrive
// in several pieces (split across reads), and a new field starts after a value.
// Used by the server's Connection and by PeerClient's response parser.
#pragma once

#include <cstddef>
#include <string>

namespace node {

struct HeaderPair {
  std::string field, value;
  bool in_value = false;

  void add_field(const char* at, std::size_t n) {
    if (in_value) clear();
    field.append(at, n);
  }
  void add_value(const char* at, std::size_t n) {
    in_value = true;
    value.append(at, n);
  }
  void clear() {
    field.clear();
    value.clear();
    in_value = false;
  }
};

}  // namespace node
