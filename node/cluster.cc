#include "node/cluster.h"

#include <algorithm>

#include "node/limits.h"

namespace node {

namespace {
std::string id_key(const ring::NodeId& id) { return std::string(id.begin(), id.end()); }

bool same_ownership(const std::vector<MemberInfo>& a, const std::vector<MemberInfo>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); i++) {
    const ring::Member& x = a[i].member;
    const ring::Member& y = b[i].member;
    if (x.id != y.id || x.vnodes != y.vnodes || x.zone != y.zone || x.state != y.state ||
        x.addr != y.addr) {
      return false;
    }
  }
  return true;
}
}  // namespace

Cluster::Cluster(ring::NodeId self, std::string self_addr, std::uint32_t vnodes, std::string zone)
    : self_(self), self_addr_(std::move(self_addr)) {
  MemberInfo me;
  me.member.id = self;
  me.member.vnodes = vnodes;
  me.member.zone = std::move(zone);
  me.member.addr = self_addr_;
  me.self = true;
  update({me});
}

void Cluster::update(const std::vector<MemberInfo>& in) {
  std::vector<MemberInfo> members = in;
  std::sort(members.begin(), members.end(),
            [](const MemberInfo& a, const MemberInfo& b) { return a.member.id < b.member.id; });
  if (!ring_ || !same_ownership(members, members_)) {
    if (!build_rings(members)) return;  // keep the last good rings
  }
  members_ = std::move(members);
  by_id_.clear();
  for (std::uint32_t i = 0; i < members_.size(); i++) {
    by_id_[id_key(members_[i].member.id)] = replica_of(i);
  }
}

// The future ring is the current one with every change in progress done: joining
// members become owners, leaving ones give up their tokens. Same member order, so that
// indices into either ring name the same member.
bool Cluster::build_rings(const std::vector<MemberInfo>& members) {
  std::vector<ring::Member> now, later;
  bool changing = false;
  std::size_t owners = 0, future_owners = 0;
  for (const MemberInfo& m : members) {
    now.push_back(m.member);
    ring::Member f = m.member;
    if (f.state == ring::MemberState::joining) f.state = ring::MemberState::normal;
    if (f.state == ring::MemberState::leaving) f.state = ring::MemberState::left;
    changing |= f.state != m.member.state;
    owners += ring::owns_tokens(m.member.state);
    future_owners += ring::owns_tokens(f.state);
    later.push_back(std::move(f));
  }
  auto built = ring::Ring::build(std::move(now));
  if (!built.is_ok()) return false;
  std::shared_ptr<const ring::Ring> future;
  if (changing) {
    auto f = ring::Ring::build(std::move(later));
    if (!f.is_ok()) return false;
    future = f.value();
  }
  ring_ = built.value();
  future_ = std::move(future);
  owner_count_ = owners;
  future_owner_count_ = future_owners;
  return true;
}

Replica Cluster::replica_of(std::uint32_t m) const {
  Replica r;
  r.id = members_[m].member.id;
  r.addr = members_[m].member.addr;
  r.self = r.id == self_;
  r.alive = r.self || members_[m].alive;
  return r;
}

// Both rings list the same members in the same order, so replica_of serves either.
std::vector<Replica> Cluster::list_on(const ring::Ring& ring, std::string_view key,
                                      std::size_t n) const {
  if (n > ring::limits::replicas_max) n = ring::limits::replicas_max;
  ring::PreferenceList p = ring.preference_list_for_key(key, n);
  std::vector<Replica> out;
  for (std::uint32_t m : p.view()) out.push_back(replica_of(m));
  return out;
}

std::vector<Replica> Cluster::preference_list(std::string_view key, std::size_t n) const {
  return list_on(*ring_, key, n);
}

// The ring walk is the preference list, only longer: its first n entries are the owners.
std::vector<Replica> Cluster::walk(std::string_view key, std::size_t max) const {
  return preference_list(key, max);
}

std::vector<Replica> Cluster::future_preference_list(std::string_view key, std::size_t n) const {
  return list_on(future_ ? *future_ : *ring_, key, n);
}

std::vector<Replica> Cluster::pending(std::string_view key, std::size_t n) const {
  std::vector<Replica> out;
  if (!future_) return out;
  if (n > ring::limits::replicas_max) n = ring::limits::replicas_max;
  ring::PreferenceList now = ring_->preference_list_for_key(key, n);
  ring::PreferenceList later = future_->preference_list_for_key(key, n);
  for (std::uint32_t m : later.view()) {
    auto current = now.view();
    if (std::find(current.begin(), current.end(), m) == current.end()) out.push_back(replica_of(m));
  }
  return out;
}

const Replica* Cluster::find(const ring::NodeId& id) const {
  auto it = by_id_.find(id_key(id));
  return it == by_id_.end() ? nullptr : &it->second;
}

bool Cluster::alive(const ring::NodeId& id) const {
  const Replica* r = find(id);
  return r != nullptr && r->alive;
}

void Cluster::set_unheard(std::size_t remembered_unheard, std::uint64_t now_ms) {
  if (!learning_started_) {
    learning_started_ = true;
    learning_start_ms_ = now_ms;
  }
  bool learning = now_ms - learning_start_ms_ < limits::ring_learn_timeout_ms;
  unheard_ = learning ? remembered_unheard : 0;
}

Status Cluster::check_ring_complete() const {
  if (unheard_ == 0) return Status::ok();
  return Status::unavailable("ring_incomplete: " + std::to_string(unheard_) +
                             " known members not heard from since this node started");
}

}  // namespace node
