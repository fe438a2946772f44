// Cluster is this node's view of the cluster: the current ring (rebuilt when membership
// changes) and each member's liveness (a local opinion from gossip that never changes
// ownership). The coordinator asks it where a key lives.
// While a member is joining or leaving there is also a future ring: the one that will
// hold once every change in progress is done (joining members own their tokens, leaving
// ones do not). Reads use the current ring only; writes also go to the members that
// the future ring adds to a key's preference list (pending(), as Cassandra's pending
// ranges), so that a node streaming its new ranges misses no write made meanwhile.
// Thread: the loop thread only. The ring snapshot is immutable and may be handed to
// other threads through ring().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "ring/ring.h"

namespace node {

struct Replica {
  ring::NodeId id{};
  std::string addr;  // HTTP "ip:port"
  bool alive = true;
  bool self = false;
};

struct MemberInfo {
  ring::Member member;  // id, vnodes, zone, state, addr
  bool alive = true;
  bool self = false;
};

class Cluster {
 public:
  Cluster(ring::NodeId self, std::string self_addr, std::uint32_t vnodes, std::string zone);

  // Replaces the member list. The ring is rebuilt only when ownership could change
  // (ids, vnodes, zones, states, addresses); liveness alone just updates flags.
  void update(const std::vector<MemberInfo>& members);

  const ring::NodeId& self() const { return self_; }
  const std::string& self_addr() const { return self_addr_; }
  std::shared_ptr<const ring::Ring> ring() const { return ring_; }
  // Members that own tokens now (normal and leaving ones): how many replicas there can be.
  std::size_t member_count() const { return owner_count_; }
  // The ring once the joins and leaves in progress are done; the current ring when none is.
  std::shared_ptr<const ring::Ring> future_ring() const { return future_ ? future_ : ring_; }
  bool changing() const { return future_ != nullptr; }
  std::size_t future_member_count() const { return future_owner_count_; }

  // The first n distinct members clockwise from the key (its preference list).
  std::vector<Replica> preference_list(std::string_view key, std::size_t n) const;
  // The preference list followed by further distinct members in ring order: where
  // sloppy quorum looks for stand-ins. At most `max` entries.
  std::vector<Replica> walk(std::string_view key, std::size_t max) const;
  // Members of the key's future preference list of n that are not on its current one:
  // they get every write too while they take the key over. Empty when nothing changes.
  std::vector<Replica> pending(std::string_view key, std::size_t n) const;
  // The key's preference list in the future ring.
  std::vector<Replica> future_preference_list(std::string_view key, std::size_t n) const;
  // A member's HTTP address and liveness; nullptr when unknown.
  const Replica* find(const ring::NodeId& id) const;
  bool alive(const ring::NodeId& id) const;

  // Members remembered from this node's last life (saved peers: id and address only)
  // that gossip has not described yet, so they are not in the ring. Until they are,
  // preference lists, N and W would come from too few members: a node restarted into a
  // five-node cluster would see a ring of one, acknowledge writes at W=1 and keep them
  // on a node that does not own them. Counted during limits::ring_learn_timeout_ms from
  // the first call (the start); past that, a member no live peer knows of is gone.
  void set_unheard(std::size_t remembered_unheard, std::uint64_t now_ms);
  // ok, or unavailable (503) while the ring lacks remembered members.
  Status check_ring_complete() const;

 private:
  Replica replica_of(std::uint32_t member) const;
  std::vector<Replica> list_on(const ring::Ring& ring, std::string_view key, std::size_t n) const;
  bool build_rings(const std::vector<MemberInfo>& members);
  ring::NodeId self_;
  std::string self_addr_;
  std::shared_ptr<const ring::Ring> ring_;
  std::shared_ptr<const ring::Ring> future_;  // null unless a member joins or leaves
  std::size_t owner_count_ = 0, future_owner_count_ = 0;
  std::vector<MemberInfo> members_;  // same order as ring_->members()
  std::unordered_map<std::string, Replica> by_id_;  // key: raw id bytes
  std::size_t unheard_ = 0;
  bool learning_started_ = false;
  std::uint64_t learning_start_ms_ = 0;
};

}  // namespace node
