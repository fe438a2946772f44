// Cluster membership: who is in the cluster, what each member says about itself, and
// whether we currently believe it alive. A deterministic state machine: no sockets, no
// clock reads, no threads; time and randomness come in as arguments, datagrams go out
// through an Outbox. gossip/udp_transport.h drives it over UDP; tests/sim/ drives a
// thousand of them in one process.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/rng.h"
#include "common/status.h"
#include "gossip/failure_detector.h"
#include "gossip/limits.h"
#include "gossip/types.h"
#include "gossip/wire.h"

namespace gossip {

using common::Rng;

struct MemberView {
  NodeId id{};
  std::string gossip_addr;
  // 0 for a member known only by address (add_known) and not heard from yet: its `app`
  // is empty and it is not alive.
  std::uint64_t generation = 0;
  std::uint64_t heartbeat = 0;  // the version of its last heartbeat: grows every round
  AppState app;
  bool self = false;
  bool alive = true;  // phi < phi_convict; always true for self
  double phi = 0;
  std::uint64_t last_heard_ms = 0;  // when its heartbeat last advanced (or we learned it)
};

// Two endpoints that claim one member id, both sending (Membership::twins()).
struct Twin {
  NodeId id{};
  std::string addr;        // the gossip address we hold for the member
  std::string other_addr;  // the other one that sends under its id
};

// Evidence that another live process uses our own id: a peer holds a state of ours that
// we never made (our generation with a version past our own counter, or a higher
// generation that is no removal).
struct SelfClaim {
  std::uint64_t generation = 0;  // the generation it holds of us
  std::string addr;              // the other process's gossip address, when a delta said it
};

struct Config {
  NodeId self{};
  std::string self_addr;           // "ip:port" of our UDP socket, as peers reach it
  std::uint64_t generation = 1;    // bumped by the node at every start; >= 1
  std::vector<std::string> seeds;  // "ip:port"; our own address may appear, it is skipped
  std::string secret;              // HMAC-SHA256 key; empty only when insecure
  std::uint32_t interval_ms = 1000;
  double phi_convict = 8.0;
};

struct Datagram {
  std::string addr;  // "ip:port"
  std::vector<std::uint8_t> bytes;
};
using Outbox = std::vector<Datagram>;

// Whether Membership can run with these: generation >= 1; self_addr not empty; self_addr,
// http_addr and zone is_wire_string() within their limits; interval_ms within
// [limits::interval_ms_min, limits::interval_ms_max]; 0 < phi_convict <= 300. The error
// names the setting and its limit. (Seeds are only compared with and sent to: a bad one
// just never answers.)
Status check_config(const Config& config, const AppState& self_state);

// Membership keeps one endpoint state per member (itself included) and gossips it
// Scuttlebutt-style, as Cassandra does. Each change to one of our fields, the heartbeat
// included, takes the next number of a counter that starts over with each generation;
// a member's digest is (id, generation, highest version it holds of that member).
// - on_tick (every interval_ms): bump our heartbeat; send a SYN (our whole digest, split
//   by id range over as many datagrams as it takes) to limits::live_peers_per_round (3)
//   random live peers, with probability down/(live+1) to one peer we believe down, and
//   now and then to a seed (always when none is live).
// - a SYN's receiver answers with an ACK: the deltas it holds newer (including members
//   in the SYN's id range the sender lacks) and requests for what it lacks.
// - the ACK's receiver answers with an ACK2 holding the requested deltas.
// A higher generation replaces a member's whole state; otherwise each field is taken
// if its version is newer. Replies are capped at limits::reply_datagrams_max datagrams;
// what does not fit goes in a later round.
// Liveness: a heartbeat newer than the one we held is an arrival in that member's
// ArrivalWindow, and the member is alive while phi < phi_convict. Liveness is our own
// opinion and never removes a member; only its status (left, removed) says it is gone.
//
// Owns: every endpoint's state and arrival window, and the HMAC key.
// Thread: one thread at a time; the node calls everything from its loop thread.
// Lifetime: holds no pointers to anything outside itself.
class Membership {
 public:
  // REQUIRES: check_config(config, self_state) is ok.
  Membership(Config config, AppState self_state);

