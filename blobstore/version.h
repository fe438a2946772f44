// A write's version: a hybrid logical clock (48-bit wall-clock ms, 16-bit counter) plus
// the coordinator's node id as a tie-break. The highest version wins everywhere.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/node_id.h"

namespace blobstore {

using NodeId = common::NodeId;

struct Version {
  std::uint64_t hlc = 0;  // (wall_ms << 16) | counter
  NodeId node{};

  auto operator<=>(const Version&) const = default;
  std::uint64_t wall_ms() const { return hlc >> 16; }

  // "<16 hex hlc>-<32 hex node>": fixed width, so byte order equals version order.
  std::string to_string() const;
  static std::optional<Version> parse(std::string_view text);
};

inline constexpr std::size_t version_text_bytes = 16 + 1 + 32;

std::string hex(const std::uint8_t* bytes, std::size_t n);
bool unhex(std::string_view text, std::uint8_t* out, std::size_t n);

}  // namespace blobstore
