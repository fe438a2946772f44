#include "ring/ring.h"

#include <algorithm>
#include <set>

namespace ring {

std::string hex_id(const NodeId& id) {
  static const char digits[] = "0123456789abcdef";
  std::string s(32, '0');
  for (std::size_t i = 0; i < id.size(); i++) {
    s[2 * i] = digits[id[i] >> 4];
    s[2 * i + 1] = digits[id[i] & 15];
  }
  return s;
}

std::uint64_t Ring::token(const NodeId& id, std::uint32_t i) {
  std::string s = hex_id(id);
  s += ':';
  s += std::to_string(i);
  return key_position(s);
}

Result<std::shared_ptr<const Ring>> Ring::build(std::vector<Member> members) {
  if (members.size() > limits::nodes_max) return Status::invalid("too many members");
  std::set<NodeId> seen;
  auto ring = std::shared_ptr<Ring>(new Ring());
  for (const Member& m : members) {
    if (!seen.insert(m.id).second) return Status::invalid("duplicate member id");
    if (m.vnodes == 0 || m.vnodes > limits::vnodes_per_node_max) {
      return Status::invalid("vnodes out of range");
    }
  }
  ring->members_ = std::move(members);
  for (std::uint32_t m = 0; m < ring->members_.size(); m++) {
    const Member& mem = ring->members_[m];
    if (!owns_tokens(mem.state)) continue;
    for (std::uint32_t i = 0; i < mem.vnodes; i++) ring->tokens_.push_back({token(mem.id, i), m});
  }
  std::sort(ring->tokens_.begin(), ring->tokens_.end());
  // How many members and zones own tokens bounds the walk of a preference list: asking
  // for more than there are must not walk the whole ring (12,288 tokens for 3 nodes).
  std::set<std::uint32_t> owners;
  for (const Token& t : ring->tokens_) owners.insert(t.member);
  std::set<std::string> zones;
  for (std::uint32_t m : owners) {
    const Member& mem = ring->members_[m];
    if (mem.zone.empty()) {
      ring->zone_count_++;
    } else if (zones.insert(mem.zone).second) {
      ring->zone_count_++;
    }
  }
  ring->owner_count_ = owners.size();
  return std::shared_ptr<const Ring>(std::move(ring));
}

int Ring::index_of(const NodeId& id) const {
  for (std::size_t i = 0; i < members_.size(); i++) {
    if (members_[i].id == id) return static_cast<int>(i);
  }
  return -1;
}

void Ring::preference_list(std::uint64_t position, std::size_t n, PreferenceList* out) const {
  ASSERT(n <= limits::replicas_max);
  out->size = 0;
  n = std::min(n, owner_count_);
  if (tokens_.empty() || n == 0) return;
  auto start = std::lower_bound(tokens_.begin(), tokens_.end(), Token{position, 0});
  std::size_t first = static_cast<std::size_t>(start - tokens_.begin()) % tokens_.size();
  auto contains = [out](std::uint32_t m) {
    for (std::size_t i = 0; i < out->size; i++) {
      if (out->nodes[i] == m) return true;
    }
    return false;
  };
  // Pass 1 takes distinct zones (members without a zone count as their own); pass 2
  // fills what is left with distinct members in ring order.
  // Pass 1 stops once every zone is taken.
  for (int pass = 0; pass < 2 && out->size < n; pass++) {
    std::size_t want = pass == 0 ? std::min(n, zone_count_) : n;
    for (std::size_t k = 0; k < tokens_.size() && out->size < want; k++) {
      std::uint32_t m = tokens_[(first + k) % tokens_.size()].member;
      if (contains(m)) continue;
      if (pass == 0 && !members_[m].zone.empty()) {
        bool zone_taken = false;
        for (std::size_t i = 0; i < out->size; i++) {
          zone_taken |= members_[out->nodes[i]].zone == members_[m].zone;
        }
        if (zone_taken) continue;
      }
      out->nodes[out->size++] = m;
    }
  }
}

PreferenceList Ring::preference_list_for_key(std::string_view key, std::size_t n) const {
  PreferenceList p;
  preference_list(key_position(key), n, &p);
  return p;
}

std::vector<double> Ring::primary_shares() const {
  std::vector<double> share(members_.size(), 0.0);
  if (tokens_.empty()) return share;
  const double full = 18446744073709551616.0;  // 2^64
  for (std::size_t i = 0; i < tokens_.size(); i++) {
    // The arc (previous token, this token] belongs to this token's member.
    std::uint64_t prev = tokens_[(i + tokens_.size() - 1) % tokens_.size()].position;
    std::uint64_t arc = tokens_[i].position - prev;  // wraps correctly for i == 0
    if (tokens_.size() == 1) {
      share[tokens_[i].member] = 1.0;
      break;
    }
    share[tokens_[i].member] += static_cast<double>(arc) / full;
  }
  return share;
}

}  // namespace ring
