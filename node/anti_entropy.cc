#include "node/anti_entropy.h"

#include <openssl/evp.h>

#include <algorithm>
#include <map>
#include <unordered_map>

#include "common/assert.h"
#include "common/digest.h"
#include "node/coordinator.h"
#include "node/http_status.h"
#include "node/json_util.h"
#include "node/log.h"
#include "node/request.h"
#include "node/server.h"
#include "ring/hash.h"

namespace node {

namespace {

constexpr std::string_view ae_prefix = "_/internal/ae/";
constexpr std::string_view ae_summary = "_/internal/ae/summary";
constexpr std::string_view ae_keys = "_/internal/ae/keys";
constexpr std::uint16_t no_member = 0xffff;
static_assert(ring::limits::nodes_max < no_member, "member indices fit 16 bits");

using Entry = AeEntry;

// This node's replica rows (hint rows left out) at positions in [from, to], in position
// order, at most about `limit` of them. When the range goes on past them, *more is set
// and *next is the first position not returned: every row in [from, *next - 1] is in
// *out. A page never ends between two rows of one position.
Status scan_replica_rows(blobstore::BlobStore& store, std::uint64_t from, std::uint64_t to,
                         std::size_t limit, std::vector<Entry>* out, bool* more,
                         std::uint64_t* next) {
  std::vector<blobstore::BlobMeta> rows;
  if (Status s = store.scan_positions(from, to, limit + 1, &rows); !s.is_ok()) return s;
  out->clear();
  *more = rows.size() > limit;
  std::size_t keep = rows.size();
  if (*more) {
    std::uint64_t cut = ring::key_position(rows[limit].key);
    keep = limit;
    while (keep > 0 && ring::key_position(rows[keep - 1].key) == cut) keep--;
    *next = cut;
    if (keep == 0) {
      // limit + 1 keys at one position (a 64-bit collision, limit + 1 times): take them.
      keep = rows.size();
      *more = cut != to;
      *next = cut + 1;
    }
  }
  for (std::size_t i = 0; i < keep; i++) {
    if (rows[i].is_hint) continue;
    out->push_back({std::move(rows[i].key), rows[i].version, rows[i].tombstone, 0, rows[i].expires_ms});
    out->back().position = ring::key_position(out->back().key);
  }
  return Status::ok();
}

bool expired(const blobstore::Version& v, std::uint64_t grace_s, std::uint64_t now_ms) {
  return now_ms > v.wall_ms() && now_ms - v.wall_ms() > grace_s * 1000;
}

// A tombstone past the grace, or a value that expired longer than the grace ago: an
// expired value is a tombstone whose age counts from its expiry. Either is purged once
// every replica holds it (or nothing older), and is not copied back to one that lacks it.
bool purge_due(const Entry& e, std::uint64_t grace_s, std::uint64_t now_ms) {
  if (e.tombstone) return expired(e.version, grace_s, now_ms);
  return e.expires_ms != 0 && now_ms > e.expires_ms && now_ms - e.expires_ms > grace_s * 1000;
}

// A [hash, count] pair as the summary endpoint writes it.
bool parse_leaf(const nlohmann::json& j, std::size_t at, blobstore::Leaf* out) {
  if (!j.is_array() || j.size() != at + 2) return false;
  if (!j[at].is_string() || !j[at + 1].is_number_unsigned()) return false;
  if (!blobstore::Leaf::parse_hash(j[at].get_ref<const std::string&>(), out)) return false;
  out->count = j[at + 1].get<std::uint64_t>();
  return true;
}

// Of two replicas, one compares (and pushes and pulls) for both, so that a difference
// is found and moved once, not twice. Which one depends on both ids, so the work spreads
// evenly over the nodes.
bool compares_with(const ring::NodeId& self, const ring::NodeId& peer) {
  bool smaller_works = ((self[15] ^ peer[15]) & 1) != 0;
  return (self < peer) == smaller_works;
}

}  // namespace

bool parse_summary_answer(std::string_view body, std::size_t shared_arcs, std::size_t start,
                          std::vector<blobstore::Leaf>* groups, std::size_t* next) {
  groups->clear();
  *next = 0;
  auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  const nlohmann::json* g = field(j, "groups");
  const nlohmann::json* arcs = field(j, "shared_arcs");
  const nlohmann::json* nx = field(j, "next");
  if (g == nullptr || !g->is_array() || arcs == nullptr || !arcs->is_number_unsigned() ||
      arcs->get<std::uint64_t>() != shared_arcs || nx == nullptr) {
    return false;
  }
  const std::size_t group_count = limits::ae_groups_of(shared_arcs);
  if (start > group_count || g->size() > group_count - start) return false;
  for (const nlohmann::json& e : *g) {
    blobstore::Leaf leaf;
    if (!parse_leaf(e, 0, &leaf)) return false;
    groups->push_back(leaf);
  }
  if (nx->is_number_unsigned() && nx->get<std::uint64_t>() > start && nx->get<std::uint64_t>() < group_count) {
    *next = static_cast<std::size_t>(nx->get<std::uint64_t>());
  }
  return true;
}

bool parse_arcs_answer(std::string_view body, const std::size_t* arcs, std::size_t n,
                       std::vector<blobstore::Leaf>* out) {
  out->clear();
  auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  const nlohmann::json* a = field(j, "arcs");
  if (a == nullptr || !a->is_array() || a->size() != n) return false;
  for (std::size_t i = 0; i < n; i++) {
    const nlohmann::json& e = (*a)[i];
    blobstore::Leaf leaf;
    if (!e.is_array() || e.empty() || !e[0].is_number_unsigned() || e[0].get<std::uint64_t>() != arcs[i] ||
        !parse_leaf(e, 1, &leaf)) {
      return false;
    }
    out->push_back(leaf);
  }
  return true;
}

struct AntiEntropy::Transfer {
  enum class Kind : std::uint8_t { push, pull, handoff, purge_check };
  Kind kind = Kind::push;
  std::string key;
  blobstore::Version version;
  std::vector<std::string> addrs;  // the peer, or the owners / other replicas
};

// One comparison with one peer, level by level.
struct AntiEntropy::Compare {
  std::uint64_t gen = 0;
  ring::NodeId peer{};
  std::string addr;
  std::vector<std::size_t> shared;  // arcs both hold, ascending
  std::size_t groups_start = 0;
  std::vector<std::size_t> diff_groups;
  std::unordered_map<std::size_t, blobstore::Leaf> remote_groups;
  std::size_t next_group = 0;
  // The group being synced: its differing arcs and their position intervals.
  std::vector<std::size_t> run_arcs;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  std::size_t next_range = 0;
  std::uint64_t cursor = 0;
  std::map<std::size_t, blobstore::Leaf> seen;  // local leaves of run_arcs, recomputed
  std::uint64_t changes_at_start = 0;
};

AntiEntropy::AntiEntropy(Server& server, const common::Clock& clock, AntiEntropyConfig config)
    : server_(server),
      clock_(clock),
      config_(config),
      budget_(config.keys_per_sec,
              std::max<double>(limits::ae_transfers_in_flight_max, config.keys_per_sec / 10.0)) {}

AntiEntropy::~AntiEntropy() { ASSERT(timer_ == nullptr); }

Status AntiEntropy::start() {
  timer_ = new uv_timer_t;
  ASSERT(uv_timer_init(server_.loop(), timer_) == 0);
  timer_->data = this;
  std::uint64_t now = clock_.monotonic_ms();
  budget_.start_at(now);
  // The first pass waits one interval: gossip needs a moment to find the members.
  next_pass_ms_ = now + config_.interval_ms;
  uv_timer_start(timer_, on_tick, limits::ae_tick_ms, limits::ae_tick_ms);
  return Status::ok();
}

void AntiEntropy::stop() {
  stopped_ = true;
  resume_ = nullptr;
  queue_.clear();
  close_and_free(timer_);
}

void AntiEntropy::on_tick(uv_timer_t* t) {
  auto* self = static_cast<AntiEntropy*>(t->data);
  if (self == nullptr) return;
  self->tick();
}

void AntiEntropy::tick() {
  if (stopped_) return;
  if (ring_changed()) begin_rebuild();
  if (rebuilding_) {
    rebuild_step();
    if (rebuilding_) return;
  }
  std::uint64_t now = clock_.monotonic_ms();
  budget_.refill(now);
  pump();
  if (resume_ && queue_.size() < limits::ae_queue_max / 2) {
    auto f = std::move(resume_);
    resume_ = nullptr;
    f();
  }
  // A pass starts only once the last one's transfers are done: comparing again before
  // that would queue the same differences twice.
  if (!pass_running_ && config_.interval_ms > 0 && now >= next_pass_ms_ && summaries_ &&
      queue_.empty() && in_flight_ == 0) {
    start_pass();
  }
}

// ---- summaries ----

bool AntiEntropy::ring_changed() const {
  auto current = server_.cluster().ring();
  std::size_t n = server_.coordinator().effective_n();
  if (rebuilding_) return current != next_ring_ || n != next_n_;
  return current != ring_ || n != n_;
}

std::string AntiEntropy::fingerprint_of(const ring::Ring& r, std::size_t n) const {
  std::string buf = std::to_string(n);
  for (const ring::Member& m : r.members()) {
    buf += "|" + ring::hex_id(m.id) + ":" + std::to_string(m.vnodes) + ":" +
           std::to_string(static_cast<int>(m.state)) + ":" + m.zone;
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  ASSERT(EVP_Digest(buf.data(), buf.size(), md, &len, common::sha256_digest(), nullptr) == 1);
  return blobstore::hex(md, 8);
}

// A new ring means new arcs: the summaries are rebuilt from the index, a chunk per tick,
// and a pass in progress is abandoned (its arcs no longer exist).
void AntiEntropy::begin_rebuild() {
  next_ring_ = server_.cluster().ring();
  next_n_ = server_.coordinator().effective_n();
  pass_gen_++;
  pass_running_ = false;
  local_phase_ = false;
  resume_ = nullptr;
  next_pass_ms_ = clock_.monotonic_ms() + config_.interval_ms;
  std::size_t arcs = next_ring_->token_count();
  if (arcs == 0) {
    rebuilding_ = false;
    ring_ = next_ring_;
    n_ = next_n_;
    summaries_.reset();
    next_.reset();
    return;
  }
  std::vector<std::uint64_t> tokens(arcs);
  for (std::size_t i = 0; i < arcs; i++) tokens[i] = next_ring_->token_position(i);
  next_ = std::make_unique<blobstore::RangeSummaries>(std::move(tokens));
  next_owners_.assign(arcs * next_n_, no_member);
  ring::PreferenceList p;
  for (std::size_t i = 0; i < arcs; i++) {
    next_ring_->preference_list(next_ring_->token_position(i), next_n_, &p);
    for (std::size_t j = 0; j < p.size; j++) {
      next_owners_[i * next_n_ + j] = static_cast<std::uint16_t>(p.nodes[j]);
    }
  }
  rebuild_cursor_ = 0;
  rebuilding_ = true;
}

void AntiEntropy::rebuild_step() {
  // Writes that finished are applied first, so fewer of them race the scan (one that
  // commits between this and the scan is counted twice; the comparison finds and fixes
  // such an arc, see finish_runs).
  server_.store().run_completions();
  if (!rebuilding_) return;
  std::vector<Entry> rows;
  bool more = false;
  std::uint64_t next = 0;
  Status s = scan_replica_rows(server_.store(), rebuild_cursor_, ~0ull,
                               limits::ae_rebuild_rows_per_tick, &rows, &more, &next);
  if (!s.is_ok()) {
    log::warn("anti-entropy: reading the index failed: " + s.message());
    return;  // again next tick
  }
  for (const Entry& e : rows) next_->add(e.position, blobstore::entry_leaf(e.key, e.version, e.tombstone));
  if (more) {
    rebuild_cursor_ = next;
    return;
  }
  summaries_ = std::move(next_);
  arc_owners_ = std::move(next_owners_);
  ring_ = std::move(next_ring_);
  n_ = next_n_;
  fingerprint_ = fingerprint_of(*ring_, n_);
  rebuilding_ = false;
  counters_.summary_rebuilds++;
}

void AntiEntropy::on_change(const std::string& key, const blobstore::CommitResult& r) {
  changes_++;
  std::uint64_t pos = ring::key_position(key);
  blobstore::RangeSummaries* target = nullptr;
  if (rebuilding_) {
    if (next_ && pos < rebuild_cursor_) target = next_.get();  // later rows: the scan sees them
  } else {
    target = summaries_.get();
  }
  if (target == nullptr) return;
  if (r.replica_before) {
    target->remove(pos, blobstore::entry_leaf(key, r.replica_before->version, r.replica_before->tombstone));
  }
  if (r.replica_after) {
    target->add(pos, blobstore::entry_leaf(key, r.replica_after->version, r.replica_after->tombstone));
  }
}

bool AntiEntropy::owns(std::size_t arc, int member) const {
  if (member < 0) return false;
  for (std::size_t j = 0; j < n_; j++) {
    if (arc_owners_[arc * n_ + j] == member) return true;
  }
  return false;
}

std::vector<std::size_t> AntiEntropy::shared_arcs(int a, int b) const {
  std::vector<std::size_t> out;
  if (!summaries_ || a < 0 || b < 0) return out;
  for (std::size_t i = 0; i < summaries_->arc_count(); i++) {
    if (owns(i, a) && owns(i, b)) out.push_back(i);
  }
  return out;
}

// ---- the pass ----

void AntiEntropy::start_pass() {
  pass_running_ = true;
  pass_gen_++;
  pass_started_ms_ = clock_.monotonic_ms();
  pass_peers_.clear();
  for (const ring::Member& m : ring_->members()) {
    if (m.id == server_.cluster().self()) continue;
    if (m.state == ring::MemberState::left || m.state == ring::MemberState::removed) continue;
    pass_peers_.push_back(m.id);
  }
  pass_peer_ = 0;
  next_peer();
}

void AntiEntropy::next_peer() {
  int self_idx = ring_->index_of(server_.cluster().self());
  while (pass_peer_ < pass_peers_.size()) {
    const ring::NodeId id = pass_peers_[pass_peer_++];
    if (!compares_with(server_.cluster().self(), id)) continue;  // the peer compares with us
    const Replica* rep = server_.cluster().find(id);
    if (rep == nullptr || !rep->alive) continue;
    auto cmp = std::make_shared<Compare>();
    cmp->gen = pass_gen_;
    cmp->peer = id;
    cmp->addr = rep->addr;
    cmp->shared = shared_arcs(self_idx, ring_->index_of(id));
    if (cmp->shared.empty()) continue;
    return fetch_groups(cmp);
  }
  local_phase_ = true;
  local_arc_ = 0;
  // Finding purgeable tombstones reads every arc that holds one: a tenth of the grace
  // between looks (at most an hour) purges within 1.1 × grace at a small fraction of
  // the cost of looking every pass.
  std::uint64_t now = clock_.monotonic_ms();
  purge_now_ = now >= next_purge_ms_;
  if (purge_now_) {
    std::uint64_t every = std::min<std::uint64_t>(config_.tombstone_grace_s * 100, 3'600'000);
    next_purge_ms_ = now + every;
    // Values that expired longer than the grace ago: a partial index over expiring rows
    // answers it, so stores without expiring values pay nothing.
    std::uint64_t grace_ms = config_.tombstone_grace_s * 1000;
    std::uint64_t wall = clock_.wall_ms();
    auto due = server_.store().count_expired_before(wall > grace_ms ? wall - grace_ms : 0);
    purge_expired_ = due.is_ok() && due.value() > 0;
  }
  local_step();
}

void AntiEntropy::fetch_groups(const std::shared_ptr<Compare>& cmp) {
  auto req = std::make_unique<PeerRequest>();
  req->method = "GET";
  req->target = std::string("/") + std::string(ae_summary) + "?ring=" + fingerprint_ +
                "&with=" + ring::hex_id(server_.cluster().self()) +
                "&start=" + std::to_string(cmp->groups_start);
  req->response_body_max = limits::ae_response_bytes_max;
  req->timeout_ms = server_.coordinator().config().replica_timeout_ms;
  req->done = [this, cmp](Status s, PeerResponse r) {
    if (!pass_alive(cmp->gen)) return;
    std::vector<blobstore::Leaf> groups;
    std::size_t next = 0;
    if (!s.is_ok() || r.status != 200 ||
        !parse_summary_answer(r.body, cmp->shared.size(), cmp->groups_start, &groups, &next)) {
      counters_.peer_errors++;
      if (s.is_ok() && r.status != 409 && r.status != 503) {
        log::warn("anti-entropy: bad summary answer from " + cmp->addr + ": " + std::to_string(r.status));
      }
      return next_peer();
    }
    for (std::size_t i = 0; i < groups.size(); i++) {
      std::size_t g = cmp->groups_start + i;
      const blobstore::Leaf& remote = groups[i];
      blobstore::Leaf local;
      std::size_t end = std::min(cmp->shared.size(), (g + 1) * limits::ae_group_arcs);
      for (std::size_t k = g * limits::ae_group_arcs; k < end; k++) local.add(summaries_->leaf(cmp->shared[k]));
      counters_.ranges_compared += end - g * limits::ae_group_arcs;
      if (!local.same(remote)) {
        cmp->diff_groups.push_back(g);
        cmp->remote_groups[g] = remote;
      }
    }
    if (next != 0) {
      cmp->groups_start = next;
      return fetch_groups(cmp);
    }
    next_group(cmp);
  };
  server_.peers().send(cmp->addr, std::move(req));
}

void AntiEntropy::next_group(const std::shared_ptr<Compare>& cmp) {
  if (cmp->next_group >= cmp->diff_groups.size()) return next_peer();
  std::size_t g = cmp->diff_groups[cmp->next_group++];
  std::size_t begin = g * limits::ae_group_arcs;
  std::size_t end = std::min(cmp->shared.size(), begin + limits::ae_group_arcs);
  blobstore::Leaf local;
  for (std::size_t k = begin; k < end; k++) local.add(summaries_->leaf(cmp->shared[k]));
  if (local.empty() || cmp->remote_groups[g].empty()) {
    // One side holds nothing here: every arc of the group differs, no need to ask.
    cmp->run_arcs.assign(cmp->shared.begin() + static_cast<std::ptrdiff_t>(begin),
                         cmp->shared.begin() + static_cast<std::ptrdiff_t>(end));
    return sync_runs(cmp);
  }
  fetch_arcs(cmp, g);
}

void AntiEntropy::fetch_arcs(const std::shared_ptr<Compare>& cmp, std::size_t g) {
  auto req = std::make_unique<PeerRequest>();
  req->method = "GET";
  req->target = std::string("/") + std::string(ae_summary) + "?ring=" + fingerprint_ +
                "&with=" + ring::hex_id(server_.cluster().self()) + "&group=" + std::to_string(g);
  req->response_body_max = limits::ae_response_bytes_max;
  req->timeout_ms = server_.coordinator().config().replica_timeout_ms;
  req->done = [this, cmp, g](Status s, PeerResponse r) {
    if (!pass_alive(cmp->gen)) return;
    std::size_t begin = g * limits::ae_group_arcs;
    std::size_t end = std::min(cmp->shared.size(), begin + limits::ae_group_arcs);
    std::vector<blobstore::Leaf> leaves;
    if (!s.is_ok() || r.status != 200 ||
        !parse_arcs_answer(r.body, cmp->shared.data() + begin, end - begin, &leaves)) {
      counters_.peer_errors++;
      return next_peer();
    }
    cmp->run_arcs.clear();
    for (std::size_t i = 0; i < leaves.size(); i++) {
      if (!summaries_->leaf(cmp->shared[begin + i]).same(leaves[i])) cmp->run_arcs.push_back(cmp->shared[begin + i]);
    }
    sync_runs(cmp);
  };
  server_.peers().send(cmp->addr, std::move(req));
}

// The differing arcs become position intervals, adjacent ones merged, so that a group
// whose arcs all differ (a wiped replica) costs a few key pages, not one request per arc.
void AntiEntropy::sync_runs(const std::shared_ptr<Compare>& cmp) {
  counters_.ranges_differing += cmp->run_arcs.size();
  cmp->ranges.clear();
  for (std::size_t arc : cmp->run_arcs) {
    std::uint64_t first[2], last[2];
    int n = summaries_->arc_intervals(arc, first, last);
    for (int i = 0; i < n; i++) {
      if (!cmp->ranges.empty() && cmp->ranges.back().second != ~0ull &&
          cmp->ranges.back().second + 1 == first[i]) {
        cmp->ranges.back().second = last[i];
      } else {
        cmp->ranges.push_back({first[i], last[i]});
      }
    }
  }
  cmp->next_range = 0;
  cmp->seen.clear();
  cmp->changes_at_start = changes_;
  if (!cmp->ranges.empty()) cmp->cursor = cmp->ranges[0].first;
  sync_page(cmp);
}

void AntiEntropy::sync_page(const std::shared_ptr<Compare>& cmp) {
  if (!pass_alive(cmp->gen)) return;
  if (cmp->next_range >= cmp->ranges.size()) return finish_runs(cmp);
  if (queue_.size() >= limits::ae_queue_max / 2) {
    resume_ = [this, cmp] { sync_page(cmp); };
    return;
  }
  std::uint64_t to = cmp->ranges[cmp->next_range].second;
  auto req = std::make_unique<PeerRequest>();
  req->method = "GET";
  req->target = std::string("/") + std::string(ae_keys) + "?from=" + std::to_string(cmp->cursor) +
                "&to=" + std::to_string(to);
  req->response_body_max = limits::ae_response_bytes_max;
  req->timeout_ms = server_.coordinator().config().replica_timeout_ms;
  req->done = [this, cmp](Status s, PeerResponse r) {
    if (!pass_alive(cmp->gen)) return;
    if (!s.is_ok() || r.status != 200) {
      counters_.peer_errors++;
      return next_peer();
    }
    on_keys_page(cmp, r.body);
  };
  server_.peers().send(cmp->addr, std::move(req));
}

// Merges one page of the peer's entries with this node's rows over the span both cover,
// and queues what differs. Last writer wins; a tombstone past its grace that one side
// lacks is left alone (that side purged it).
bool parse_keys_page(std::string_view text, std::uint64_t from, std::uint64_t to,
                     std::vector<AeEntry>* out, std::uint64_t* covered_to) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  std::vector<Entry>& remote = *out;
  remote.clear();
  const nlohmann::json* entries = field(j, "entries");
  const nlohmann::json* next = field(j, "next");
  bool bad = entries == nullptr || !entries->is_array() || next == nullptr ||
             (!next->is_null() && !next->is_number_unsigned());
  std::uint64_t remote_end = to;
  if (!bad && next->is_number_unsigned()) {
    std::uint64_t nx = next->get<std::uint64_t>();
    bad = nx <= from || nx > to;
    remote_end = nx - 1;
  }
  for (std::size_t i = 0; !bad && i < entries->size(); i++) {
    const nlohmann::json& e = (*entries)[i];
    Entry x;
    bad = !e.is_array() || e.size() < 3 || e.size() > 4 || !e[0].is_string() || !e[1].is_string() ||
          !e[2].is_number_unsigned() || (e.size() == 4 && !e[3].is_number_unsigned());
    if (bad) break;
    const std::string& hk = e[0].get_ref<const std::string&>();
    x.key.resize(hk.size() / 2);
    auto v = blobstore::Version::parse(e[1].get_ref<const std::string&>());
    bad = hk.size() % 2 != 0 || !v ||
          !blobstore::unhex(hk, reinterpret_cast<std::uint8_t*>(x.key.data()), x.key.size()) ||
          !validate_key(x.key).is_ok();
    if (bad) break;
    x.version = *v;
    x.tombstone = e[2].get<std::uint64_t>() != 0;
    if (e.size() == 4) x.expires_ms = e[3].get<std::uint64_t>();
    x.position = ring::key_position(x.key);
    bad = x.position < from || x.position > remote_end;
    remote.push_back(std::move(x));
  }
  *covered_to = remote_end;
  return !bad;
}

void AntiEntropy::on_keys_page(const std::shared_ptr<Compare>& cmp, std::string_view body) {
  const std::uint64_t from = cmp->cursor;
  const std::uint64_t to = cmp->ranges[cmp->next_range].second;
  std::vector<Entry> remote;
  std::uint64_t remote_end = to;
  if (!parse_keys_page(body, from, to, &remote, &remote_end)) {
    counters_.peer_errors++;
    log::warn("anti-entropy: bad key list from " + cmp->addr);
    return next_peer();
  }
  std::vector<Entry> local;
  bool more = false;
  std::uint64_t lnext = 0;
  if (Status s = scan_replica_rows(server_.store(), from, to, limits::ae_keys_page_max, &local, &more, &lnext);
      !s.is_ok()) {
    log::warn("anti-entropy: reading the index failed: " + s.message());
    return next_peer();
  }
  std::uint64_t end = std::min(remote_end, more ? lnext - 1 : to);
  std::uint64_t now = clock_.wall_ms();
  std::unordered_map<std::string, const Entry*> mine;
  for (const Entry& e : local) {
    if (e.position > end) break;
    mine[e.key] = &e;
    cmp->seen[summaries_->arc_of(e.position)].add(blobstore::entry_leaf(e.key, e.version, e.tombstone));
  }
  for (const Entry& e : remote) {
    if (e.position > end) break;
    auto it = mine.find(e.key);
    if (it == mine.end()) {
      if (!purge_due(e, config_.tombstone_grace_s, now)) {
        enqueue({Transfer::Kind::pull, e.key, e.version, {cmp->addr}});
      }
      continue;
    }
    const Entry& l = *it->second;
    if (l.version < e.version) enqueue({Transfer::Kind::pull, e.key, e.version, {cmp->addr}});
    if (e.version < l.version) enqueue({Transfer::Kind::push, l.key, l.version, {cmp->addr}});
    mine.erase(it);
  }
  for (const auto& [k, l] : mine) {
    if (!purge_due(*l, config_.tombstone_grace_s, now)) {
      enqueue({Transfer::Kind::push, l->key, l->version, {cmp->addr}});
    }
  }
  if (end >= to) {
    cmp->next_range++;
    if (cmp->next_range < cmp->ranges.size()) cmp->cursor = cmp->ranges[cmp->next_range].first;
  } else {
    cmp->cursor = end + 1;
  }
  sync_page(cmp);
}

// The local leaves of the group's differing arcs were recomputed from the index during
// the merge. When no write touched the summaries meanwhile, they replace the kept ones:
// a leaf that drifted (a write counted twice while a rebuild ran) heals here.
void AntiEntropy::finish_runs(const std::shared_ptr<Compare>& cmp) {
  if (changes_ == cmp->changes_at_start) {
    for (std::size_t arc : cmp->run_arcs) {
      blobstore::Leaf fresh = cmp->seen[arc];
      const blobstore::Leaf& kept = summaries_->leaf(arc);
      if (!fresh.same(kept) || fresh.tombstones != kept.tombstones) {
        summaries_->set(arc, fresh);
        counters_.summary_fixes++;
      }
    }
  }
  next_group(cmp);
}

// Arcs this node does not own but holds keys in go to their owners; tombstones past the
// grace in arcs it owns are checked with the other replicas. A few hundred arcs per tick.
void AntiEntropy::local_step() {
  constexpr std::size_t arcs_per_step = 4096;
  if (stopped_ || !local_phase_) return;
  int self_idx = ring_->index_of(server_.cluster().self());
  std::uint64_t now = clock_.wall_ms();
  // While a member joins or leaves (and until this node's handoff pass for the new ring
  // is done) keys outside our arcs are the membership transfers' to move: a joiner's
  // future ranges look stray in the current ring, and dropping them undid the join.
  const bool hand_off_strays = server_.transfers().moves_done();
  std::size_t stop_at = std::min(summaries_->arc_count(), local_arc_ + arcs_per_step);
  for (; local_arc_ < stop_at; local_arc_++) {
    if (queue_.size() >= limits::ae_queue_max / 2) break;
    const blobstore::Leaf& leaf = summaries_->leaf(local_arc_);
    if (leaf.empty()) continue;
    bool owned = owns(local_arc_, self_idx);
    if (!owned && !hand_off_strays) continue;
    // Leaves count tombstones, not expiring values: while this node holds a value due
    // for purging, every owned arc is read (purge_expired_).
    if (owned && (!purge_now_ || (leaf.tombstones == 0 && !purge_expired_))) continue;
    std::vector<std::string> addrs;
    bool all_alive = true;
    for (std::size_t j = 0; j < n_; j++) {
      std::uint16_t m = arc_owners_[local_arc_ * n_ + j];
      if (m == no_member || static_cast<int>(m) == self_idx) continue;
      const Replica* r = server_.cluster().find(ring_->members()[m].id);
      if (r == nullptr || !r->alive) all_alive = false;
      if (r != nullptr) addrs.push_back(r->addr);
    }
    if (!all_alive || addrs.empty()) continue;  // an owner is down: next pass
    std::uint64_t first[2], last[2];
    int n = summaries_->arc_intervals(local_arc_, first, last);
    for (int i = 0; i < n; i++) {
      std::vector<Entry> rows;
      bool more = false;
      std::uint64_t next = 0;
      // Rows past one page wait for the next pass.
      if (!scan_replica_rows(server_.store(), first[i], last[i], limits::ae_keys_page_max, &rows, &more, &next).is_ok()) continue;
      for (const Entry& e : rows) {
        if (!owned) {
          enqueue({Transfer::Kind::handoff, e.key, e.version, addrs});
        } else if (purge_due(e, config_.tombstone_grace_s, now)) {
          enqueue({Transfer::Kind::purge_check, e.key, e.version, addrs});
        }
      }
    }
  }
  if (local_arc_ < summaries_->arc_count()) {
    resume_ = [this] { local_step(); };
    return;
  }
  finish_pass();
}

void AntiEntropy::finish_pass() {
  std::uint64_t now = clock_.monotonic_ms();
  pass_running_ = false;
  local_phase_ = false;
  counters_.passes++;
  counters_.last_pass_ms = now - pass_started_ms_;
  counters_.last_pass_end_unix_ms = clock_.wall_ms();
  next_pass_ms_ = now + config_.interval_ms;
}

// ---- transfers ----

void AntiEntropy::enqueue(Transfer t) { queue_.push_back(std::move(t)); }

// The peer held the version already: its other replica, or a read repair, got there
// first (both replicas of a wiped node offer it every key). Nothing was written, so the
// budget, which bounds the writes a transfer costs the foreground, gets it back.
void AntiEntropy::offer_was_held() {
  counters_.offers_already_held++;
  budget_.give(1);
}

void AntiEntropy::pump() {
  if (pumping_) return;  // a transfer that finished at once: the loop below goes on
  pumping_ = true;
  while (!stopped_ && in_flight_ < limits::ae_transfers_in_flight_max && !queue_.empty()) {
    double cost = static_cast<double>(std::max<std::size_t>(1, queue_.front().addrs.size()));
    if (budget_.tokens() < cost && !(budget_.tokens() >= 1 && in_flight_ == 0)) break;
    budget_.take(cost);
    auto t = std::make_shared<Transfer>(std::move(queue_.front()));
    queue_.pop_front();
    if (t->kind == Transfer::Kind::pull && holds(t->key, t->version)) continue;  // came meanwhile
    in_flight_++;
    run_transfer(t);
  }
  pumping_ = false;
}

bool AntiEntropy::holds(const std::string& key, const blobstore::Version& v) {
  auto m = server_.store().lookup(key);
  return m.is_ok() && !m.value().is_hint && !(m.value().version < v);
}

void AntiEntropy::transfer_done(bool ok) {
  if (stopped_) return;
  in_flight_--;
  if (!ok) counters_.transfer_errors++;
  pump();
}

void AntiEntropy::run_transfer(const std::shared_ptr<Transfer>& t) {
  const std::uint32_t timeout = 4 * server_.coordinator().config().replica_timeout_ms;
  switch (t->kind) {
    case Transfer::Kind::push:
      return server_.coordinator().push(t->key, t->addrs[0], nullptr, [this](Status s, bool applied) {
        if (stopped_) return;
        if (s.is_ok()) counters_.keys_pushed++;
        if (s.is_ok() && !applied) offer_was_held();
        transfer_done(s.is_ok() || s.code() == Code::not_found);  // gone here meanwhile
      });
    case Transfer::Kind::pull: {
      // The peer pushes its copy here: one round trip, and its version, MD5 and content
      // type come along as in any replica write.
      auto req = std::make_unique<PeerRequest>();
      req->method = "POST";
      req->target = "/_/internal/push/" + encode_key(t->key) + "?to=" + encode_key(server_.address());
      req->timeout_ms = timeout;
      req->done = [this](Status s, PeerResponse r) {
        if (stopped_) return;
        bool ok = s.is_ok() && r.status == 200;
        if (ok) counters_.keys_pulled++;
        if (ok && answered_already_held(r)) offer_was_held();
        transfer_done(ok || (s.is_ok() && r.status == 404));
      };
      return server_.peers().send(t->addrs[0], std::move(req));
    }
    case Transfer::Kind::handoff:
    case Transfer::Kind::purge_check:
      break;
  }
  // Every owner (hand-off) or other replica (purge) must answer before this node's copy
  // goes: dropped only once all of them hold the same version or a newer one.
  struct Votes {
    std::size_t pending = 0;
    bool all = true;
  };
  auto votes = std::make_shared<Votes>();
  votes->pending = t->addrs.size();
  auto decided = [this, t, votes] {
    if (stopped_ || --votes->pending > 0) return;
    if (!votes->all) return transfer_done(false);
    bool handoff = t->kind == Transfer::Kind::handoff;
    Status s = server_.store().purge(t->key, t->version, [this, handoff](Status st, blobstore::CommitResult r) {
      if (stopped_) return;
      if (st.is_ok() && r.applied) (handoff ? counters_.keys_handed_off : counters_.tombstones_purged)++;
      transfer_done(st.is_ok());
    });
    if (!s.is_ok()) transfer_done(false);
  };
  for (const std::string& addr : t->addrs) {
    if (t->kind == Transfer::Kind::handoff) {
      server_.coordinator().push(t->key, addr, nullptr, [votes, decided](Status s, bool) {
        if (!s.is_ok()) votes->all = false;
        decided();
      });
      continue;
    }
    auto req = std::make_unique<PeerRequest>();
    req->method = "HEAD";
    req->target = "/_/internal/blob/" + encode_key(t->key);
    req->timeout_ms = timeout;
    req->done = [t, votes, decided](Status s, PeerResponse r) {
      bool ack = s.is_ok() && r.status == 404;  // holds nothing: nothing to resurrect
      if (s.is_ok() && r.status == 200) {
        const std::string* v = r.header("x-ringstore-version");
        auto theirs = v ? blobstore::Version::parse(*v) : std::nullopt;
        ack = theirs && !(*theirs < t->version);
      }
      if (!ack) votes->all = false;
      decided();
    };
    server_.peers().send(addr, std::move(req));
  }
}

// ---- endpoints ----

bool AntiEntropy::handles(const std::string& path) { return path.compare(0, ae_prefix.size(), ae_prefix) == 0; }

Status AntiEntropy::on_headers(Connection& c) {
  HttpRequest& r = c.request();
  if (r.method != HTTP_GET) return Status(Code::method_not_allowed, "method_not_allowed: use GET");
  const Target& t = r.target;
  if (t.path == ae_summary) {
    const std::string* ring = t.get("ring");
    const std::string* with = t.get("with");
    std::uint8_t buf[16];
    if (ring == nullptr || ring->size() != 16 || !blobstore::unhex(*ring, buf, 8)) {
      return Status::invalid("bad_ring: 16 hex digits");
    }
    if (with == nullptr || with->size() != 32 || !blobstore::unhex(*with, buf, 16)) {
      return Status::invalid("bad_with: a node id, 32 hex digits");
    }
    for (const char* name : {"start", "group"}) {
      if (const std::string* v = t.get(name); v != nullptr && !parse_u64(*v)) {
        return Status::invalid(std::string("bad_") + name + ": a number");
      }
    }
    return Status::ok();
  }
  if (t.path == ae_keys) {
    const std::string* from = t.get("from");
    const std::string* to = t.get("to");
    auto f = from ? parse_u64(*from) : std::nullopt;
    auto e = to ? parse_u64(*to) : std::nullopt;
    if (!f || !e) return Status::invalid("bad_range: from and to are ring positions (u64)");
    if (*f > *e) return Status::invalid("bad_range: from > to");
    return Status::ok();
  }
  return Status::not_found("no_such_endpoint");
}

void AntiEntropy::on_request(Connection& c) {
  if (c.request().target.path == ae_summary) return serve_summary(c);
  serve_keys(c);
}

void AntiEntropy::serve_summary(Connection& c) {
  const Target& t = c.request().target;
  const std::string ct = "Content-Type: application/json\r\n";
  if (rebuilding_ || !summaries_) return c.respond_error(Status::unavailable("summaries_rebuilding"));
  if (*t.get("ring") != fingerprint_) {
    return c.respond(409, ct, json_line({{"error", "ring_mismatch"}, {"ring", fingerprint_}}));
  }
  ring::NodeId with{};
  (void)blobstore::unhex(*t.get("with"), with.data(), with.size());  // checked at the headers
  int with_idx = ring_->index_of(with);
  if (with_idx < 0) return c.respond_error(Status::invalid("unknown_member"));
  std::vector<std::size_t> shared = shared_arcs(ring_->index_of(server_.cluster().self()), with_idx);
  std::size_t group_count = limits::ae_groups_of(shared.size());
  if (const std::string* gs = t.get("group")) {
    std::uint64_t g = *parse_u64(*gs);
    if (g >= group_count) return c.respond_error(Status::invalid("bad_group: 0.." + std::to_string(group_count)));
    nlohmann::json arcs = nlohmann::json::array();
    std::size_t end = std::min(shared.size(), (g + 1) * limits::ae_group_arcs);
    for (std::size_t k = g * limits::ae_group_arcs; k < end; k++) {
      const blobstore::Leaf& l = summaries_->leaf(shared[k]);
      arcs.push_back({shared[k], l.hash_hex(), l.count});
    }
    return c.respond(200, ct, json_line({{"arcs", arcs}}));
  }
  std::uint64_t start = 0;
  if (const std::string* s = t.get("start")) start = *parse_u64(*s);
  if (start > group_count) return c.respond_error(Status::invalid("bad_start: 0.." + std::to_string(group_count)));
  nlohmann::json groups = nlohmann::json::array();
  std::size_t stop = std::min<std::size_t>(group_count, start + limits::ae_groups_page_max);
  for (std::size_t g = start; g < stop; g++) {
    blobstore::Leaf l;
    std::size_t end = std::min(shared.size(), (g + 1) * limits::ae_group_arcs);
    for (std::size_t k = g * limits::ae_group_arcs; k < end; k++) l.add(summaries_->leaf(shared[k]));
    groups.push_back({l.hash_hex(), l.count});
  }
  nlohmann::json j = {{"ring", fingerprint_}, {"shared_arcs", shared.size()}, {"groups", groups},
                      {"next", stop < group_count ? nlohmann::json(stop) : nlohmann::json(nullptr)}};
  c.respond(200, ct, json_line(j));
}

void AntiEntropy::serve_keys(Connection& c) {
  const Target& t = c.request().target;
  std::uint64_t from = *parse_u64(*t.get("from"));
  std::uint64_t to = *parse_u64(*t.get("to"));
  std::vector<Entry> rows;
  bool more = false;
  std::uint64_t next = 0;
  Status s = scan_replica_rows(server_.store(), from, to, limits::ae_keys_page_max, &rows, &more, &next);
  if (!s.is_ok()) return c.respond_error(s);
  nlohmann::json entries = nlohmann::json::array();
  for (const Entry& e : rows) {
    entries.push_back({blobstore::hex(reinterpret_cast<const std::uint8_t*>(e.key.data()), e.key.size()),
                       e.version.to_string(), e.tombstone ? 1 : 0});
    if (e.expires_ms != 0) entries.back().push_back(e.expires_ms);
  }
  nlohmann::json j = {{"entries", entries}, {"next", more ? nlohmann::json(next) : nlohmann::json(nullptr)}};
  c.respond(200, "Content-Type: application/json\r\n", json_line(j));
}

// ---- reporting ----

nlohmann::json AntiEntropy::status_json() const {
  const AntiEntropyCounters& k = counters_;
  return {{"enabled", config_.interval_ms > 0},
          {"interval_ms", config_.interval_ms},
          {"keys_per_sec", config_.keys_per_sec},
          {"tombstone_grace_s", config_.tombstone_grace_s},
          {"arcs", summaries_ ? summaries_->arc_count() : 0},
          {"rebuilding", rebuilding_},
          {"passes", k.passes},
          {"ranges_compared", k.ranges_compared},
          {"ranges_differing", k.ranges_differing},
          {"keys_pushed", k.keys_pushed},
          {"keys_pulled", k.keys_pulled},
          {"offers_already_held", k.offers_already_held},
          {"keys_handed_off", k.keys_handed_off},
          {"tombstones_purged", k.tombstones_purged},
          {"transfer_errors", k.transfer_errors},
          {"peer_errors", k.peer_errors},
          {"summary_rebuilds", k.summary_rebuilds},
          {"summary_fixes", k.summary_fixes},
          {"queued", queue_.size()},
          {"in_flight", in_flight_},
          {"last_pass_ms", k.last_pass_ms},
          {"last_pass_end_unix_ms", k.last_pass_end_unix_ms}};
}

void AntiEntropy::write_metrics(std::string& out) const {
  auto counter = [&out](const char* name, const char* help, std::uint64_t v) {
    metric_header(out, name, "counter", help);
    out += std::string(name) + " " + std::to_string(v) + "\n";
  };
  auto gauge = [&out](const char* name, const char* help, std::uint64_t v) {
    metric_header(out, name, "gauge", help);
    out += std::string(name) + " " + std::to_string(v) + "\n";
  };
  const AntiEntropyCounters& k = counters_;
  counter("ringstore_anti_entropy_passes_total", "Anti-entropy passes completed.", k.passes);
  counter("ringstore_anti_entropy_ranges_compared_total", "Ring arcs compared with a replica.", k.ranges_compared);
  counter("ringstore_anti_entropy_ranges_differing_total", "Compared arcs that differed.", k.ranges_differing);
  counter("ringstore_anti_entropy_keys_pushed_total", "Keys sent to a replica that lacked them or held them stale.", k.keys_pushed);
  counter("ringstore_anti_entropy_keys_pulled_total", "Keys fetched from a replica because this node lacked them or held them stale.", k.keys_pulled);
  counter("ringstore_anti_entropy_offers_already_held_total", "Keys pushed or pulled that the receiver held already (budget refunded).", k.offers_already_held);
  counter("ringstore_anti_entropy_keys_handed_off_total", "Keys given to their owners and dropped here.", k.keys_handed_off);
  counter("ringstore_anti_entropy_tombstones_purged_total", "Tombstones purged after every replica held them and the grace passed.", k.tombstones_purged);
  counter("ringstore_anti_entropy_transfer_errors_total", "Anti-entropy transfers that failed.", k.transfer_errors);
  counter("ringstore_anti_entropy_peer_errors_total", "Comparisons given up (peer down or on another ring).", k.peer_errors);
  gauge("ringstore_anti_entropy_queued", "Transfers waiting for the budget.", queue_.size());
  gauge("ringstore_anti_entropy_last_pass_milliseconds", "Duration of the last full pass.", k.last_pass_ms);
  gauge("ringstore_anti_entropy_last_pass_end_unix_ms", "When the last full pass ended.", k.last_pass_end_unix_ms);
}

}  // namespace node
