// JSON for the node's answers and for reading its peers' replies.
// Peer JSON is bad input until checked: field() tests the type before it looks, so no
// accessor throws inside a libuv callback (nlohmann's operator[] and at() would).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "node/request.h"

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

// Typed members with a default for a missing member or one of another type: unlike
// nlohmann's value(), which throws on a type mismatch ("truncated": 1 for a bool).
inline bool json_bool(const nlohmann::json& j, const char* name, bool def = false) {
  const nlohmann::json* v = field(j, name);
  return v != nullptr && v->is_boolean() ? v->get<bool>() : def;
}

inline std::string json_string(const nlohmann::json& j, const char* name, const std::string& def = "") {
  const nlohmann::json* v = field(j, name);
  return v != nullptr && v->is_string() ? v->get<std::string>() : def;
}

inline double json_double(const nlohmann::json& j, const char* name, double def = 0) {
  const nlohmann::json* v = field(j, name);
  return v != nullptr && v->is_number() ? v->get<double>() : def;
}

// An unsigned number, or a decimal string of one (64-bit values travel as strings).
inline std::uint64_t json_u64(const nlohmann::json& j, const char* name, std::uint64_t def = 0) {
  const nlohmann::json* v = field(j, name);
  if (v == nullptr) return def;
  if (v->is_number_unsigned()) return v->get<std::uint64_t>();
  if (!v->is_string()) return def;
  return parse_u64(v->get_ref<const std::string&>()).value_or(def);
}

}  // namespace node