  // Call every interval_ms: heartbeat, then SYNs into `out`.
  void on_tick(std::uint64_t now_ms, Rng& rng, Outbox& out);
  // One datagram from `from_addr`; replies go to `from_addr`. Anything oversized,
  // unauthenticated, of another version or malformed is dropped and counted.
  void on_datagram(std::uint64_t now_ms, std::string_view from_addr,
                   std::span<const std::uint8_t> bytes, Outbox& out);

  // Takes our new application state; bumps the version of each field that changed.
  // REQUIRES: http_addr and zone are is_wire_string() within their limits (as
  // check_config() checks them).
  void set_app_state(const AppState& s);
  // Restores a member persisted by an earlier run, so that we can reach it without seeds.
  // It stays at generation 0 (not alive, no app state) until we hear of it. Returns false,
  // changing nothing, if the address is not is_wire_string() within addr_bytes_max (it
  // comes from disk: checked, not asserted), the member is already known or is
  // ourselves, or limits::members_max is reached.
  bool add_known(const NodeId& id, std::string gossip_addr);
  // Retires a dead member on its behalf: its state is given status `removed` under the
  // generation limits::removal_generation_step above the one we hold, with every field
  // versioned anew, so that the whole state replaces every older copy in the cluster
  // (a higher generation always wins whole) and a restart of the retired node, which
  // only bumps its generation by one, is ignored as an earlier life. This is how one
  // node changes a field that another node owns (Cassandra's removenode does the same).
  // Fails, changing nothing, for ourselves, an unknown member, or one not yet heard of.
  Status announce_removed(const NodeId& id);
  // True once a peer told us that we were removed (a state of ours with status removed
  // under a higher generation than ours). The node then stays out of the ring.
  bool removed_by_peer() const { return removed_by_peer_; }
  // Set once a peer showed us a state of ours that we never made: another process runs
  // with our id. The node decides who stops (the newer one) and who takes a higher
  // generation (the older one: take_generation()).
  const std::optional<SelfClaim>& self_claim() const { return self_claim_; }
  // Moves our own state to generation `g`, which replaces every copy of the state under
  // our id in the cluster, and forgets self_claim(). REQUIRES: g > our generation.
  void take_generation(std::uint64_t g);
  // Members whose id two live endpoints send under (see limits::twin_window_ms).
  std::vector<Twin> twins(std::uint64_t now_ms) const;

  // Every member, ourselves included, in id order.
  std::vector<MemberView> members(std::uint64_t now_ms) const;
  std::optional<MemberView> member(const NodeId& id, std::uint64_t now_ms) const;
  // Members we have heard of (generation >= 1), ourselves included.
  std::size_t member_count() const { return heard_count_; }
  // The generation we hold for `id`, 0 if none.
  std::uint64_t generation_of(const NodeId& id) const;
  bool is_alive(const NodeId& id, std::uint64_t now_ms) const;

  // Bumps when a member joins (is first heard of) or its status, vnodes, zone or
  // http_addr change (a restart that changes them included); not on heartbeats, disk
  // usage, key counts, restarts that change none of them, or liveness.
  std::uint64_t ring_version() const { return ring_version_; }

  struct Counters {
    std::uint64_t datagrams_in = 0, datagrams_out = 0;
    std::uint64_t dropped_bad_mac = 0, dropped_malformed = 0, dropped_oversize = 0,
                  dropped_bad_version = 0;
    std::uint64_t dropped_from_self = 0;  // a datagram carrying our own id as its sender
    std::uint64_t members_refused = 0;    // new members not added: limits::members_max
  };
  const Counters& counters() const { return counters_; }
  const Config& config() const { return config_; }

