// Ring is an immutable consistent-hash ring with virtual nodes. Each member owns
// `vnodes` tokens derived from its id (token i = first 8 bytes of SHA-1("<hex id>:<i>")),
// so every node computes the same ring from the same member list without gossiping
// tokens. A key's preference list is the first N distinct members clockwise from its
// position, preferring distinct zones when zones are set.
// Pure: no I/O, no clock, no threads. A Ring never changes after build(); share it
// across threads through std::shared_ptr<const Ring> and swap the pointer atomically.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/node_id.h"
#include "common/status.h"
#include "ring/hash.h"
#include "ring/limits.h"

namespace ring {

using NodeId = common::NodeId;

enum class MemberState : std::uint8_t { joining, normal, leaving, left, removed };
// A joining member does not serve yet (it streams its ranges first); a leaving one still
// does until its ranges have been streamed out; left and removed ones are gone.
inline bool owns_tokens(MemberState s) {
  return s == MemberState::normal || s == MemberState::leaving;
}

struct Member {
  NodeId id{};
  std::uint32_t vnodes = limits::vnodes_default;
  std::string zone;  // empty: no zone
  MemberState state = MemberState::normal;
  std::string addr;  // HTTP address, carried along for the callers' convenience
};

// A preference list: indices into Ring::members(), written without allocation.
struct PreferenceList {
  std::array<std::uint32_t, limits::replicas_max> nodes{};
  std::size_t size = 0;
  std::span<const std::uint32_t> view() const { return {nodes.data(), size}; }
};

class Ring {
 public:
  // Members in state joining, left or removed own no tokens (owns_tokens()). Invalid
  // input (duplicate ids, a vnode count of 0 or over the limit) is an error, not an
  // assertion: it comes from the network.
  static Result<std::shared_ptr<const Ring>> build(std::vector<Member> members);

  const std::vector<Member>& members() const { return members_; }
  std::size_t token_count() const { return tokens_.size(); }
  // REQUIRES: i < token_count(). Tokens are in ascending position order.
  std::uint64_t token_position(std::size_t i) const { return tokens_[i].position; }
  // -1 when the id is not a member.
  int index_of(const NodeId& id) const;

  // REQUIRES: n <= limits::replicas_max. Fewer than n when the ring has fewer members.
  void preference_list(std::uint64_t position, std::size_t n, PreferenceList* out) const;
  PreferenceList preference_list_for_key(std::string_view key, std::size_t n) const;

  // Fraction of the ring (0..1) for which each member is the first owner.
  std::vector<double> primary_shares() const;

  static std::uint64_t token(const NodeId& id, std::uint32_t i);

 private:
  struct Token {
    std::uint64_t position;
    std::uint32_t member;
    bool operator<(const Token& o) const { return position < o.position; }
  };
  std::vector<Member> members_;
  std::vector<Token> tokens_;  // sorted by position
  std::size_t owner_count_ = 0;  // members that own tokens
  std::size_t zone_count_ = 0;   // distinct zones among them (no zone: one's own)
};

std::string hex_id(const NodeId& id);

}  // namespace ring
