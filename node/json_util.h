// JSON for the node's answers and for reading its peers' replies.
// Peer JSON is bad input until checked: field() tests the type before it looks, so no
// accessor throws inside a libuv callback (nlohmann's operator[] and at() would).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace node {

// One line of JSON; bytes that are not UTF-8 are replaced, never thrown on.
inline std::string json_line(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

// The member `name` of `j`, or null when `j` is no object or lacks it.
inline const nlohmann::json* field(const nlohmann::json& j, const char* name) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(name);
  return it == j.end() ? nullptr : &*it;
}

}  // namespace node