 private:
  // A member's state is kept in three arrays under one slot: its digest (id,
  // generation, max version) in digests_, which every SYN walks; what a heartbeat
  // touches (two cache lines) in endpoints_; its field values, which rarely change,
  // in values_.
  struct alignas(64) Endpoint {
    std::array<std::uint64_t, field_count> versions{};  // 0: not known
    ArrivalWindow arrivals;  // its last arrival is when we last heard of the member
  };
  static_assert(sizeof(Endpoint) == 128);
  struct IndexEntry {
    NodeId id;
    std::uint32_t slot;
  };
  // An endpoint to send, and what the receiver holds of it.
  struct Send {
    std::uint32_t slot;
    std::uint64_t since_version;  // send the fields newer than this; 0: the full state
  };
  static constexpr std::uint32_t no_slot = UINT32_MAX;

  std::uint32_t find(const NodeId& id) const;       // no_slot if unknown
  std::size_t lower_bound(const NodeId& id) const;  // into index_
  std::uint32_t insert(const NodeId& id);           // no_slot at limits::members_max
  void rebuild_table(std::size_t buckets);
  MemberView view(std::uint32_t slot, std::uint64_t now_ms) const;

  void on_syn(std::string_view from, const Message& m, std::uint64_t rotation, Outbox& out);
  void note_sender(std::uint64_t now_ms, const NodeId& id, std::string_view from);
  void note_self_claim(std::uint64_t generation, std::string_view addr);
  void on_ack(std::uint64_t now_ms, std::string_view from, const Message& m, std::uint64_t rotation,
              Outbox& out);
  void send_replies(MessageType type, std::string_view to, const std::vector<Digest>& requests,
                    const std::vector<Send>& sends, std::uint64_t rotation, Outbox& out);
  void apply_deltas(std::uint64_t now_ms, const std::vector<Delta>& deltas);
  void apply_delta(std::uint64_t now_ms, const Delta& d);
  void prefetch(std::uint32_t slot) const;
  void replace_state(std::uint64_t now_ms, std::uint32_t slot, const Delta& d);
  void update_fields(std::uint64_t now_ms, std::uint32_t slot, const Delta& d);

  void choose_targets(std::uint64_t now_ms, Rng& rng, std::vector<std::string>* targets);
  void encode_syns(std::vector<std::vector<std::uint8_t>>* datagrams) const;
  void send_bytes(std::string_view addr, std::vector<std::uint8_t> bytes, Outbox& out);
  void bump_own(Field f);

  Config config_;
  MacKey mac_;
  PhiModel model_;
  // One slot per member, ourselves included; slots are stable and never reused.
  std::vector<Digest> digests_;
  std::vector<Endpoint> endpoints_;
  std::vector<EndpointValues> values_;
  std::vector<IndexEntry> index_;     // sorted by id: SYN ranges walk it
  std::vector<std::uint32_t> table_;  // open addressing by id: slot + 1, 0 empty
  std::uint32_t self_slot_ = 0;
  std::uint64_t own_version_ = 0;  // the last version given to one of our fields
  std::uint64_t ring_version_ = 1;
  std::size_t heard_count_ = 0;
  bool removed_by_peer_ = false;
  std::optional<SelfClaim> self_claim_;
  // Per member some datagram of which came from another address than the one we hold:
  // that address, when it was first and last heard, and when the held one last was.
  struct TwinWatch {
    std::string other_addr;
    std::uint64_t other_first_ms = 0, other_last_ms = 0;
    std::uint64_t held_last_ms = 0;
  };
  std::unordered_map<std::uint32_t, TwinWatch> twin_watch_;
  Counters counters_;
  // Scratch, reused so that their vectors keep their capacity between datagrams.
  Message scratch_;
  std::vector<Digest> requests_;
  std::vector<Send> sends_;
  std::vector<std::uint32_t> live_, down_;
};

}  // namespace gossip
