#include "node/transfers.h"

#include <algorithm>

#include "common/assert.h"
#include "node/coordinator.h"
#include "node/http_status.h"
#include "node/json_util.h"
#include "node/log.h"
#include "node/server.h"
#include "ring/hash.h"

namespace node {

namespace {

constexpr std::string_view internal_range = "_/internal/range";
constexpr std::string_view internal_leave = "_/internal/leave";
constexpr std::string_view internal_remove = "_/internal/remove";

// Each progress range covers 2^64 / ranges_total positions.
constexpr unsigned range_shift = 58;
static_assert((1ull << (64 - range_shift)) == transfer_limits::ranges_total);

const char* status_name(gossip::NodeStatus s) {
  switch (s) {
    case gossip::NodeStatus::joining: return "joining";
    case gossip::NodeStatus::normal: return "normal";
    case gossip::NodeStatus::leaving: return "leaving";
    case gossip::NodeStatus::left: return "left";
    case gossip::NodeStatus::removed: return "removed";
  }
  UNREACHABLE();
}

std::optional<gossip::NodeStatus> parse_status(std::string_view s) {
  for (std::uint8_t i = 0; i <= gossip::node_status_max; i++) {
    auto st = static_cast<gossip::NodeStatus>(i);
    if (s == status_name(st)) return st;
  }
  return std::nullopt;
}

std::uint64_t fnv1a(std::uint64_t h, const void* data, std::size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

bool contains(const std::vector<Replica>& list, const ring::NodeId& id) {
  return std::any_of(list.begin(), list.end(), [&](const Replica& r) { return r.id == id; });
}

void respond_json(Connection& c, int status, const nlohmann::json& j) {
  c.respond(status, "Content-Type: application/json\r\n",
            j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

}  // namespace

bool parse_range_listing(const std::string& body, RangeListing* out) {
  auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  const nlohmann::json* entries = field(j, "entries");
  const nlohmann::json* truncated = field(j, "truncated");
  if (entries == nullptr || !entries->is_array()) return false;
  if (truncated != nullptr && !truncated->is_boolean()) return false;
  out->ring = json_u64(j, "ring");
  out->truncated = truncated != nullptr && truncated->get<bool>();
  out->last = json_u64(j, "last");
  out->entries.clear();
  // An entry that is not a well-formed [key, version, 0|1] is skipped; the rest stand.
  for (const auto& e : *entries) {
    if (!e.is_array() || e.size() != 3 || !e[0].is_string() || !e[1].is_string()) continue;
    auto key = percent_decode(e[0].get_ref<const std::string&>());
    auto version = blobstore::Version::parse(e[1].get_ref<const std::string&>());
    if (!key.is_ok() || !version || !validate_key(key.value()).is_ok()) continue;
    out->entries.push_back({std::move(key.value()), *version, e[2] == 1});
  }
  return true;
}

// ---- pass state ----

std::uint32_t PassState::ranges_done() const {
  if (done) return transfer_limits::ranges_total;
  return static_cast<std::uint32_t>(cursor >> range_shift);
}

nlohmann::json PassState::to_json() const {
  return {{"active", active},
          {"done", done},
          {"cursor", std::to_string(cursor)},
          {"ranges_done", ranges_done()},
          {"ranges_total", transfer_limits::ranges_total},
          {"keys_sent", keys_sent},
          {"keys_received", keys_received},
          {"keys_dropped", keys_dropped},
          {"keys_failed", keys_failed},
          {"listed", listed},
          {"waits", waits},
          {"started_ms", started_ms},
          {"finished_ms", finished_ms},
          {"deferred", deferred},
          {"round", round},
          {"signature", std::to_string(signature)}};
}

PassState PassState::from_json(const nlohmann::json& j) {
  PassState p;
  if (!j.is_object()) return p;
  p.active = json_bool(j, "active");
  p.done = json_bool(j, "done");
  p.cursor = json_u64(j, "cursor");
  p.keys_sent = json_u64(j, "keys_sent");
  p.keys_received = json_u64(j, "keys_received");
  p.keys_dropped = json_u64(j, "keys_dropped");
  p.keys_failed = json_u64(j, "keys_failed");
  p.listed = json_u64(j, "listed");
  p.waits = json_u64(j, "waits");
  p.started_ms = json_u64(j, "started_ms");
  p.finished_ms = json_u64(j, "finished_ms");
  p.signature = json_u64(j, "signature");
  p.deferred = json_u64(j, "deferred");
  p.round = static_cast<std::uint32_t>(json_u64(j, "round"));
  return p;
}

// ---- life cycle ----

Transfers::Transfers(Server& server, const common::Clock& clock) : server_(server), clock_(clock) {
  timer_ = new uv_timer_t;
  ASSERT(uv_timer_init(server_.loop(), timer_) == 0);
  timer_->data = this;
}

Transfers::~Transfers() { stop(); }

void Transfers::stop() {
  stopped_ = true;
  epoch_++;
  running_ = false;
  close_and_free(timer_);
}

gossip::NodeStatus Transfers::initial_status(const std::vector<std::string>& seeds,
                                             const std::string& self_addr, bool first_start) {
  auto saved = server_.store().get_meta("member.status");
  std::optional<gossip::NodeStatus> s;
  if (saved.is_ok()) s = parse_status(saved.value());
  if (!s) {
    bool other_seed = std::any_of(seeds.begin(), seeds.end(),
                                  [&](const std::string& a) { return a != self_addr; });
    // A node that ran before this row existed already serves its ranges.
    s = first_start && other_seed ? gossip::NodeStatus::joining : gossip::NodeStatus::normal;
  }
  status_ = *s;
  if (Status st = server_.store().put_meta("member.status", status_name(status_)); !st.is_ok()) {
    log::warn("saving the member status failed: " + st.message());
  }
  load_pass(PassKind::join);
  load_pass(PassKind::leave);
  load_pass(PassKind::handoff);
  return status_;
}

void Transfers::set_status(gossip::NodeStatus s) {
  if (s == status_) return;
  log::info(std::string("member status: ") + status_name(status_) + " -> " + status_name(s));
  status_ = s;
  if (Status st = server_.store().put_meta("member.status", status_name(s)); !st.is_ok()) {
    log::warn("saving the member status failed: " + st.message());
  }
  server_.publish_app_state();
}

const char* Transfers::pass_name(PassKind kind) {
  switch (kind) {
    case PassKind::join: return "join";
    case PassKind::leave: return "leave";
    case PassKind::handoff: return "handoff";
  }
  UNREACHABLE();
}

PassState& Transfers::pass(PassKind kind) {
  switch (kind) {
    case PassKind::join: return join_;
    case PassKind::leave: return leave_;
    case PassKind::handoff: return handoff_;
  }
  UNREACHABLE();
}

void Transfers::load_pass(PassKind kind) {
  auto saved = server_.store().get_meta(std::string("transfer.") + pass_name(kind));
  if (!saved.is_ok()) return;
  auto j = nlohmann::json::parse(saved.value(), nullptr, /*allow_exceptions=*/false);
  pass(kind) = PassState::from_json(j);
}

void Transfers::save_pass(PassKind kind) {
  // Not on the loop thread's own connection: that waited for the committer's batch
  // (up to its busy timeout) and synced, once per window, under a refill's writes.
  std::string what = std::string("saving ") + pass_name(kind) + " progress failed: ";
  auto failed = [what](Status s, blobstore::CommitResult) {
    if (!s.is_ok()) log::warn(what + s.message());
  };
  Status s = server_.store().put_meta_later(std::string("transfer.") + pass_name(kind),
                                            pass(kind).to_json().dump(), failed);
  if (!s.is_ok()) log::warn(what + s.message());
}

std::uint64_t Transfers::ring_signature() const {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const ring::Member& m : server_.cluster().ring()->members()) {  // in id order
    if (m.state == ring::MemberState::left || m.state == ring::MemberState::removed) continue;
    h = fnv1a(h, m.id.data(), m.id.size());
    auto state = static_cast<std::uint8_t>(m.state);
    h = fnv1a(h, &state, 1);
    h = fnv1a(h, &m.vnodes, sizeof m.vnodes);
    h = fnv1a(h, m.zone.data(), m.zone.size());
    h = fnv1a(h, "|", 1);
  }
  return h;
}

// Decides, on every membership refresh, which pass should run: our own join or leave
// first; otherwise, once the ring has settled with nobody joining or leaving, a handoff
// pass for the ring as it now is (unless one completed for exactly this ring).
void Transfers::on_membership() {
  if (stopped_) return;
  if (server_.membership().removed_by_peer() && status_ != gossip::NodeStatus::removed) {
    log::error("this node was removed from the cluster: it no longer serves as a replica");
    epoch_++;
    running_ = false;
    set_status(gossip::NodeStatus::removed);
  }
  if (status_ == gossip::NodeStatus::removed) return;
  std::uint64_t now = clock_.wall_ms();
  std::uint64_t sig = ring_signature();
  if (sig != last_signature_) {
    last_signature_ = sig;
    signature_since_ms_ = now;
    if (running_ && kind_ == PassKind::handoff) {  // planned for a ring that is gone
      epoch_++;
      running_ = false;
    }
  }
  if (running_) return;
  if (status_ == gossip::NodeStatus::joining) {
    // Wait until we know the cluster: a joiner that has heard of nobody yet would find
    // no owners to copy from and turn normal with nothing.
    if (server_.membership().member_count() >= 2) start_pass(PassKind::join);
    return;
  }
  if (status_ == gossip::NodeStatus::leaving) return start_pass(PassKind::leave);
  if (server_.cluster().changing()) return;  // hand off once the change is done
  if (handoff_.signature == sig && handoff_.done) return;
  if (now - signature_since_ms_ < transfer_limits::handoff_settle_ms) return;
  start_pass(PassKind::handoff);
}

bool Transfers::moves_done() const {
  const bool settled = status_ == gossip::NodeStatus::normal || status_ == gossip::NodeStatus::left;
  return !running_ && settled && !server_.cluster().changing() &&
         handoff_.done && handoff_.signature == last_signature_ && last_signature_ == ring_signature();
}

void Transfers::start_pass(PassKind kind) {
  PassState& p = pass(kind);
  if (kind == PassKind::handoff && (p.signature != last_signature_ || p.done)) {
    p = PassState{};
    p.signature = last_signature_;
  }
  if (kind != PassKind::handoff && p.done && !p.active) p = PassState{};  // a new change
  if (!p.active) {
    p.active = true;
    p.started_ms = clock_.wall_ms();
  }
  log::info(std::string(pass_name(kind)) + " pass starts at range " +
            std::to_string(p.ranges_done()) + "/" + std::to_string(transfer_limits::ranges_total));
  running_ = true;
  kind_ = kind;
  attempts_ = 0;
  epoch_++;
  run_window();
}

void Transfers::retry_later() {
  if (stopped_ || timer_ == nullptr) return;
  uv_timer_start(timer_, on_timer, transfer_limits::retry_delay_ms, 0);
}

void Transfers::on_timer(uv_timer_t* t) {
  auto* self = static_cast<Transfers*>(t->data);
  if (self == nullptr || self->stopped_ || !self->running_) return;
  self->run_window();
}

// ---- one window: list ----

void Transfers::run_window() {
  if (!running_ || stopped_) return;
  PassState& p = pass(kind_);
  std::uint64_t lo = p.cursor;
  std::uint64_t range = lo >> range_shift;
  std::uint64_t hi = range + 1 == transfer_limits::ranges_total
                         ? UINT64_MAX
                         : ((range + 1) << range_shift) - 1;
  window_lo_ = lo;
  window_hi_ = hi;
  cut_hi_ = hi;
  listed_.clear();
  listing_failed_ = disagreement_ = false;
  sources_.clear();
  sources_.push_back({server_.cluster().self(), server_.address(), true});
  bool all_alive = true;
  for (const ring::Member& m : server_.cluster().ring()->members()) {
    if (m.id == server_.cluster().self()) continue;
    if (m.state == ring::MemberState::left || m.state == ring::MemberState::removed) continue;
    if (!server_.cluster().alive(m.id)) {  // down: neither asked nor waited for
      all_alive = false;
      continue;
    }
    sources_.push_back({m.id, m.addr, false});
  }
  // A joiner copies from every member, as Cassandra's bootstrap with consistent range
  // movement: one it has not heard from yet (just learned, or slow to answer gossip) may
  // hold the only newest copy, and a joiner that heard from nobody would take nothing.
  if (kind_ == PassKind::join && !all_alive) {
    pass(kind_).waits++;
    return retry_later();
  }

  std::vector<blobstore::BlobMeta> local;
  Status s = server_.store().scan_positions(lo, hi, transfer_limits::listing_entries_max, &local);
  if (!s.is_ok()) {
    log::warn("listing local keys failed: " + s.message());
    return retry_later();
  }
  for (const blobstore::BlobMeta& m : local) {
    if (m.is_hint) continue;  // a stand-in's copy belongs to the hint, not the ring
    listed_[m.key].push_back({0, m.version, m.tombstone});
  }
  if (local.size() == transfer_limits::listing_entries_max) {
    std::uint64_t last = ring::key_position(local.back().key);
    if (last > lo) cut_hi_ = std::min(cut_hi_, last - 1);
  }
  listings_pending_ = sources_.size() - 1;
  std::uint64_t epoch = epoch_;
  for (std::size_t i = 1; i < sources_.size(); i++) {
    auto req = std::make_unique<PeerRequest>();
    req->method = "GET";
    req->target = "/" + std::string(internal_range) + "?from=" + std::to_string(lo) +
                  "&to=" + std::to_string(hi) +
                  "&limit=" + std::to_string(transfer_limits::listing_entries_max);
    req->timeout_ms = server_.coordinator().config().replica_timeout_ms * 2;
    req->response_body_max = transfer_limits::listing_bytes_max;
    req->done = [this, epoch, i](Status st, PeerResponse r) {
      if (st.is_ok() && r.status != 200) st = Status::io_error("listing answered " + std::to_string(r.status));
      on_listing(epoch, i, std::move(st), r.body);
    };
    server_.peers().send(sources_[i].addr, std::move(req));
  }
  if (listings_pending_ == 0) plan_window();
}

void Transfers::on_listing(std::uint64_t epoch, std::size_t source, Status s,
                           const std::string& body) {
  if (stopped_ || epoch != epoch_) return;
  listings_pending_--;
  if (!s.is_ok()) {
    log::debug("listing from " + sources_[source].addr + " failed: " + s.message());
    listing_failed_ = true;
  } else {
    RangeListing page;
    if (!parse_range_listing(body, &page)) {
      listing_failed_ = true;
    } else {
      if (page.ring != ring_signature()) disagreement_ = true;
      log::debug(std::string(pass_name(kind_)) + " window " + std::to_string(window_lo_ >> range_shift) +
                 ": " + sources_[source].addr + " lists " + std::to_string(page.entries.size()) +
                 (disagreement_ ? " (rings disagree)" : ""));
      for (RangeListing::Entry& e : page.entries) {
        listed_[std::move(e.key)].push_back({source, e.version, e.tombstone});
      }
      if (page.truncated && page.last > window_lo_) cut_hi_ = std::min(cut_hi_, page.last - 1);
    }
  }
  if (listings_pending_ > 0) return;
  if (listing_failed_ || disagreement_) {  // gossip converges meanwhile
    pass(kind_).waits++;
    return retry_later();
  }
  plan_window();
}

// ---- one window: decide ----

void Transfers::plan_window() {
  work_.clear();
  for (const auto& [key, holdings] : listed_) {
    if (ring::key_position(key) > cut_hi_) continue;  // beyond a cut listing: next window
    pass(kind_).listed += holdings.size();
    plan_key(key, holdings, &work_);
  }
  listed_.clear();
  next_work_ = work_in_flight_ = 0;
  work_left_ = work_.size();
  window_started_ms_ = clock_.monotonic_ms();
  window_failed_ = false;
  if (work_.empty()) return window_done();
  pump();
}

// Who should send what for one key. "Newest" is the highest version any live member
// lists (last writer wins, so a newer copy can only be a real write, and re-sending an
// older one is harmless: the receiver keeps what it has). With W=2 of N=3, every
// acknowledged write is on two owners, so one owner down still leaves it listed.
void Transfers::plan_key(const std::string& key, const std::vector<Holding>& holdings,
                         std::vector<KeyWork>* work) {
  const Holding* newest = nullptr;
  const Holding* mine = nullptr;
  for (const Holding& h : holdings) {
    if (newest == nullptr || newest->version < h.version) newest = &h;
    if (h.source == 0) mine = &h;
  }
  if (newest == nullptr) return;
  // A tombstone past its grace is being purged: a member that lacks it purged it, and a
  // copy sent there now would only be purged again.
  std::uint64_t grace_ms = server_.config().anti_entropy.tombstone_grace_s * 1000;
  std::uint64_t now_ms = clock_.wall_ms();
  if (newest->tombstone && now_ms > newest->version.wall_ms() &&
      now_ms - newest->version.wall_ms() > grace_ms) {
    return;
  }
  auto source_of = [&](const ring::NodeId& id) -> std::optional<std::size_t> {
    for (std::size_t i = 0; i < sources_.size(); i++) {
      if (sources_[i].id == id) return i;
    }
    return std::nullopt;
  };
  auto lacks = [&](std::size_t source) {
    for (const Holding& h : holdings) {
      if (h.source == source) return h.version < newest->version;
    }
    return true;
  };
  // Prefer our own copy of the newest version, else the first source listed with it.
  std::size_t holder = newest->source;
  if (mine != nullptr && mine->version == newest->version) holder = 0;
  Cluster& cluster = server_.cluster();
  std::uint32_t n = server_.coordinator().effective_n();
  std::uint32_t n_future = std::max<std::uint32_t>(
      1, std::min<std::uint32_t>(server_.coordinator().config().n,
                                 static_cast<std::uint32_t>(cluster.future_member_count())));
  KeyWork w;
  w.key = key;
  switch (kind_) {
    case PassKind::join: {
      // Only what we take over, and only when we lack the newest version.
      if (!contains(cluster.future_preference_list(key, n_future), cluster.self())) return;
      if (!lacks(0)) return;
      w.sends.push_back({holder, server_.address(), true});
      break;
    }
    case PassKind::leave: {
      std::vector<Replica> now = cluster.preference_list(key, n);
      for (const Replica& r : cluster.future_preference_list(key, n_future)) {
        if (r.self || contains(now, r.id)) continue;  // not new to the key
        auto s = source_of(r.id);
        if (!s) continue;  // down: its hints and the handoff pass bring it the key later
        if (lacks(*s)) w.sends.push_back({holder, r.addr, false});
      }
      break;
    }
    case PassKind::handoff: {
      std::vector<Replica> owners = cluster.preference_list(key, n);
      // One sender per key, the same on every node that computes it from the same
      // listing: the first owner holding the newest version, else the holder of it
      // with the lowest id.
      std::optional<std::size_t> designated;
      for (const Replica& r : owners) {
        auto s = source_of(r.id);
        if (s && !lacks(*s)) {
          designated = *s;
          break;
        }
      }
      const bool owner_holds = designated.has_value();
      for (const Holding& h : holdings) {
        if (designated && owner_holds) break;
        if (h.version != newest->version) continue;
        if (!designated || gossip::id_less(sources_[h.source].id, sources_[*designated].id)) {
          designated = h.source;
        }
      }
      bool all_hold = true;  // every owner holds the newest version, or gets it from us
      bool deferred = false;
      for (const Replica& r : owners) {
        if (r.self) continue;
        auto s = source_of(r.id);
        if (!s) {
          all_hold = false;  // an owner we cannot see: keep our copy, look again next round
          deferred = true;
          continue;
        }
        if (!lacks(*s)) continue;
        if (*designated == 0) {
          w.sends.push_back({0, r.addr, false});
          log::debug("handoff: " + key + " to " + r.addr + " (" + std::to_string(holdings.size()) +
                     " holders listed)");
        } else {
          all_hold = false;  // another node sends it: ours is dropped in the next round
          deferred = true;
        }
      }
      bool stray = mine != nullptr && !contains(owners, cluster.self());
      if (stray && all_hold) {
        w.drop = true;
        w.drop_version = mine->version;
      }
      if (stray && deferred) pass(kind_).deferred++;
      break;
    }
  }
  if (w.sends.empty() && !w.drop) return;
  work->push_back(std::move(w));
}

// ---- one window: act ----

// At most keys_in_flight_max keys at once and, with --transfer-keys-per-s, no more
// started than the rate allows since the window began (checked again every 20 ms).
void Transfers::pump() {
  const std::uint32_t rate = server_.config().transfer_keys_per_s;
  std::uint64_t allowed = UINT64_MAX;
  if (rate > 0) {
    std::uint64_t elapsed = clock_.monotonic_ms() - window_started_ms_;
    allowed = 1 + elapsed * rate / 1000;
  }
  while (running_ && work_in_flight_ < transfer_limits::keys_in_flight_max &&
         next_work_ < work_.size() && next_work_ < allowed) {
    run_key(next_work_++);
  }
  if (running_ && work_in_flight_ == 0 && next_work_ < work_.size() && timer_ != nullptr) {
    uv_timer_start(timer_, on_pump_timer, 20, 0);
  }
}

void Transfers::on_pump_timer(uv_timer_t* t) {
  auto* self = static_cast<Transfers*>(t->data);
  if (self == nullptr || self->stopped_ || !self->running_) return;
  self->pump();
}

void Transfers::run_key(std::size_t index) {
  work_in_flight_++;
  send_one(index, 0);
}

void Transfers::send_one(std::size_t index, std::size_t k) {
  KeyWork& w = work_[index];
  std::uint64_t epoch = epoch_;
  if (k == w.sends.size()) {
    if (!w.drop) return key_done(index, true);
    // Every owner has acknowledged a version at least as new as ours: drop ours.
    Status s = server_.store().purge(
        w.key, w.drop_version, [this, epoch, index](Status st, blobstore::CommitResult res) {
          if (stopped_ || epoch != epoch_) return;
          if (st.is_ok() && res.applied) pass(kind_).keys_dropped++;
          key_done(index, st.is_ok());
        });
    if (!s.is_ok()) key_done(index, false);
    return;
  }
  const KeyWork::Send& send = w.sends[k];
  auto done = [this, epoch, index, k](Status st) {
    if (stopped_ || epoch != epoch_) return;
    if (!st.is_ok()) {
      log::debug("sending " + work_[index].key + " failed: " + st.message());
      return key_done(index, false);
    }
    PassState& p = pass(kind_);
    p.keys_sent++;
    if (work_[index].sends[k].to_self) p.keys_received++;
    send_one(index, k + 1);
  };
  if (sources_[send.holder].self) {
    return server_.coordinator().push(w.key, send.to, nullptr,
                                      [done = std::move(done)](Status st, bool) { done(std::move(st)); });
  }
  auto req = std::make_unique<PeerRequest>();
  req->method = "POST";
  req->target = "/_/internal/push/" + encode_key(w.key) + "?to=" + encode_key(send.to);
  req->timeout_ms = server_.coordinator().config().replica_timeout_ms * 4;
  req->done = [done = std::move(done)](Status st, PeerResponse r) {
    if (st.is_ok() && r.status != 200) st = Status::io_error("push answered " + std::to_string(r.status));
    done(std::move(st));
  };
  server_.peers().send(sources_[send.holder].addr, std::move(req));
}

void Transfers::key_done(std::size_t index, bool ok) {
  (void)index;
  work_in_flight_--;
  work_left_--;
  if (!ok) window_failed_ = true;
  if (work_left_ > 0) return pump();
  if (!window_failed_) return window_done();
  if (++attempts_ < transfer_limits::window_attempts_max) return retry_later();
  log::warn(std::string(pass_name(kind_)) + " pass leaves a window behind after " +
            std::to_string(attempts_) + " attempts");
  pass(kind_).keys_failed++;
  window_done();
}

void Transfers::window_done() {
  PassState& p = pass(kind_);
  attempts_ = 0;
  work_.clear();
  if (cut_hi_ == UINT64_MAX) {
    p.done = true;
  } else {
    p.cursor = cut_hi_ + 1;
  }
  save_pass(kind_);
  if (p.done) return finish_pass();
  run_window();
}

void Transfers::finish_pass() {
  PassState& p = pass(kind_);
  // Copies we could not drop because another node was still sending them to an owner:
  // one more round over the ring finds the owners holding them, and drops ours.
  if (kind_ == PassKind::handoff && p.deferred > 0 && p.round == 0) {
    p.round = 1;
    p.deferred = 0;
    p.done = false;
    p.cursor = 0;
    save_pass(kind_);
    return retry_later();
  }
  running_ = false;
  p.active = false;
  p.finished_ms = clock_.wall_ms();
  save_pass(kind_);
  log::info(std::string(pass_name(kind_)) + " pass done in " +
            std::to_string(p.finished_ms - p.started_ms) + " ms: " + std::to_string(p.keys_sent) +
            " keys sent, " + std::to_string(p.keys_received) + " received, " +
            std::to_string(p.keys_dropped) + " dropped");
  if (kind_ == PassKind::join) set_status(gossip::NodeStatus::normal);
  if (kind_ == PassKind::leave) set_status(gossip::NodeStatus::left);
}

// ---- the endpoints ----

bool Transfers::handles(const std::string& path) {
  return path == internal_range || path == internal_leave || path == internal_remove;
}

Status Transfers::check_headers(Connection& c) {
  const HttpRequest& r = c.request();
  bool get = r.target.path == internal_range;
  if (get && r.method != HTTP_GET) return Status(Code::method_not_allowed, "method_not_allowed: use GET");
  if (!get && r.method != HTTP_POST) return Status(Code::method_not_allowed, "method_not_allowed: use POST");
  return Status::ok();
}

void Transfers::on_request(Connection& c) {
  const std::string& path = c.request().target.path;
  if (path == internal_range) return list_range(c);
  if (path == internal_leave) return start_leave(c);
  return remove_member(c);
}

// GET /_/internal/range?from=P&to=Q&limit=L: this node's own copies (not hints) whose
// positions lie in [P, Q], in position order, with the ring signature it sees.
void Transfers::list_range(Connection& c) {
  const Target& t = c.request().target;
  const std::string* from = t.get("from");
  const std::string* to = t.get("to");
  const std::string* limit = t.get("limit");
  std::uint64_t lo = 0, hi = 0, n = transfer_limits::listing_entries_max;
  auto read = [](const std::string* text, std::uint64_t* out) {
    if (text == nullptr) return false;
    auto v = parse_u64(*text);
    if (v) *out = *v;
    return v.has_value();
  };
  if (!read(from, &lo) || !read(to, &hi) || lo > hi) {
    return c.respond_error(Status::invalid("bad_range: from and to must be positions, from <= to"));
  }
  if ((limit != nullptr && !read(limit, &n)) || n == 0 || n > transfer_limits::listing_entries_max) {
    return c.respond_error(Status::invalid("bad_limit: limit must be 1.." +
                                           std::to_string(transfer_limits::listing_entries_max)));
  }
  std::vector<blobstore::BlobMeta> metas;
  if (Status s = server_.store().scan_positions(lo, hi, n, &metas); !s.is_ok()) {
    return c.respond_error(s);
  }
  nlohmann::json entries = nlohmann::json::array();
  for (const blobstore::BlobMeta& m : metas) {
    if (m.is_hint) continue;
    entries.push_back({encode_key(m.key), m.version.to_string(), m.tombstone ? 1 : 0});
  }
  nlohmann::json j = {{"ring", std::to_string(ring_signature())},
                      {"state", status_name(status_)},
                      {"entries", std::move(entries)},
                      {"truncated", metas.size() == n}};
  if (!metas.empty()) j["last"] = std::to_string(ring::key_position(metas.back().key));
  respond_json(c, 200, j);
}

// POST /_/internal/leave: this node streams its ranges to their next owners, then is
// `left` (it keeps running as a coordinator without data until it is stopped).
void Transfers::start_leave(Connection& c) {
  if (status_ != gossip::NodeStatus::normal) {
    return respond_json(c, 409, {{"error", "not_normal"}, {"state", status_name(status_)}});
  }
  if (server_.cluster().changing()) {
    return respond_json(c, 409, {{"error", "change_in_progress"},
                                 {"detail", "another member is joining or leaving"}});
  }
  if (server_.cluster().member_count() < 2) {
    return respond_json(c, 409, {{"error", "last_member"},
                                 {"detail", "the only owner cannot hand its data to anyone"}});
  }
  leave_ = PassState{};
  save_pass(PassKind::leave);
  set_status(gossip::NodeStatus::leaving);
  respond_json(c, 202, {{"state", "leaving"}, {"id", ring::hex_id(server_.cluster().self())}});
}

// POST /_/internal/remove?id=HEX: retires a dead member (see Membership::announce_removed);
// the handoff pass that follows on every node re-replicates what lost a copy.
void Transfers::remove_member(Connection& c) {
  const std::string* hex = c.request().target.get("id");
  ring::NodeId id{};
  if (hex == nullptr || hex->size() != 2 * id.size() || !blobstore::unhex(*hex, id.data(), id.size())) {
    return c.respond_error(Status::invalid("bad_node_id: expected 32 hex digits"));
  }
  if (id == server_.cluster().self()) {
    return respond_json(c, 409, {{"error", "cannot_remove_self"}, {"detail", "use leave"}});
  }
  auto m = server_.membership().member(id, server_.gossip_now_ms());
  if (!m || m->generation == 0) {
    return respond_json(c, 404, {{"error", "unknown_node"}, {"id", *hex}});
  }
  if (m->app.status == gossip::NodeStatus::removed) {
    return respond_json(c, 200, {{"removed", *hex}, {"already", true}});
  }
  if (m->alive) {
    return respond_json(c, 409, {{"error", "node_alive"},
                                 {"detail", "a live node leaves with `ringstore leave`"}});
  }
  if (Status s = server_.membership().announce_removed(id); !s.is_ok()) return c.respond_error(s);
  log::info("removed member " + *hex + " from the cluster");
  respond_json(c, 200, {{"removed", *hex}});
}

nlohmann::json Transfers::status_json() const {
  nlohmann::json j = {{"state", status_name(status_)},
                      {"join", join_.to_json()},
                      {"leave", leave_.to_json()},
                      {"handoff", handoff_.to_json()}};
  if (running_) j["running"] = pass_name(kind_);
  return j;
}

}  // namespace node
