// The header being assembled by llhttp's callbacks: a field and a value may each arrive
// in several pieces (split across reads), and a new field starts after a value.
// Used by the server's Connection, PeerClient's response parser and the command line's
// client.
#pragma once

#include <llhttp.h>

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

// One llhttp_settings_t for a response parser class T, wired to its static callbacks
// (on_header_field, on_header_value, on_header_value_complete, on_headers_complete,
// on_body, on_message_complete), made once.
template <typename T>
const llhttp_settings_t* response_parser_settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t x;
    llhttp_settings_init(&x);
    x.on_header_field = T::on_header_field;
    x.on_header_value = T::on_header_value;
    x.on_header_value_complete = T::on_header_value_complete;
    x.on_headers_complete = T::on_headers_complete;
    x.on_body = T::on_body;
    x.on_message_complete = T::on_message_complete;
    return x;
  }();
  return &s;
}

}  // namespace node
