#include "gossip/membership.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <utility>

#include "common/assert.h"

namespace gossip {
namespace {

// Fields whose change moves data on the ring (or where clients reach a node).
bool is_ring_field(Field f) {
  return f == Field::http_addr || f == Field::status || f == Field::vnodes || f == Field::zone;
}

bool same_value(const EndpointValues& a, const EndpointValues& b, Field f) {
  switch (f) {
    case Field::heartbeat: return true;  // no value
    case Field::gossip_addr: return a.gossip_addr == b.gossip_addr;
    case Field::http_addr: return a.app.http_addr == b.app.http_addr;
    case Field::status: return a.app.status == b.app.status;
    case Field::vnodes: return a.app.vnodes == b.app.vnodes;
    case Field::zone: return a.app.zone == b.app.zone;
    case Field::disk_used_bytes: return a.app.disk_used_bytes == b.app.disk_used_bytes;
    case Field::key_count: return a.app.key_count == b.app.key_count;
  }
  UNREACHABLE();
}

void copy_value(EndpointValues& to, const EndpointValues& from, Field f) {
  switch (f) {
    case Field::heartbeat: return;
    case Field::gossip_addr: to.gossip_addr = from.gossip_addr; return;
    case Field::http_addr: to.app.http_addr = from.app.http_addr; return;
    case Field::status: to.app.status = from.app.status; return;
    case Field::vnodes: to.app.vnodes = from.app.vnodes; return;
    case Field::zone: to.app.zone = from.app.zone; return;
    case Field::disk_used_bytes: to.app.disk_used_bytes = from.app.disk_used_bytes; return;
    case Field::key_count: to.app.key_count = from.app.key_count; return;
  }
  UNREACHABLE();
}

bool ring_fields_differ(const EndpointValues& a, const EndpointValues& b) {
  for (std::size_t i = 0; i < field_count; i++) {
    auto f = static_cast<Field>(i);
    if (is_ring_field(f) && !same_value(a, b, f)) return true;
  }
  return false;
}

// The next id in big-endian order. REQUIRES: id is not all 0xff.
NodeId next_id(NodeId id) {
  for (std::size_t i = id.size(); i-- > 0;) {
    if (++id[i] != 0) return id;
  }
  UNREACHABLE();
}

// Packs entries into at most limits::reply_datagrams_max datagrams of one type.
class Packer {
 public:
  Packer(MessageType type, const NodeId& sender, const MacKey& key)
      : type_(type), sender_(sender), key_(key) {
    datagrams_.reserve(limits::reply_datagrams_max);  // builders point into it
  }

  // `add(builder)` writes one entry and says whether it fit. False: the budget is spent.
  template <typename Add>
  bool add(Add add) {
    if (builder_ && add(*builder_)) return true;
    if (builder_) builder_->finish(key_);
    builder_.reset();
    if (datagrams_.size() == limits::reply_datagrams_max) return false;
    builder_.emplace(type_, sender_, &datagrams_.emplace_back());
    bool ok = add(*builder_);
    ASSERT(ok);  // limits.h: the largest entry fits an empty datagram
    return true;
  }
  std::vector<std::vector<std::uint8_t>> finish() {
    if (builder_) builder_->finish(key_);
    builder_.reset();
    return std::move(datagrams_);
  }

