#include "node/server.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>


#include "blobstore/version.h"
#include "common/assert.h"
#include "common/digest.h"
#include "node/log.h"

namespace node {

namespace {
// How often the sweep timer checks deadlines. Timeouts are enforced to within this.
constexpr std::uint32_t sweep_interval_ms_max = 250;

std::uint32_t sweep_interval(const ServerLimits& l) {
  std::uint32_t m = sweep_interval_ms_max;
  for (std::uint32_t t : {l.idle_timeout_ms, l.header_timeout_ms, l.body_timeout_ms,
                          l.send_timeout_ms}) {
    if (t / 4 < m) m = t / 4;
  }
  return m < 10 ? 10 : m;
}
}  // namespace

Server::Server(uv_loop_t* loop, ServerConfig config)
    : loop_(loop),
      config_(std::move(config)),
      system_clock_(config_.clock ? nullptr : std::make_unique<common::SystemClock>(loop)),
      clock_(config_.clock ? config_.clock : system_clock_.get()),
      hlc_(config_.version_drift_ms),
      read_buffer_(limits::read_buffer_bytes) {}

Server::~Server() {
  ASSERT(conns_.empty());
  ASSERT(listener_ == nullptr && sweep_timer_ == nullptr && async_ == nullptr);
  ASSERT(hint_timer_ == nullptr && membership_timer_ == nullptr);
}

Status Server::start() {
  started_ms_ = now_ms();
  async_ = new uv_async_t;
  if (int rc = uv_async_init(loop_, async_, on_async); rc != 0) {
    delete async_;
    async_ = nullptr;
    return Status::io_error(std::string("uv_async_init: ") + uv_strerror(rc));
  }
  async_->data = this;
  blobstore::Options opts;
  opts.data_dir = config_.data_dir;
  opts.disks = config_.disks;
  opts.fault = config_.fault;
  opts.cache_bytes = config_.cache_bytes;
  opts.scrub = config_.scrub;
  opts.sync = config_.sync;
  uv_async_t* async = async_;
  opts.notify = [async] { uv_async_send(async); };
  auto store = blobstore::BlobStore::open(std::move(opts));
  if (!store.is_ok()) {
    close_and_free(async_);
    return store.take_status();
  }
  store_ = std::move(store.value());
  // The first byte of the id apart, nodes started in the same millisecond draw apart.
  rng_.emplace(config_.rng_seed.value_or(clock_->wall_ms() ^
                                         (static_cast<std::uint64_t>(store_->node_id()[0]) << 56)));
  log::set_node(blobstore::hex(store_->node_id().data(), store_->node_id().size()));
  if (store_->replayed_files() > 0) {
    log::warn("the commit log restored " + std::to_string(store_->replayed_files()) +
              " files that an unclean stop left unsynced");
  }

  sweep_timer_ = new uv_timer_t;
  ASSERT(uv_timer_init(loop_, sweep_timer_) == 0);
  sweep_timer_->data = this;
  std::uint32_t every = sweep_interval(config_.limits);
  uv_timer_start(sweep_timer_, on_sweep, every, every);

  listener_ = new uv_tcp_t;
  ASSERT(uv_tcp_init(loop_, listener_) == 0);
  listener_->data = this;
  sockaddr_storage addr{};
  int rc = uv_ip4_addr(config_.host.c_str(), config_.port, reinterpret_cast<sockaddr_in*>(&addr));
  if (rc != 0) rc = uv_ip6_addr(config_.host.c_str(), config_.port, reinterpret_cast<sockaddr_in6*>(&addr));
  if (rc == 0) rc = uv_tcp_bind(listener_, reinterpret_cast<sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(listener_), 511, on_connection);
  if (rc != 0) {
    Status s = Status::io_error("listen on " + address() + ": " + uv_strerror(rc));
    stop(nullptr);
    return s;
  }
  sockaddr_storage bound{};
  int len = sizeof bound;
  uv_tcp_getsockname(listener_, reinterpret_cast<sockaddr*>(&bound), &len);
  if (bound.ss_family == AF_INET) {
    port_ = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  } else {
    port_ = ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  }
  auth_token_ = auth_token_for(config_.secret);
  cluster_ = std::make_unique<Cluster>(store_->node_id(), address(), config_.vnodes, config_.zone);
  peers_ = std::make_unique<PeerClient>(loop_, *clock_, config_.host,
                                        "X-Ringstore-Auth: " + auth_token_ + "\r\n");
  peers_->set_date_seen([this](const std::string& addr, std::int64_t date_s) { on_peer_date(addr, date_s); });
  coordinator_ = std::make_unique<Coordinator>(*this, *clock_, config_.quorum);
  ae_ = std::make_unique<AntiEntropy>(*this, *clock_, config_.anti_entropy);
  store_->set_change_listener([ae = ae_.get()](const std::string& key, const blobstore::CommitResult& r) {
    ae->on_change(key, r);
  });
  if (Status s = ae_->start(); !s.is_ok()) {
    stop(nullptr);
    return s;
  }
  transfers_ = std::make_unique<Transfers>(*this, *clock_);
  listing_ = std::make_unique<Listing>(*this, *clock_);
  hint_policy_ = std::make_unique<HintPolicy>(config_.hints);
  repairer_ = std::make_unique<Repairer>(*this, *clock_, config_.repair);
  (void)repairer_->start();
  // A damaged copy is fetched again from a replica at once, not when a client reads it.
  store_->set_damage_listener([this](const blobstore::BlobMeta& m) { repairer_->on_damaged(m); });
  hint_timer_ = new uv_timer_t;
  ASSERT(uv_timer_init(loop_, hint_timer_) == 0);
  hint_timer_->data = this;
  uv_timer_start(hint_timer_, on_hint_timer, config_.hint_interval_ms, config_.hint_interval_ms);
  if (Status s = start_gossip(); !s.is_ok()) {
    stop(nullptr);
    return s;
  }
  return Status::ok();
}

// Gossip runs on UDP at the HTTP address. The generation goes up at every start, so
// peers replace what they knew of our previous life; the members we knew are restored
// so that a restarted node finds the cluster even when its seeds are down.
Status Server::start_gossip() {
  auto g = store_->get_meta("generation");
  gossip::NodeStatus status = transfers_->initial_status(config_.seeds, address(), !g.is_ok());
  generation_ = 1;
  if (g.is_ok()) {
    if (auto v = parse_u64(g.value())) generation_ = *v + 1;
  }
  if (Status s = store_->put_meta("generation", std::to_string(generation_)); !s.is_ok()) return s;
  gossip::Config gc;
  gc.self = store_->node_id();
  gc.self_addr = address();
  gc.generation = generation_;
  gc.seeds = config_.seeds;
  gc.secret = config_.secret;
  gc.interval_ms = config_.gossip_interval_ms;
  gc.phi_convict = config_.phi_convict;
  gossip::AppState app;
  app.http_addr = address();
  app.status = status;
  app.vnodes = config_.vnodes;
  app.zone = config_.zone;
  app.key_count = store_->live_keys();
  gossip_ = std::make_unique<gossip::UdpTransport>(loop_, *clock_, *rng_);
  Status s = gossip_->start(gc, app, [this](std::uint64_t) { refresh_membership(); });
  if (!s.is_ok()) {
    gossip_.reset();
    return s;
  }
  if (auto peers = store_->get_meta("peers"); peers.is_ok()) {
    auto j = nlohmann::json::parse(peers.value(), nullptr, /*allow_exceptions=*/false);
    if (j.is_array()) {
      for (const auto& p : j) {
        if (!p.is_object() || !p["id"].is_string() || !p["addr"].is_string()) continue;
        ring::NodeId id{};
        std::string hex = p["id"].get<std::string>();
        std::string addr = p["addr"].get<std::string>();
        if (blobstore::unhex(hex, id.data(), id.size()) && addr.size() <= gossip::limits::addr_bytes_max) {
          gossip_->membership().add_known(id, addr);
        }
      }
    }
  }
  membership_timer_ = new uv_timer_t;
  ASSERT(uv_timer_init(loop_, membership_timer_) == 0);
  membership_timer_->data = this;
  uv_timer_start(membership_timer_, on_membership_timer, 200, 200);
  refresh_membership();
  return Status::ok();
}

void Server::on_membership_timer(uv_timer_t* t) {
  auto* self = static_cast<Server*>(t->data);
  if (self == nullptr || self->stopping_) return;
  // Every 5 s our key count and disk use go out with the heartbeats.
  if (++self->app_state_ticks_ % 25 == 0) self->publish_app_state();
  self->refresh_membership();
  self->hint_policy_->refresh(*self->store_, self->now_ms());
}

gossip::AppState Server::app_state() {
  gossip::AppState app;
  app.http_addr = address();
  app.status = transfers_->status();
  app.vnodes = config_.vnodes;
  app.zone = config_.zone;
  app.key_count = store_->live_keys();
  for (const auto& d : store_->disks_info(clock_->wall_ms())) {
    app.disk_used_bytes += d.total_bytes - d.free_bytes;
  }
  return app;
}

void Server::publish_app_state() {
  if (!gossip_) return;
  gossip_->membership().set_app_state(app_state());
  refresh_membership();
}

// The ring follows gossip: members we have heard of, with their status, vnodes, zone and
// address; liveness is refreshed on every call and never changes ownership.
void Server::refresh_membership() {
  if (!gossip_ || !cluster_) return;
  std::vector<MemberInfo> members;
  member_extra_.clear();
  std::uint64_t now = gossip_->now_ms();
  std::size_t unheard = 0;  // known by id, not yet by state: not in the ring
  for (const gossip::MemberView& v : gossip_->membership().members(now)) {
    if (v.generation == 0 || v.app.vnodes == 0 || v.app.http_addr.empty()) {
      unheard += !v.self;
      continue;
    }
    MemberInfo m;
    m.member.id = v.id;
    m.member.vnodes = v.app.vnodes;
    m.member.zone = v.app.zone;
    m.member.state = static_cast<ring::MemberState>(v.app.status);
    m.member.addr = v.app.http_addr;
    m.alive = v.alive;
    m.self = v.self;
    members.push_back(std::move(m));
    static const char* states[] = {"joining", "normal", "leaving", "left", "removed"};
    member_extra_.push_back(
        {ring::hex_id(v.id),
         {{"state", states[static_cast<int>(v.app.status)]}, {"phi", v.self ? 0.0 : v.phi},
          {"generation", v.generation}, {"heartbeat", v.heartbeat},
          {"heartbeat_age_ms", now >= v.last_heard_ms ? now - v.last_heard_ms : 0},
          {"key_count", v.app.key_count}, {"disk_used_bytes", v.app.disk_used_bytes},
          {"gossip_addr", v.gossip_addr}}});
  }
  check_twin();
  if (!members.empty()) cluster_->update(members);
  cluster_->set_unheard(unheard, now);
  if (hint_policy_) hint_policy_->observe(*cluster_, now_ms());
  if (gossip_->membership().ring_version() != saved_ring_version_) save_peers();
  if (transfers_) transfers_->on_membership();
}

void Server::save_peers() {
  saved_ring_version_ = gossip_->membership().ring_version();
  nlohmann::json peers = nlohmann::json::array();
  for (const auto& v : gossip_->membership().members(gossip_->now_ms())) {
    if (!v.self && v.generation > 0) peers.push_back({{"id", ring::hex_id(v.id)}, {"addr", v.gossip_addr}});
  }
  auto failed = [](Status s, blobstore::CommitResult) {
    if (!s.is_ok()) log::warn("saving the member list failed: " + s.message());
  };
  Status s = store_->put_meta_later("peers", peers.dump(), failed);
  if (!s.is_ok()) log::warn("saving the member list failed: " + s.message());
}

// Another live process runs under this node's id: a peer holds a state of ours that we
// never made. The newer process (started within twin_start_window_ms) stops; the older
// one takes a generation above the one the peers hold, which replaces the newer's state
// everywhere, so that the newer sees a claim too and stops.
void Server::check_twin() {
  const auto& claim = gossip_->membership().self_claim();
  if (!claim || exit_code_ != 0) return;
  twin_claims_++;
  twin_at_unix_ms_ = clock_->wall_ms();
  if (!claim->addr.empty()) twin_addr_ = claim->addr;
  const std::string id = blobstore::hex(store_->node_id().data(), store_->node_id().size());
  const std::string other = twin_addr_.empty() ? "an address the peers have not named" : twin_addr_;
  if (now_ms() < started_ms_ + config_.id_conflict_window_ms) {
    log::error("another live process at " + other + " runs with this node's id " + id +
               " (a copied data directory?): this one started later and stops");
    exit_code_ = 1;
    if (on_fatal_) on_fatal_();
    return;
  }
  if (++twin_defends_ > limits::twin_defends_max) {
    // Both processes are past their start: neither gives way, and a war of generations
    // would churn every peer's view. Stopping this one leaves the operator one to keep.
    log::error("another process at " + other + " keeps claiming this node's id " + id + ": stopping");
    exit_code_ = 1;
    if (on_fatal_) on_fatal_();
    return;
  }
  std::uint64_t g = std::max(claim->generation, generation_) + 1;
  log::error("another process at " + other + " claimed this node's id " + id +
             " (a copied data directory?): keeping it under generation " + std::to_string(g));
  generation_ = g;
  auto failed = [](Status s, blobstore::CommitResult) {
    if (!s.is_ok()) log::warn("saving the generation failed: " + s.message());
  };
  if (Status s = store_->put_meta_later("generation", std::to_string(g), failed); !s.is_ok()) {
    log::warn("saving the generation failed: " + s.message());
  }
  gossip_->membership().take_generation(g);
}

nlohmann::json Server::twins_json() {
  nlohmann::json peers = nlohmann::json::array();
  if (gossip_) {
    for (const gossip::Twin& t : gossip_->membership().twins(gossip_->now_ms())) {
      peers.push_back({{"id", ring::hex_id(t.id)}, {"addr", t.addr}, {"other_addr", t.other_addr}});
    }
  }
  return {{"members", std::move(peers)},
          {"claims_on_this_node", twin_claims_},
          {"last_claim_addr", twin_addr_},
          {"last_claim_unix_ms", twin_at_unix_ms_}};
}

Status Server::accept_version(const blobstore::Version& v) {
  std::uint64_t wall = clock_->wall_ms();
  if (hlc_.observe(v.hlc, wall)) return Status::ok();
  counters_.versions_refused++;
  std::string ahead = std::to_string(v.wall_ms() - wall);
  std::string why = "version_too_far_ahead: version " + v.to_string() + " is " + ahead +
                    " ms ahead of this node's clock, more than max_version_drift_ms " +
                    std::to_string(hlc_.max_drift_ms());
  if (refused_logged_ms_ == 0 || now_ms() >= refused_logged_ms_ + 10'000) {  // one line per 10 s
    refused_logged_ms_ = now_ms();
    log::warn("refused a write: " + why.substr(why.find(": ") + 2) + " (" +
              std::to_string(counters_.versions_refused) + " refused so far)");
  }
  return Status::invalid(std::move(why));
}

// The Date header names the second the answer was made in: its middle is the best
// guess, so a sample is within about a second of the truth on loopback or a LAN.
void Server::on_peer_date(const std::string& addr, std::int64_t date_s) {
  std::int64_t offset = date_s * 1000 + 500 - static_cast<std::int64_t>(clock_->wall_ms());
  std::uint64_t now = now_ms();
  clock_watch_.sample(addr, offset, now);
  if (clock_checked_ms_ != 0 && now < clock_checked_ms_ + 1000) return;
  clock_checked_ms_ = now;
  ClockWatch::View v = clock_watch_.view(now);
  if (!v.far_off) {
    clock_warned_ms_ = 0;
    return;
  }
  if (clock_warned_ms_ != 0 && now < clock_warned_ms_ + 60'000) return;  // once a minute
  clock_warned_ms_ = now;
  std::int64_t off = v.offset_ms < 0 ? -v.offset_ms : v.offset_ms;
  log::warn("this node's clock is about " + std::to_string(off / 1000) + " s " +
            (v.offset_ms > 0 ? "behind" : "ahead of") + " its peers' (median of " +
            std::to_string(v.peers) + "): check its NTP; versions more than " +
            std::to_string(hlc_.max_drift_ms() / 1000) + " s ahead of a node's clock are refused there");
}

std::string Server::auth_token_for(const std::string& secret) {
  static const char label[] = "ringstore-internal-v1";
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  const std::string key = secret.empty() ? std::string("insecure") : secret;
  ASSERT(HMAC(common::sha256_digest(), key.data(), static_cast<int>(key.size()),
              reinterpret_cast<const unsigned char*>(label), sizeof label - 1, mac, &len) != nullptr);
  return blobstore::hex(mac, len);
}

void Server::on_hint_timer(uv_timer_t* t) {
  auto* self = static_cast<Server*>(t->data);
  if (self != nullptr && !self->stopping_) self->deliver_hints();
}

// Hinted handoff: a copy kept for a replica that was down goes to it once gossip says it
// is alive, and is dropped here after the owner has it durably. At most
// hints_in_flight_max at a time, so delivery never crowds out client traffic.
void Server::deliver_hints() {
  const std::size_t hints_in_flight_max = limits::hints_in_flight_max;
  if (hints_in_flight_ > 0) return;  // one sweep at a time
  // --hint-rate: at most this many a second, whatever the sweeps.
  std::size_t budget = std::min(hints_in_flight_max, hint_policy_->deliverable(now_ms()));
  if (budget == 0) return;
  hint_policy_->take(budget);
  auto hints = store_->hints("", 256);
  if (!hints.is_ok()) return;
  for (const blobstore::BlobMeta& h : hints.value()) {
    if (hints_in_flight_ >= budget) break;
    const Replica* owner = cluster_->find(h.hint_for);
    if (owner == nullptr || owner->self || !owner->alive) continue;
    hints_in_flight_++;
    std::string key = h.key;
    blobstore::Version v = h.version;
    coordinator_->push(key, owner->addr, nullptr, [this, key, v](Status s, bool) {
      hint_sweep_done(s.is_ok());
      if (!s.is_ok() || !store_) return;
      hints_delivered_++;
      Status e = store_->erase_hint(key, v, [](Status, blobstore::CommitResult) {});
      if (!e.is_ok()) log::warn("dropping a delivered hint failed: " + e.message());
    });
  }
  auto missed = store_->missed(256);
  if (!missed.is_ok()) return;
  for (const blobstore::MissedWrite& m : missed.value()) {
    if (hints_in_flight_ >= budget) break;
    const Replica* owner = cluster_->find(m.target);
    if (owner == nullptr || owner->self || !owner->alive) continue;
    hints_in_flight_++;
    coordinator_->push(m.key, owner->addr, nullptr, [this, m](Status s, bool) {
      hint_sweep_done(s.is_ok());
      if (!store_) return;
      // A key deleted and purged here meanwhile has nothing left to hand over; one on a
      // failed disk is handed over once the repair fetched it back.
      if (!s.is_ok() && (s.code() != Code::not_found || store_->held_on_failed_disk(m.key))) return;
      if (s.is_ok()) hints_delivered_++;
      Status e = store_->drop_missed(m.target, m.key, m.version, [](Status, blobstore::CommitResult) {});
      if (!e.is_ok()) log::warn("dropping a delivered hint failed: " + e.message());
    });
  }
}

// A sweep that delivered something goes on at once with the next batch; one that
// delivered nothing waits for the timer, so an owner that refuses is not hammered.
void Server::hint_sweep_done(bool delivered) {
  hints_in_flight_--;
  hint_sweep_delivered_ += delivered;
  if (hints_in_flight_ > 0) return;
  bool again = hint_sweep_delivered_ > 0 && !stopping_ && store_;
  hint_sweep_delivered_ = 0;
  if (again) deliver_hints();
}

nlohmann::json Server::clock_json() {
  ClockWatch::View v = clock_view();
  return {{"offset_from_peers_ms", v.offset_ms}, {"peers_sampled", v.peers}, {"far_off", v.far_off},
          {"warn_ms", limits::clock_offset_warn_ms}, {"max_version_drift_ms", hlc_.max_drift_ms()},
          {"versions_refused", counters_.versions_refused}};
}

nlohmann::json Server::status_json() {
  nlohmann::json disks = nlohmann::json::array();
  for (const auto& d : store_->disks_info(clock_->wall_ms())) {
    disks.push_back({{"path", d.path}, {"healthy", d.healthy}, {"full", d.full}, {"free_bytes", d.free_bytes},
                     {"total_bytes", d.total_bytes},
                     {"state", !d.healthy ? "failed" : d.full ? "full" : "healthy"},
                     {"failure", d.failure}, {"failures", d.failures}});
  }
  nlohmann::json members = nlohmann::json::array();
  auto ring = cluster_->ring();
  auto shares = ring->primary_shares();
  for (std::size_t i = 0; i < ring->members().size(); i++) {
    const ring::Member& m = ring->members()[i];
    const Replica* r = cluster_->find(m.id);
    nlohmann::json e = {{"id", ring::hex_id(m.id)}, {"addr", m.addr}, {"vnodes", m.vnodes},
                        {"zone", m.zone}, {"alive", r ? r->alive : false},
                        {"self", r ? r->self : false}, {"share", shares[i]}};
    for (const auto& [k, v] : member_extra_) {
      if (k == ring::hex_id(m.id)) e.update(v);
    }
    members.push_back(e);
  }
  auto hints = store_->count_hints();
  const CoordinatorCounters& cc = coordinator_->counters();
  nlohmann::json gossip_counters;
  if (gossip_) {
    const auto& gcn = gossip_->membership().counters();
    gossip_counters = {{"datagrams_in", gcn.datagrams_in}, {"datagrams_out", gcn.datagrams_out},
                       {"dropped_bad_mac", gcn.dropped_bad_mac},
                       {"dropped_malformed", gcn.dropped_malformed},
                       {"dropped_oversize", gcn.dropped_oversize},
                       {"dropped_bad_version", gcn.dropped_bad_version}};
  }
  return {
      {"id", blobstore::hex(store_->node_id().data(), store_->node_id().size())},
      {"generation", generation_},
      {"gossip", gossip_counters},
      {"addr", address()},
      {"state", transfers_->status_json()["state"]},
      {"transfers", transfers_->status_json()},
      {"keys", store_->live_keys()},
      {"hints", hints.is_ok() ? hints.value() : 0},
      {"hints_delivered", hints_delivered_},
      {"members", members},
      {"n", coordinator_->effective_n()},
      {"disks", disks},
      {"connections", conns_.size()},
      {"requests", counters_.requests},
      {"corrupt_reads", store_->corrupt_reads()},
      {"read_repairs", cc.read_repairs},
      {"read_repairs_deferred", cc.read_repairs_deferred},
      {"read_repairs_skipped", cc.read_repairs_skipped},
      {"speculative_reads", cc.speculative_reads},
      {"writes_rewritten", cc.writes_rewritten},
      {"writes_superseded", cc.writes_superseded},
      {"puts_already_held", counters_.puts_already_held},
      {"clock", clock_json()},
      {"id_conflicts", twins_json()},
      {"hints_stored", cc.hints_stored},
      {"replica_errors", cc.replica_errors},
      {"anti_entropy", ae_ ? ae_->status_json() : nlohmann::json(nullptr)},
      {"pending_files", {{"files", store_->pending_files()}, {"bytes", store_->pending_bytes()},
                         {"written_out", store_->committer().files_written_out()},
                         {"never_written", store_->committer().files_never_written()}}},
      {"cache", {{"bytes", store_->cache().bytes()}, {"bytes_max", store_->cache().bytes_max()},
                 {"hits", store_->cache().hits()}, {"misses", store_->cache().misses()}}},
      {"hints_by_target", hint_policy_->targets_json(*cluster_, clock_->wall_ms())},
      {"hint_policy", healing_policy_json()},
      {"repair", repairer_->status_json()},
      {"scrub", scrub_json()},
  };
}

const std::string& Server::date_header() {
  std::int64_t now = static_cast<std::int64_t>(clock_->wall_ms() / 1000);
  if (now != date_second_) {
    date_second_ = now;
    date_ = "Date: " + http_date(now) + "\r\n";
  }
  return date_;
}

void Server::on_connection(uv_stream_t* s, int status) {
  auto* self = static_cast<Server*>(s->data);
  if (self == nullptr || status < 0) return;
  auto conn = std::make_shared<Connection>(self, self->now_ms());
  ASSERT(uv_tcp_init(self->loop_, conn->tcp()) == 0);
  conn->tcp()->data = conn.get();
  if (uv_accept(s, reinterpret_cast<uv_stream_t*>(conn->tcp())) != 0) {
    self->conns_.emplace(conn.get(), conn);
    conn->close();
    return;
  }
  self->conns_.emplace(conn.get(), conn);
  if (self->conns_.size() > self->config_.limits.connections_max) {
    self->counters_.connections_refused++;
    static const char busy[] =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        "Content-Length: 49\r\nConnection: close\r\n\r\n"
        "{\"error\":\"too_many_connections\",\"retry\":\"later\"}\n";
    uv_buf_t b = uv_buf_init(const_cast<char*>(busy), sizeof busy - 1);
    uv_try_write(reinterpret_cast<uv_stream_t*>(conn->tcp()), &b, 1);
    conn->close();
    return;
  }
  (void)conn->start();
}

void Server::forget(Connection* c) {
  conns_.erase(c);
  if (stopping_) maybe_finish_stop();
}

void Server::on_async(uv_async_t* a) {
  auto* self = static_cast<Server*>(a->data);
  if (self == nullptr || !self->store_) return;
  self->store_->run_completions();
}

void Server::on_sweep(uv_timer_t* t) {
  auto* self = static_cast<Server*>(t->data);
  if (self != nullptr) self->sweep();
}

void Server::sweep() {
  std::uint64_t now = now_ms();
  std::vector<std::shared_ptr<Connection>> expired;
  for (auto& [p, c] : conns_) {
    if (now >= c->deadline_ms()) expired.push_back(c);
  }
  for (auto& c : expired) c->on_deadline();
  if (stopping_) {
    if (now >= stop_deadline_ms_) {
      std::vector<std::shared_ptr<Connection>> all;
      for (auto& [p, c] : conns_) all.push_back(c);
      for (auto& c : all) c->close();
    }
    maybe_finish_stop();
  }
}

void Server::stop(std::function<void()> done) {
  stopping_ = true;
  stop_done_ = std::move(done);
  stop_deadline_ms_ = now_ms() + config_.limits.drain_timeout_ms;
  close_and_free(listener_);
  std::vector<std::shared_ptr<Connection>> all;
  for (auto& [p, c] : conns_) all.push_back(c);
  for (auto& c : all) {
    if (!c->busy()) {
      c->close();
    } else {
      c->finish_after_response();
    }
  }
  maybe_finish_stop();
}

void Server::maybe_finish_stop() {
  if (!conns_.empty()) return;
  if (sweep_timer_ == nullptr && async_ == nullptr) return;  // already finished
  if (transfers_) transfers_->stop();
  if (repairer_) repairer_->close();
  close_and_free(hint_timer_);
  close_and_free(membership_timer_);
  if (ae_) ae_->stop();
  if (gossip_ && !gossip_stopping_) {
    gossip_stopping_ = true;
    gossip_->stop([this] {
      gossip_stopped_ = true;
      maybe_finish_stop();
    });
  }
  if (gossip_ && !gossip_stopped_) return;
  if (peers_ && !peers_closing_) {
    peers_closing_ = true;
    peers_->close([this] {
      peers_closed_ = true;
      maybe_finish_stop();
    });
  }
  if (peers_ && !peers_closed_) return;
  // No request is left: commit what was queued, close SQLite, then the last handles.
  if (store_) {
    store_.reset();
    log::debug("store closed");
  }
  close_and_free(sweep_timer_);
  close_and_free(async_);
  if (stop_done_) {
    auto done = std::move(stop_done_);
    stop_done_ = nullptr;
    done();
  }
}

}  // namespace node

namespace node {

// /_/metrics in the Prometheus text format (version 0.0.4).
std::string Server::metrics_text() {
  std::string out;
  auto counter = [&out](const char* name, const char* help, std::uint64_t v) {
    metric_header(out, name, "counter", help);
    out += std::string(name) + " " + std::to_string(v) + "\n";
  };
  auto gauge = [&out](const char* name, const char* help, double v) {
    metric_header(out, name, "gauge", help);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    out += std::string(name) + " " + buf + "\n";
  };
  metric_header(out, "ringstore_http_requests_total", "counter", "HTTP requests answered, by method and status.");
  for (const auto& [k, v] : metrics_.requests) {
    out += "ringstore_http_requests_total{method=\"" + k.first + "\",status=\"" +
           std::to_string(k.second) + "\"} " + std::to_string(v) + "\n";
  }
  metric_header(out, "ringstore_http_request_duration_seconds", "histogram",
                "Time from a request's first byte to its last response byte.");
  for (const auto& [method, h] : metrics_.latency) {
    h.write(out, "ringstore_http_request_duration_seconds", "method=\"" + method + "\"");
  }
  counter("ringstore_http_received_bytes_total", "Bytes read from clients.", metrics_.bytes_in);
  counter("ringstore_http_sent_bytes_total", "Bytes written to clients.", metrics_.bytes_out);
  const CoordinatorCounters& cc = coordinator_->counters();
  counter("ringstore_replica_errors_total", "Replica requests that failed.", cc.replica_errors);
  counter("ringstore_replica_timeouts_total", "Replica requests that timed out.", peers_->timeouts());
  counter("ringstore_peer_connections_opened_total", "Connections opened to other nodes (the rest reuse pooled ones).",
          peers_->connections_opened());
  counter("ringstore_writes_unavailable_total", "Writes answered 503: fewer than W replicas.", cc.writes_unavailable);
  const ListCounters& lc = listing_->counters();
  counter("ringstore_list_pages_total", "Listing pages asked for (GET ?list).", lc.pages);
  counter("ringstore_list_peer_requests_total", "Internal listing requests sent to members.",
          lc.peer_requests);
  counter("ringstore_list_peer_failures_total",
          "Internal listing requests that failed or were answered badly.", lc.peer_failures);
  counter("ringstore_list_unavailable_total",
          "Listing pages answered 503: a ring range had too few owners answering.", lc.unavailable);
  counter("ringstore_hints_stored_total", "Hints taken for replicas that missed a write.", cc.hints_stored);
  counter("ringstore_hints_delivered_total", "Hints handed to their owners.", hints_delivered_);
  auto hints = store_->count_hints();
  gauge("ringstore_hints_pending", "Hints waiting for their owners.", hints.is_ok() ? static_cast<double>(hints.value()) : 0);
  counter("ringstore_read_repairs_total", "Replicas repaired after a read found them stale.", cc.read_repairs);
  counter("ringstore_read_repairs_deferred_total", "Read repairs over --read-repairs-per-sec, left to anti-entropy.", cc.read_repairs_deferred);
  counter("ringstore_read_repairs_skipped_total", "Stale replicas left to the version's own write, still within its replica timeout.", cc.read_repairs_skipped);
  counter("ringstore_speculative_reads_total", "Reads that asked one more replica because one was late.", cc.speculative_reads);
  counter("ringstore_writes_rewritten_total", "Writes sent again above a newer version a replica held.", coordinator_->counters().writes_rewritten);
  counter("ringstore_writes_superseded_total", "Writes answered as superseded by a concurrent newer one.", coordinator_->counters().writes_superseded);
  counter("ringstore_versions_refused_total", "Versions refused for being too far ahead of this node's clock.", counters_.versions_refused);
  {
    ClockWatch::View v = clock_view();
    out += "# HELP ringstore_clock_offset_ms Median of the peers' clocks minus this node's (from their Date headers).\n"
           "# TYPE ringstore_clock_offset_ms gauge\nringstore_clock_offset_ms " + std::to_string(v.offset_ms) + "\n";
  }
  counter("ringstore_internal_puts_already_held_total", "Replica writes of a version held here already (no file made).", counters_.puts_already_held);
  counter("ringstore_corrupt_reads_total", "Blob reads that failed their checksum.", store_->corrupt_reads());
  gauge("ringstore_keys", "Live keys held here as a replica (hints excluded).", static_cast<double>(store_->live_keys()));
  if (ae_) ae_->write_metrics(out);
  healing_metrics(out);
  if (gossip_) {
    const auto& g = gossip_->membership().counters();
    metric_header(out, "ringstore_gossip_datagrams_total", "counter", "Gossip datagrams by direction.");
    out += "ringstore_gossip_datagrams_total{direction=\"in\"} " + std::to_string(g.datagrams_in) + "\n";
    out += "ringstore_gossip_datagrams_total{direction=\"out\"} " + std::to_string(g.datagrams_out) + "\n";
    metric_header(out, "ringstore_gossip_dropped_total", "counter", "Gossip datagrams dropped, by reason.");
    out += "ringstore_gossip_dropped_total{reason=\"bad_mac\"} " + std::to_string(g.dropped_bad_mac) + "\n";
    out += "ringstore_gossip_dropped_total{reason=\"malformed\"} " + std::to_string(g.dropped_malformed) + "\n";
    out += "ringstore_gossip_dropped_total{reason=\"oversize\"} " + std::to_string(g.dropped_oversize) + "\n";
    out += "ringstore_gossip_dropped_total{reason=\"bad_version\"} " + std::to_string(g.dropped_bad_version) + "\n";
  }
  std::size_t alive = 0, down = 0;
  auto ring = cluster_->ring();
  for (const auto& m : ring->members()) (cluster_->alive(m.id) ? alive : down)++;
  metric_header(out, "ringstore_members", "gauge", "Ring members by liveness, as this node sees them.");
  out += "ringstore_members{state=\"alive\"} " + std::to_string(alive) + "\n";
  out += "ringstore_members{state=\"down\"} " + std::to_string(down) + "\n";
  metric_header(out, "ringstore_disk_bytes", "gauge", "Disk space by disk and kind.");
  std::string healthy, full;
  for (const auto& d : store_->disks_info(clock_->wall_ms())) {
    std::string l = "disk=\"" + d.path + "\"";
    out += "ringstore_disk_bytes{" + l + ",kind=\"used\"} " + std::to_string(d.total_bytes - d.free_bytes) + "\n";
    out += "ringstore_disk_bytes{" + l + ",kind=\"free\"} " + std::to_string(d.free_bytes) + "\n";
    healthy += "ringstore_disk_healthy{" + l + "} " + (d.healthy ? "1" : "0") + "\n";
    full += "ringstore_disk_full{" + l + "} " + (d.full ? "1" : "0") + "\n";
  }
  metric_header(out, "ringstore_disk_healthy", "gauge", "1 when the disk serves its copies (healthy or full).");
  out += healthy;
  metric_header(out, "ringstore_disk_full", "gauge", "1 when the disk takes no new files: out of room or read-only.");
  out += full;
  const blobstore::Committer& cm = store_->committer();
  metric_header(out, "ringstore_write_stage_seconds", "histogram",
                "Where writes spend their time, by stage: receive, decide and replica on the "
                "coordinator; queue, log_sync, file_sync, index_commit, batch, ack and local in "
                "the local commit (docs/ARCHITECTURE.md, \"Where a write's time goes\").");
  const blobstore::CommitStages& st = cm.stages();
  const Coordinator::WriteStages& ws = coordinator_->write_stages();
  const std::pair<const char*, const common::LatencyHistogram*> stages[] = {
      {"receive", &ws.receive},     {"decide", &ws.decide},       {"replica", &ws.replica},
      {"queue", &st.queue},         {"log_sync", &st.log_sync},   {"file_sync", &st.file_sync},
      {"index_commit", &st.index_commit}, {"batch", &st.batch},   {"ack", &st.ack},
      {"local", &st.local}};
  for (const auto& [name, h] : stages) {
    h->write(out, "ringstore_write_stage_seconds", std::string("stage=\"") + name + "\"");
  }
  counter("ringstore_batch_syncs_total",
          "syncfs(), fsync() and commit log fdatasync() calls that made write batches durable (--sync always).",
          cm.batch_syncs());
  counter("ringstore_periodic_syncs_total",
          "syncfs() calls of the sync rounds (--sync periodic, and the commit log's).", cm.periodic_syncs());
  counter("ringstore_periodic_sync_errors_total", "Failed syncs of the sync rounds (the disk is marked failed).",
          cm.periodic_sync_errors());
  counter("ringstore_commit_log_checkpoints_total",
          "Sync rounds after which the commit log dropped the records before them (--sync always).",
          cm.log_checkpoints());
  gauge("ringstore_pending_files",
        "Small files durable in the commit log and served from memory, not yet written under their names.",
        static_cast<double>(store_->pending_files()));
  gauge("ringstore_pending_file_bytes", "Bytes of the pending files (bounded by the commit log's capacity).",
        static_cast<double>(store_->pending_bytes()));
  counter("ringstore_files_written_out_total", "Pending files a sync round wrote out under their names.",
          cm.files_written_out());
  counter("ringstore_files_never_written_total",
          "Pending files whose version was superseded or purged before a sync round wrote them: no file was made.",
          cm.files_never_written());
  return out;
}

}  // namespace node