 private:
  MessageType type_;
  NodeId sender_;
  const MacKey& key_;
  std::vector<std::vector<std::uint8_t>> datagrams_;
  std::optional<DatagramBuilder> builder_;
};

// Which fields are newer than `since`: all of them when since == 0.
std::uint8_t fields_since(const std::array<std::uint64_t, field_count>& versions,
                          std::uint64_t since) {
  std::uint8_t mask = 0;
  for (std::size_t i = 0; i < field_count; i++) {
    if (versions[i] > since) mask |= field_bit(static_cast<Field>(i));
  }
  return mask;
}

// How far ahead a walk over endpoints asks for their cache lines.
constexpr std::size_t prefetch_ahead = 8;

std::size_t hash_id(const NodeId& id) {
  std::uint64_t h = id_word(id, 0) ^ (id_word(id, 1) * 0x9e3779b97f4a7c15ull);
  return static_cast<std::size_t>((h ^ (h >> 32)) * 0xbf58476d1ce4e5b9ull >> 16);
}

}  // namespace

Status check_config(const Config& config, const AppState& self_state) {
  auto bad = [](std::string what) { return Status::invalid("gossip: " + std::move(what)); };
  if (config.generation < 1) return bad("generation must be >= 1");
  if (config.self_addr.empty() || !is_wire_string(config.self_addr, limits::addr_bytes_max)) {
    return bad("address must be 1 to " + std::to_string(limits::addr_bytes_max) +
               " printable characters");
  }
  if (!is_wire_string(self_state.http_addr, limits::addr_bytes_max)) {
    return bad("http address must be at most " + std::to_string(limits::addr_bytes_max) +
               " printable characters");
  }
  if (!is_wire_string(self_state.zone, limits::zone_bytes_max)) {
    return bad("zone must be at most " + std::to_string(limits::zone_bytes_max) +
               " printable characters");
  }
  if (config.interval_ms < limits::interval_ms_min ||
      config.interval_ms > limits::interval_ms_max) {
    return bad("interval must be within [" + std::to_string(limits::interval_ms_min) + ", " +
               std::to_string(limits::interval_ms_max) + "] ms");
  }
  if (!(config.phi_convict > 0 && config.phi_convict <= 300)) {
    return bad("phi_convict must be within (0, 300]");
  }
  return Status::ok();
}

Membership::Membership(Config config, AppState self_state)
    : config_(std::move(config)),
      mac_(config_.secret),
      model_(config_.interval_ms, config_.phi_convict) {
  ASSERT(check_config(config_, self_state).is_ok());
  self_slot_ = insert(config_.self);
  ASSERT(self_slot_ != no_slot);
  digests_[self_slot_].generation = config_.generation;
  values_[self_slot_].gossip_addr = config_.self_addr;
  values_[self_slot_].app = std::move(self_state);
  for (std::size_t i = 0; i < field_count; i++) bump_own(static_cast<Field>(i));
  heard_count_ = 1;
}

// ---- Lookup ------------------------------------------------------------------------------

std::size_t Membership::lower_bound(const NodeId& id) const {
  auto it = std::lower_bound(index_.begin(), index_.end(), id,
                             [](const IndexEntry& e, const NodeId& x) { return id_less(e.id, x); });
  return static_cast<std::size_t>(it - index_.begin());
}

std::uint32_t Membership::find(const NodeId& id) const {
  if (table_.empty()) return no_slot;
  std::size_t mask = table_.size() - 1;
  for (std::size_t b = hash_id(id) & mask; table_[b] != 0; b = (b + 1) & mask) {
    std::uint32_t slot = table_[b] - 1;
    if (compare_ids(digests_[slot].id, id) == 0) return slot;
  }
  return no_slot;
}

std::uint32_t Membership::insert(const NodeId& id) {
  if (digests_.size() == limits::members_max) return no_slot;
  std::size_t i = lower_bound(id);
  ASSERT(i == index_.size() || compare_ids(index_[i].id, id) != 0);
  auto slot = static_cast<std::uint32_t>(digests_.size());
  digests_.push_back(Digest{.id = id});
  endpoints_.emplace_back();
  values_.emplace_back();
  index_.insert(index_.begin() + static_cast<std::ptrdiff_t>(i), IndexEntry{id, slot});
  // At most half full, so that a probe ends within a few buckets.
  if (table_.size() < 2 * digests_.size()) {
    rebuild_table(std::max<std::size_t>(64, 4 * digests_.size()));
  } else {
    std::size_t mask = table_.size() - 1, b = hash_id(id) & mask;
    while (table_[b] != 0) b = (b + 1) & mask;
    table_[b] = slot + 1;
  }
  return slot;
}

void Membership::rebuild_table(std::size_t buckets) {
  std::size_t size = 1;
  while (size < buckets) size *= 2;
  table_.assign(size, 0);
  for (std::uint32_t slot = 0; slot < digests_.size(); slot++) {
    std::size_t b = hash_id(digests_[slot].id) & (size - 1);
    while (table_[b] != 0) b = (b + 1) & (size - 1);
    table_[b] = slot + 1;
  }
}

std::uint64_t Membership::generation_of(const NodeId& id) const {
  std::uint32_t slot = find(id);
  return slot == no_slot ? 0 : digests_[slot].generation;
}

bool Membership::is_alive(const NodeId& id, std::uint64_t now_ms) const {
  std::uint32_t slot = find(id);
  if (slot == no_slot || digests_[slot].generation == 0) return false;
  return slot == self_slot_ || endpoints_[slot].arrivals.alive(now_ms);
}

// ---- Our own state -----------------------------------------------------------------------

void Membership::bump_own(Field f) {
  endpoints_[self_slot_].versions[static_cast<std::size_t>(f)] = ++own_version_;
  digests_[self_slot_].max_version = own_version_;
}

void Membership::set_app_state(const AppState& s) {
  ASSERT(is_wire_string(s.http_addr, limits::addr_bytes_max));
  ASSERT(is_wire_string(s.zone, limits::zone_bytes_max));
  EndpointValues& self = values_[self_slot_];
  EndpointValues next = self;
  next.app = s;
  for (std::size_t i = 0; i < field_count; i++) {
    auto f = static_cast<Field>(i);
    if (same_value(self, next, f)) continue;
    if (is_ring_field(f)) ring_version_++;
    copy_value(self, next, f);
    bump_own(f);
  }
}

bool Membership::add_known(const NodeId& id, std::string gossip_addr) {
  if (gossip_addr.empty() || !is_wire_string(gossip_addr, limits::addr_bytes_max)) return false;
  if (find(id) != no_slot) return false;  // ourselves included
  std::uint32_t slot = insert(id);
  if (slot == no_slot) {
    counters_.members_refused++;
    return false;
  }
  values_[slot].gossip_addr = std::move(gossip_addr);
  return true;
}

Status Membership::announce_removed(const NodeId& id) {
  std::uint32_t slot = find(id);
  if (slot == self_slot_) return Status::invalid("a node cannot remove itself");
  if (slot == no_slot || digests_[slot].generation == 0) {
    return Status::not_found("unknown_node: not a member heard of");
  }
  Digest& digest = digests_[slot];
  Endpoint& e = endpoints_[slot];
  bool changed = values_[slot].app.status != NodeStatus::removed;
  digest.generation += limits::removal_generation_step;
  // A new generation starts its versions over: every field 1..field_count, so that
  // the state is full (all mask bits) and any peer takes it whole.
  for (std::size_t i = 0; i < field_count; i++) e.versions[i] = i + 1;
  digest.max_version = field_count;
  values_[slot].app.status = NodeStatus::removed;
  if (changed) ring_version_++;
  return Status::ok();
}

// ---- Views -------------------------------------------------------------------------------

MemberView Membership::view(std::uint32_t slot, std::uint64_t now_ms) const {
  const Digest& d = digests_[slot];
  const Endpoint& e = endpoints_[slot];
  const EndpointValues& v = values_[slot];
  bool self = slot == self_slot_;
  bool heard = d.generation >= 1;
  std::uint64_t last_heard_ms = 0;
  if (self) last_heard_ms = now_ms;
  if (!self && heard) last_heard_ms = e.arrivals.last_arrival_ms();
  return MemberView{
      .id = d.id,
      .gossip_addr = v.gossip_addr,
      .generation = d.generation,
      .heartbeat = e.versions[static_cast<std::size_t>(Field::heartbeat)],
      .app = v.app,
      .self = self,
      .alive = self || (heard && e.arrivals.alive(now_ms)),
      .phi = self || !heard ? 0.0 : e.arrivals.phi(now_ms, model_),
      .last_heard_ms = last_heard_ms,
  };
}

std::vector<MemberView> Membership::members(std::uint64_t now_ms) const {
  std::vector<MemberView> out;
  out.reserve(index_.size());
  for (const IndexEntry& entry : index_) out.push_back(view(entry.slot, now_ms));
  return out;
}

std::optional<MemberView> Membership::member(const NodeId& id, std::uint64_t now_ms) const {
  std::uint32_t slot = find(id);
  if (slot == no_slot) return std::nullopt;
  return view(slot, now_ms);
}

// ---- Gossip rounds -----------------------------------------------------------------------

void Membership::on_tick(std::uint64_t now_ms, Rng& rng, Outbox& out) {
  bump_own(Field::heartbeat);

  std::vector<std::string> targets;
  choose_targets(now_ms, rng, &targets);
  if (targets.empty()) return;
  std::vector<std::vector<std::uint8_t>> syns;
  encode_syns(&syns);
  for (const std::string& addr : targets) {
    for (const auto& bytes : syns) send_bytes(addr, bytes, out);
  }
}

// Cassandra's choice: random live peers, then maybe one we believe down (more likely the
// more are down, so that a healed partition is noticed within a round or two), then
// maybe a seed (always when no peer is live, so that a lone node finds the cluster).
void Membership::choose_targets(std::uint64_t now_ms, Rng& rng, std::vector<std::string>* targets) {
  live_.clear();
  down_.clear();
  for (std::uint32_t slot = 0; slot < endpoints_.size(); slot++) {
    const EndpointValues& v = values_[slot];
    if (slot == self_slot_ || v.gossip_addr.empty() || v.gossip_addr == config_.self_addr) continue;
    bool heard = digests_[slot].generation >= 1;
    NodeStatus status = v.app.status;
    if (heard && (status == NodeStatus::left || status == NodeStatus::removed)) continue;
    (heard && endpoints_[slot].arrivals.alive(now_ms) ? live_ : down_).push_back(slot);
  }
  auto add = [&](const std::string& addr) {
    if (std::find(targets->begin(), targets->end(), addr) == targets->end())
      targets->push_back(addr);
  };

  std::size_t fanout = std::min<std::size_t>(limits::live_peers_per_round, live_.size());
  for (std::size_t i = 0; i < fanout; i++) {  // a partial Fisher-Yates shuffle
    std::size_t j = i + rng.uniform(live_.size() - i);
    std::swap(live_[i], live_[j]);
    add(values_[live_[i]].gossip_addr);
  }
  double live = static_cast<double>(live_.size()), down = static_cast<double>(down_.size());
  if (!down_.empty() && rng.chance(down / (live + 1))) {
    add(values_[down_[rng.uniform(down_.size())]].gossip_addr);
  }

  std::vector<const std::string*> seeds;
  for (const std::string& s : config_.seeds) {
    if (s != config_.self_addr) seeds.push_back(&s);
  }
  if (seeds.empty()) return;
  bool to_seed = std::any_of(targets->begin(), targets->end(), [&](const std::string& t) {
    return std::any_of(seeds.begin(), seeds.end(), [&](const std::string* s) { return *s == t; });
  });
  bool send_seed = live_.empty();
  if (!send_seed && (!to_seed || live_.size() < seeds.size())) {
    send_seed = rng.chance(static_cast<double>(seeds.size()) / (live + down));
  }
  if (send_seed) add(*seeds[rng.uniform(seeds.size())]);
}

// Our whole digest, in id order, split into SYN datagrams that each cover an id range:
// [0, last id of the first], [that + 1, last id of the second], ..., [.., ff..ff].
void Membership::encode_syns(std::vector<std::vector<std::uint8_t>>* datagrams) const {
  NodeId lo, hi;
  lo.fill(0x00);
  std::optional<DatagramBuilder> b;
  b.emplace(MessageType::syn, config_.self, &datagrams->emplace_back());
  for (const IndexEntry& entry : index_) {
    Digest d = digests_[entry.slot];
    // Claimed by another process whose address we do not know yet: a digest of ours at
    // version 0 makes the peers send the state they hold under our id whole, address
    // field included.
    if (entry.slot == self_slot_ && self_claim_ && self_claim_->addr.empty()) d.max_version = 0;
    if (b->add_digest(d)) {
      hi = d.id;
      continue;
    }
    b->finish(mac_, lo, hi);
    lo = next_id(hi);
    // emplace_back may move the vectors, but the finished one is no longer written to.
    b.emplace(MessageType::syn, config_.self, &datagrams->emplace_back());
    bool ok = b->add_digest(d);
    ASSERT(ok);
    hi = d.id;
  }
  hi.fill(0xff);
  b->finish(mac_, lo, hi);
  ASSERT(datagrams->size() <= limits::syn_datagrams_max);
}

void Membership::send_bytes(std::string_view addr, std::vector<std::uint8_t> bytes, Outbox& out) {
  counters_.datagrams_out++;
  out.push_back(Datagram{std::string(addr), std::move(bytes)});
}

// ---- Receiving ---------------------------------------------------------------------------

void Membership::on_datagram(std::uint64_t now_ms, std::string_view from_addr,
                             std::span<const std::uint8_t> bytes, Outbox& out) {
  counters_.datagrams_in++;
  DropReason reason = DropReason::none;
  if (Status s = decode_datagram(bytes, mac_, &scratch_, &reason); !s.is_ok()) {
    switch (reason) {
      case DropReason::oversize: counters_.dropped_oversize++; break;
      case DropReason::bad_mac: counters_.dropped_bad_mac++; break;
      case DropReason::bad_version: counters_.dropped_bad_version++; break;
      case DropReason::malformed:
      case DropReason::none: counters_.dropped_malformed++; break;
    }
    return;
  }
  if (scratch_.sender == config_.self) {
    counters_.dropped_from_self++;
    // Our id from another address: a second process under our id (a copied data dir)
    // counts us among its peers. A datagram of our own looped back is not that.
    if (from_addr != config_.self_addr) note_self_claim(digests_[self_slot_].generation, from_addr);
    return;
  }
  note_sender(now_ms, scratch_.sender, from_addr);
  // Which entries go first when a reply cannot hold them all: rotated by bytes of the
  // MAC, which are as good as random, so that no member is always the one left out.
  std::uint64_t rotation = 0;
  std::memcpy(&rotation, bytes.data() + bytes.size() - limits::mac_bytes, sizeof rotation);
  switch (scratch_.type) {
    case MessageType::syn: return on_syn(from_addr, scratch_, rotation, out);
    case MessageType::ack: return on_ack(now_ms, from_addr, scratch_, rotation, out);
    case MessageType::ack2: apply_deltas(now_ms, scratch_.deltas); return;
  }
}

void Membership::on_syn(std::string_view from, const Message& m, std::uint64_t rotation,
                        Outbox& out) {
  requests_.clear();
  sends_.clear();
  // Walk our members in [lo, hi] and the sender's digests side by side (both ascend).
  std::size_t i = lower_bound(m.range_lo), j = 0;
  for (std::size_t k = i; k < std::min(i + prefetch_ahead, index_.size()); k++) {
    __builtin_prefetch(&digests_[index_[k].slot]);
  }
  for (;;) {
    if (i + prefetch_ahead < index_.size())
      __builtin_prefetch(&digests_[index_[i + prefetch_ahead].slot]);
    bool has_local = i < index_.size() && compare_ids(index_[i].id, m.range_hi) <= 0;
    bool has_remote = j < m.digests.size();
    if (!has_local && !has_remote) break;
    int c = !has_local ? 1 : !has_remote ? -1 : compare_ids(index_[i].id, m.digests[j].id);
    if (c < 0) {  // the sender does not know this member
      std::uint32_t slot = index_[i++].slot;
      if (digests_[slot].generation >= 1) sends_.push_back({slot, 0});
      continue;
    }
    const Digest& r = m.digests[j++];
    if (c > 0) {  // we do not know this member
      if (r.generation >= 1) requests_.push_back({r.id, 0, 0});
      continue;
    }
    std::uint32_t slot = index_[i++].slot;
    const Digest& e = digests_[slot];
    if (slot == self_slot_ && (r.generation > e.generation ||
                               (r.generation == e.generation && r.max_version > e.max_version))) {
      // The sender holds a state of ours we never made. Ask for it whole: its address
      // field names the other process.
      note_self_claim(r.generation, "");
      requests_.push_back({config_.self, r.generation, 0});
      continue;
    }
    if (e.generation > r.generation) {
      sends_.push_back({slot, 0});
    } else if (e.generation < r.generation) {
      if (slot != self_slot_) requests_.push_back(e);
    } else if (e.max_version > r.max_version) {
      sends_.push_back({slot, r.max_version});
    } else if (e.max_version < r.max_version && slot != self_slot_) {
      requests_.push_back(e);
    }
  }
  // A sender at another address than the one we hold for its id, while that one sends
  // too: a second process under the id. It gets the state we hold under its id whole,
  // whose address field is not its own, and so hears of the other (apply_delta).
  std::uint32_t sender = find(m.sender);
  if (auto w = twin_watch_.find(sender);
      w != twin_watch_.end() && w->second.other_addr == from && w->second.held_last_ms >= w->second.other_first_ms) {
    sends_.push_back({sender, 0});
  }
  send_replies(MessageType::ack, from, requests_, sends_, rotation, out);
}

void Membership::on_ack(std::uint64_t now_ms, std::string_view from, const Message& m,
                        std::uint64_t rotation, Outbox& out) {
  apply_deltas(now_ms, m.deltas);
  sends_.clear();
  for (const Digest& r : m.digests) {
    std::uint32_t slot = find(r.id);
    if (slot == no_slot) continue;
    const Digest& e = digests_[slot];
    if (e.generation == 0 || e.generation < r.generation) continue;
    sends_.push_back({slot, e.generation == r.generation ? r.max_version : 0});
  }
  requests_.clear();
  send_replies(MessageType::ack2, from, requests_, sends_, rotation, out);
}

// Requests first (they are small, and each brings a whole delta back), then deltas from
// a rotated start, until limits::reply_datagrams_max datagrams are full.
void Membership::send_replies(MessageType type, std::string_view to,
                              const std::vector<Digest>& requests, const std::vector<Send>& sends,
                              std::uint64_t rotation, Outbox& out) {
  if (requests.empty() && sends.empty()) return;
  Packer packer(type, config_.self, mac_);
  bool room = true;
  for (std::size_t k = 0; room && k < requests.size(); k++) {
    room = packer.add([&](DatagramBuilder& b) { return b.add_digest(requests[k]); });
  }
  for (std::size_t k = 0; k < std::min(prefetch_ahead, sends.size()); k++) {
    prefetch(sends[(k + rotation) % sends.size()].slot);
  }
  for (std::size_t k = 0; room && k < sends.size(); k++) {
    if (k + prefetch_ahead < sends.size())
      prefetch(sends[(k + prefetch_ahead + rotation) % sends.size()].slot);
    const Send& s = sends[(k + rotation) % sends.size()];
    const Digest& d = digests_[s.slot];
    const Endpoint& e = endpoints_[s.slot];
    std::uint8_t mask = fields_since(e.versions, s.since_version);
    if (mask == 0) continue;
    room = packer.add([&](DatagramBuilder& b) {
      return b.add_delta(d.id, d.generation, mask, e.versions, values_[s.slot]);
    });
  }
  for (auto& bytes : packer.finish()) send_bytes(to, std::move(bytes), out);
}

// ---- Applying what peers tell us ---------------------------------------------------------

// With a thousand members, the endpoints a datagram names are rarely in the cache: this
// pass asks for the lines it will touch before any is needed, so that the misses overlap.
void Membership::prefetch(std::uint32_t slot) const {
  const char* p = reinterpret_cast<const char*>(&endpoints_[slot]);
  __builtin_prefetch(p);
  __builtin_prefetch(p + 64);
  __builtin_prefetch(&digests_[slot]);
}

void Membership::apply_deltas(std::uint64_t now_ms, const std::vector<Delta>& deltas) {
  if (!table_.empty()) {
    std::size_t mask = table_.size() - 1;
    for (const Delta& d : deltas) __builtin_prefetch(&table_[hash_id(d.id) & mask]);
    for (const Delta& d : deltas) {
      std::uint32_t first = table_[hash_id(d.id) & mask];  // usually the one: half full at most
      if (first != 0) prefetch(first - 1);
    }
  }
  for (const Delta& d : deltas) apply_delta(now_ms, d);
}

void Membership::apply_delta(std::uint64_t now_ms, const Delta& d) {
  std::uint32_t slot = find(d.id);
  if (slot == self_slot_) {
    // We are the only authority on our own state, except for one word: a removal
    // announced on our behalf (announce_removed) under a higher generation.
    const std::uint64_t ours = digests_[slot].generation;
    if (d.generation > ours && d.has(Field::status) && d.values.app.status == NodeStatus::removed) {
      removed_by_peer_ = true;
      return;
    }
    std::uint64_t newest = *std::max_element(d.versions.begin(), d.versions.end());
    bool named = d.has(Field::gossip_addr) && d.values.gossip_addr != config_.self_addr;
    // Our generation or a later one at another address, or a version we never made.
    if (d.generation > ours || (d.generation == ours && (newest > own_version_ || named))) {
      note_self_claim(d.generation, named ? std::string_view(d.values.gossip_addr) : std::string_view());
    }
    return;
  }
  if (slot == no_slot) {
    if (!d.full()) return;  // a partial state cannot start a member; we request it whole
    slot = insert(d.id);
    if (slot == no_slot) {
      counters_.members_refused++;
      return;
    }
  }
  std::uint64_t generation = digests_[slot].generation;
  if (d.generation < generation) return;  // an earlier life of the member
  if (d.generation == generation) return update_fields(now_ms, slot, d);
  if (!d.full()) return;  // a new generation replaces everything, so it must come whole
  replace_state(now_ms, slot, d);
}

void Membership::note_self_claim(std::uint64_t generation, std::string_view addr) {
  if (!self_claim_) self_claim_ = SelfClaim{generation, std::string(addr)};
  if (generation > self_claim_->generation) self_claim_->generation = generation;
  if (!addr.empty()) self_claim_->addr = std::string(addr);
}

void Membership::take_generation(std::uint64_t g) {
  ASSERT(g > digests_[self_slot_].generation);
  digests_[self_slot_].generation = g;
  bump_own(Field::heartbeat);
  self_claim_.reset();
}

void Membership::note_sender(std::uint64_t now_ms, const NodeId& id, std::string_view from) {
  std::uint32_t slot = find(id);
  if (slot == no_slot || slot == self_slot_) return;
  const std::string& held = values_[slot].gossip_addr;
  if (held.empty()) return;
  auto it = twin_watch_.find(slot);
  if (from == held) {
    if (it != twin_watch_.end()) it->second.held_last_ms = now_ms;
    return;
  }
  TwinWatch& w = it != twin_watch_.end() ? it->second : twin_watch_[slot];  // one per member at most
  if (w.other_addr != from) w = TwinWatch{std::string(from), now_ms, now_ms, w.held_last_ms};
  w.other_last_ms = now_ms;
}

std::vector<Twin> Membership::twins(std::uint64_t now_ms) const {
  std::vector<Twin> out;
  for (const auto& [slot, w] : twin_watch_) {
    const std::string& held = values_[slot].gossip_addr;
    bool both_recent = w.other_last_ms + limits::twin_window_ms >= now_ms &&
                       w.held_last_ms + limits::twin_window_ms >= now_ms &&
                       w.held_last_ms >= w.other_first_ms;
    if (w.other_addr == held || !both_recent) continue;
    if (w.other_last_ms - w.other_first_ms < limits::twin_persist_ms) continue;
    out.push_back({digests_[slot].id, held, w.other_addr});
  }
  std::sort(out.begin(), out.end(), [](const Twin& a, const Twin& b) { return compare_ids(a.id, b.id) < 0; });
  return out;
}

void Membership::replace_state(std::uint64_t now_ms, std::uint32_t slot, const Delta& d) {
  Digest& digest = digests_[slot];
  Endpoint& e = endpoints_[slot];
  bool joined = digest.generation == 0;
  bool ring_changed = joined || ring_fields_differ(values_[slot], d.values);
  digest.generation = d.generation;
  digest.max_version = *std::max_element(d.versions.begin(), d.versions.end());
  e.versions = d.versions;
  values_[slot] = d.values;
  e.arrivals.reset(now_ms, model_);  // a new generation: it restarted, so it is alive now
  if (joined) heard_count_++;
  if (ring_changed) ring_version_++;
}

void Membership::update_fields(std::uint64_t now_ms, std::uint32_t slot, const Delta& d) {
  Digest& digest = digests_[slot];
  Endpoint& e = endpoints_[slot];
  bool ring_changed = false, beat = false;
  for (std::size_t i = 0; i < field_count; i++) {
    auto f = static_cast<Field>(i);
    if (!d.has(f) || d.versions[i] <= e.versions[i]) continue;
    if (is_ring_field(f) && !same_value(values_[slot], d.values, f)) ring_changed = true;
    copy_value(values_[slot], d.values, f);
    e.versions[i] = d.versions[i];
    digest.max_version = std::max(digest.max_version, d.versions[i]);
    if (f == Field::heartbeat) beat = true;
  }
  if (beat) e.arrivals.on_heartbeat(now_ms, model_);
  if (ring_changed) ring_version_++;
}

}  // namespace gossip
