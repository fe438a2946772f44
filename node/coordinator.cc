#include "node/coordinator.h"

#include <unistd.h>

#include <algorithm>
#include <optional>
#include <nlohmann/json.hpp>

#include "common/assert.h"
#include "node/attrs.h"
#include "node/http_status.h"
#include "node/log.h"
#include "node/server.h"

namespace node {

namespace {

std::string node_hex(const ring::NodeId& id) { return ring::hex_id(id); }

}  // namespace

// A large value gets extra time on top of replica_timeout_ms: at least 16 MiB/s.
std::uint32_t transfer_timeout_ms(std::uint32_t base, std::uint64_t bytes) {
  return base + static_cast<std::uint32_t>(bytes / (16 * 1024));
}

// Reads a replica's answer to HEAD or GET /_/internal/blob: its stored version.
// Both answers carry the receiver's {"applied":...}.
bool answered_already_held(const PeerResponse& r) {
  return r.body.find("\"applied\":false") != std::string::npos;
}

bool meta_from_response(const std::string& key, const PeerResponse& r, blobstore::BlobMeta* m) {
  const std::string* v = r.header("x-ringstore-version");
  if (v == nullptr) return false;
  auto version = blobstore::Version::parse(*v);
  if (!version) return false;
  m->key = key;
  m->version = *version;
  // Tombstone kind, attributes and expiry (node/attrs.h), from the X-Ringstore-* headers.
  HeaderList ringstore;
  for (const auto& [name, value] : r.headers) {
    if (name.compare(0, 12, "x-ringstore-") == 0) ringstore.emplace_back(name.substr(12), value);
  }
  if (!replica_meta_from(ringstore, m)) return false;
  if (const std::string* md5 = r.header("x-ringstore-md5")) {
    if (!blobstore::unhex(*md5, m->md5.data(), m->md5.size())) return false;
  }
  if (const std::string* size = r.header("x-ringstore-size")) {
    auto n = parse_u64(*size);
    if (!n) return false;
    m->size = *n;
  }
  if (const std::string* ct = r.header("content-type")) m->content_type = *ct;
  return true;
}

struct Coordinator::WriteOp {
  ~WriteOp() {
    if (body_fd >= 0) ::close(body_fd);
  }
  struct Target {
    Replica replica;
    bool hint = false;
    ring::NodeId owner{};
    bool done = false;
    bool ok = false;  // acknowledged durably (applied, or held this version or a newer one)
  };
  std::weak_ptr<Connection> conn;
  blobstore::BlobMeta meta;
  std::unique_ptr<blobstore::BlobWriter> writer;  // until committed here or dropped
  std::string body;  // a small value's bytes, sent to the remote replicas from memory
  int body_fd = -1;  // else the spool file
  std::vector<Replica> candidates;  // ring order: the preference list, then stand-ins
  std::vector<bool> used;
  std::vector<Target> targets;
  std::size_t w = 0;
  std::size_t acks = 0, inflight = 0;
  bool replied = false;
  // Owners that missed the write with no stand-in free: this node remembers them when it
  // holds the key itself, and hands its copy over when they are back.
  std::vector<ring::NodeId> unplaced;
  bool local_copy = false;  // this node committed the write as a replica
  // The newest version a replica answered that it holds above meta.version: this
  // write lost to it there. See rewrite().
  std::optional<blobstore::Version> newer;
  std::uint32_t attempt = 0;  // 0, then one more for each rewrite()
  std::uint64_t started_ns = 0;  // monotonic: when the write began, for stages_.decide
  std::size_t no_room = 0;    // replicas (this node's included) that answered 507
};

struct Coordinator::ReadOp {
  struct Answer {
    Replica replica;
    bool done = false, ok = false, present = false;
    blobstore::BlobMeta meta;
  };
  std::weak_ptr<Connection> conn;
  std::string key;
  bool head_only = false;
  std::size_t r = 0;
  std::vector<Answer> answers;  // one per preference-list member, the local one first
  std::size_t next = 0, ok_count = 0, inflight = 0;
  std::size_t extra = 0;      // replicas asked beyond r because one was late
  double late_ms = 0;         // when a replica counts as late for this read
  uv_timer_t* late = nullptr; // armed while remote answers are awaited
  bool decided = false;
  // Set for a conditional write's read: called once R replicas answered, with the
  // newest version they hold (a tombstone included; null when none holds any), instead
  // of serving it.
  std::function<void(const blobstore::BlobMeta* newest)> then;
};

namespace {
// Speculative reads, as Cassandra's rapid read protection: a remote replica that has not
// answered after a few times the best recent answer time of the read's replicas (at
// least late_min_ms) is not waited for alone: one more replica is asked, and the first
// r answers decide. A replica that stalls (its loop busy, its process stopped, a
// partition not yet detected) then costs a few milliseconds, not the replica timeout.
constexpr double late_factor = 4.0;
constexpr double late_min_ms = 3.0;
constexpr double late_max_ms = 100.0;

struct LateTimer {
  Coordinator* coordinator;
  std::weak_ptr<Coordinator::ReadOp> op;
};

void close_late_timer(uv_timer_t* t) {
  uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) {
    delete static_cast<LateTimer*>(h->data);
    delete reinterpret_cast<uv_timer_t*>(h);
  });
}
}  // namespace

// The read repair budget holds a tenth of a second of repairs, like anti-entropy's.
Coordinator::Coordinator(Server& server, const common::Clock& clock, QuorumConfig config)
    : server_(server),
      clock_(clock),
      config_(config),
      repair_budget_(config.read_repairs_per_sec, std::max(1.0, config.read_repairs_per_sec / 10.0)) {}

std::uint32_t Coordinator::effective_n() const {
  auto members = static_cast<std::uint32_t>(server_.cluster().member_count());
  return std::max<std::uint32_t>(1, std::min(config_.n, members));
}

Status Coordinator::pick(const Target& t, const char* name, std::uint32_t def,
                         std::uint32_t* out) const {
  std::uint32_t n = effective_n();
  *out = std::min(def, n);
  const std::string* v = t.get(name);
  if (v == nullptr) return Status::ok();
  auto x = parse_u64(*v);
  if (!x || *x == 0 || *x > config_.n) {
    return Status::invalid(std::string("bad_") + name + ": must be 1.." + std::to_string(config_.n));
  }
  *out = std::min<std::uint32_t>(static_cast<std::uint32_t>(*x), n);
  return Status::ok();
}

// ---- writes ----

void Coordinator::write(Connection& c, std::unique_ptr<blobstore::BlobWriter> writer,
                        std::uint32_t w) {
  if (c.request().started_ns != 0) {
    stages_.receive.observe_between_ns(c.request().started_ns, clock_.monotonic_ns());
  }
  if (Status s = server_.cluster().check_ring_complete(); !s.is_ok()) return c.respond_error(s);
  auto op = std::make_shared<WriteOp>();
  op->started_ns = clock_.monotonic_ns();
  op->conn = c.weak_from_this();
  op->meta = writer->meta();
  op->meta.version = blobstore::Version{server_.hlc().now(clock_.wall_ms()), server_.store().node_id()};
  op->meta.md5 = writer->finish_md5();
  op->writer = std::move(writer);
  op->w = w;
  std::uint32_t n = effective_n();
  op->candidates = server_.cluster().walk(op->meta.key, ring::limits::replicas_max);
  op->used.assign(op->candidates.size(), false);
  std::vector<ring::NodeId> down;
  for (std::size_t i = 0; i < op->candidates.size() && i < n; i++) {
    op->used[i] = true;
    const Replica& rep = op->candidates[i];
    if (rep.alive) {
      op->targets.push_back({rep, false, rep.id});
    } else {
      down.push_back(rep.id);
    }
  }
  for (const ring::NodeId& owner : down) {
    // Down longer than the hint window: no hint; anti-entropy repairs the miss.
    if (server_.hint_policy().window_open(owner, server_.now_ms())) replace_failed(op, owner);
  }
  add_pending_targets(op);
  if (op->targets.size() < op->w) {
    counters_.writes_unavailable++;
    return c.respond_error(Status::unavailable(
        "not_enough_replicas: " + std::to_string(op->targets.size()) + " reachable, w=" +
        std::to_string(op->w)));
  }
  // Remote copies (pending owners of a joining or leaving member included, stand-ins
  // for failed ones, and every copy of a rewrite(), this node's own too) of a small
  // value are sent from memory; a larger one from the spool file, whose descriptor
  // outlives the rename of the local commit and the unlink of a dropped spool. Even a
  // lone node keeps them: its own replica may answer that it holds a newer version.
  if (const std::string* b = op->writer->body_in_memory()) {
    op->body = *b;
  } else if (!op->meta.tombstone) {
    op->body_fd = op->writer->open_read_fd();
    if (op->body_fd < 0) return c.respond_error(Status::io_error("cannot reopen the upload"));
  }
  // The spool stays until the write is decided even when this node holds no copy: it is
  // a stand-in candidate for the key, so a replica that fails mid-write may need a hint
  // kept here (dropping the spool early lost the hint: the owner never got the write).
  send_all(op);
}

// Sends the write to every target planned so far. A target that fails at once (this
// node's own copy, refused by a full disk) must not decide the write before the others
// were even sent: the round holds one unit of inflight until they all are.
void Coordinator::send_all(const std::shared_ptr<WriteOp>& op) {
  std::size_t initial = op->targets.size();
  op->inflight++;
  for (std::size_t t = 0; t < initial; t++) send_write(op, t);
  op->inflight--;
  finish_write_if_decided(op);
}

// A member taking the key over (joining, or next in line for a leaving one) gets the
// write as well, and the write waits for it too (Cassandra adds pending ranges to the
// nodes it blocks for): its copy of the range is complete once its transfer ends.
void Coordinator::add_pending_targets(const std::shared_ptr<WriteOp>& op) {
  const Cluster& cluster = server_.cluster();
  if (!cluster.changing()) return;
  auto n = std::min<std::uint32_t>(config_.n, static_cast<std::uint32_t>(cluster.future_member_count()));
  // A cluster being formed (every member still joining) has no current owners: the
  // future ones are the replicas, and W counts among them alone.
  bool forming = cluster.member_count() == 0;
  if (forming) op->w = std::min<std::size_t>(config_.w, n);
  for (const Replica& p : cluster.pending(op->meta.key, n)) {
    for (std::size_t i = 0; i < op->candidates.size(); i++) {
      if (op->candidates[i].id == p.id) op->used[i] = true;  // not also a stand-in
    }
    if (!p.alive) {
      replace_failed(op, p.id);  // a stand-in keeps a hint for it
      continue;
    }
    op->targets.push_back({p, false, p.id});
    if (!forming) op->w++;
  }
}

// A stand-in for `owner`: the next unused live member in ring order keeps a hint.
void Coordinator::replace_failed(const std::shared_ptr<WriteOp>& op, const ring::NodeId& owner) {
  for (std::size_t i = 0; i < op->candidates.size(); i++) {
    if (op->used[i] || !op->candidates[i].alive) continue;
    op->used[i] = true;
    op->targets.push_back({op->candidates[i], true, owner});
    return;
  }
  op->unplaced.push_back(owner);
  if (op->local_copy) remember_missed(op);
}

void Coordinator::remember_missed(const std::shared_ptr<WriteOp>& op) {
  for (const ring::NodeId& owner : op->unplaced) {
    if (!server_.hint_policy().admit(owner)) continue;  // over a cap: counted there
    counters_.hints_stored++;
    Status s = server_.store().add_missed(owner, op->meta.key, op->meta.version,
        [this, owner](Status st, blobstore::CommitResult) {
          server_.hint_policy().release(owner, st.is_ok());
        });
    if (!s.is_ok()) {
      server_.hint_policy().release(owner, false);
      log::warn("recording a hint failed: " + s.message());
    }
  }
  op->unplaced.clear();
}

void Coordinator::send_write(const std::shared_ptr<WriteOp>& op, std::size_t t) {
  WriteOp::Target& target = op->targets[t];
  op->inflight++;
  // A rewrite() has no writer left: its own copy goes through this node's internal
  // API like any other, from the body kept in memory or in the spool.
  if (target.replica.self && op->writer != nullptr) {
    if (target.hint && !server_.hint_policy().admit(target.owner)) {
      return on_write_result(op, t, Status::unavailable("hint_cap: this node holds its cap of hints"), std::nullopt);
    }
    if (target.hint) op->writer->set_hint_for(target.owner);
    const bool hint = target.hint;
    const ring::NodeId owner = target.owner;
    Status s = server_.store().commit(std::move(op->writer), op->meta.version,
        [this, op, t, hint, owner](Status st, blobstore::CommitResult res) {
          if (hint) server_.hint_policy().release(owner, st.is_ok());
          on_write_result(op, t, std::move(st), st.is_ok() ? res.newer : std::nullopt);
        });
    if (!s.is_ok()) {
      if (hint) server_.hint_policy().release(owner, false);
      on_write_result(op, t, std::move(s), std::nullopt);
    }
    return;
  }
  auto req = std::make_unique<PeerRequest>();
  req->method = "PUT";
  req->target = "/_/internal/blob/" + encode_key(op->meta.key);
  req->headers = "X-Ringstore-Version: " + op->meta.version.to_string() + "\r\n" +
                 "X-Ringstore-Md5: " + blobstore::md5_hex(op->meta.md5) + "\r\n";
  req->headers += replica_meta_headers(op->meta);
  if (!op->meta.content_type.empty()) req->headers += "Content-Type: " + op->meta.content_type + "\r\n";
  if (target.hint) req->headers += "X-Ringstore-Hint-For: " + node_hex(target.owner) + "\r\n";
  if (op->body_fd >= 0) {
    req->body_fd = dup(op->body_fd);
    req->body_length = op->meta.size;
  } else {
    req->body = op->body;
  }
  req->timeout_ms = transfer_timeout_ms(config_.replica_timeout_ms, op->meta.size);
  req->done = [this, op, t, sent_ns = clock_.monotonic_ns()](Status s, PeerResponse r) {
    stages_.replica.observe_between_ns(sent_ns, clock_.monotonic_ns());
    if (s.is_ok() && r.status == 503 && r.body.find("hint_cap") != std::string::npos) {
      s = Status::unavailable("hint_cap: the stand-in holds its cap of hints");
    } else if (s.is_ok() && r.status == 507) {
      s = Status(Code::insufficient_storage, "insufficient_storage: the replica has no room");
    } else if (s.is_ok() && r.status != 201) {
      s = Status::io_error("replica answered " + std::to_string(r.status) + ": " + r.body);
    }
    std::optional<blobstore::Version> newer;
    if (const std::string* held = s.is_ok() ? r.header("x-ringstore-held") : nullptr) {
      newer = blobstore::Version::parse(*held);  // a peer's bad header is no newer version
    }
    on_write_result(op, t, std::move(s), newer);
  };
  server_.peers().send(target.replica.addr, std::move(req));
}

void Coordinator::on_write_result(const std::shared_ptr<WriteOp>& op, std::size_t t, Status s,
                                  std::optional<blobstore::Version> newer) {
  op->inflight--;
  WriteOp::Target target = op->targets[t];
  op->targets[t].done = true;
  op->targets[t].ok = s.is_ok();
  if (s.is_ok() && newer && *newer > op->meta.version && (!op->newer || *newer > *op->newer)) {
    op->newer = newer;
  }
  if (s.is_ok()) {
    op->acks++;
    if (target.hint) counters_.hints_stored++;
    if (target.replica.self && !target.hint) {
      op->local_copy = true;
      remember_missed(op);
    }
  } else if (target.hint && s.message().rfind("hint_cap", 0) == 0) {
    // Beyond a hint cap the hint is not stored and no other stand-in is asked: the
    // miss is left to anti-entropy, as Cassandra does.
  } else {
    counters_.replica_errors++;
    if (s.code() == Code::insufficient_storage) op->no_room++;
    log::warn("write to " + target.replica.addr + " failed: " + s.message());
    std::size_t before = op->targets.size();
    replace_failed(op, target.hint ? target.owner : target.replica.id);
    for (std::size_t i = before; i < op->targets.size(); i++) {
      // This node as a stand-in once its own replica committed: it holds the key already.
      if (op->targets[i].replica.self && op->writer == nullptr && op->attempt == 0) continue;
      send_write(op, i);
    }
  }
  finish_write_if_decided(op);
}

void Coordinator::finish_write_if_decided(const std::shared_ptr<WriteOp>& op) {
  if (op->replied) return;
  if (op->acks < op->w && op->inflight > 0) return;
  op->replied = true;
  if (op->attempt == 0) stages_.decide.observe_between_ns(op->started_ns, clock_.monotonic_ns());
  auto conn = op->conn.lock();
  if (!conn) return;  // the client left; the copies already made stand
  if (op->acks < op->w) {
    counters_.writes_unavailable++;
    if (op->no_room > 0) {  // some replicas are out of room: the operator's to fix, not a retry's
      return conn->respond_error(Status(Code::insufficient_storage,
          "insufficient_storage: " + std::to_string(op->acks) + " of w=" + std::to_string(op->w) +
          " acknowledged, " + std::to_string(op->no_room) + " replicas have no room"));
    }
    return conn->respond_error(Status::unavailable(
        "not_enough_replicas: " + std::to_string(op->acks) + " of w=" + std::to_string(op->w) +
        " acknowledged"));
  }
  if (op->newer && rewrite(op)) return;
  // Formatted by hand: every write answers this, and a JSON document built node by
  // node cost the write path measurably. Versions, ids and MD5s are hex; addresses are
  // escaped.
  const std::string v = op->meta.version.to_string();
  std::string headers = "X-Ringstore-Version: " + v + "\r\n";
  // The JSON receipt only for a client that asked for it (Accept: application/json).
  const bool json = !op->meta.tombstone && conn->request().accepts_json;
  std::string body = json ? "{\"version\":\"" + v + "\"" : "";
  add_receipt(*op, &headers, json ? &body : nullptr);
  if (op->newer) {
    // Lost to a concurrent write even after rewriting: say so, and name the winner.
    counters_.writes_superseded++;
    const std::string winner = op->newer->to_string();
    headers += "X-Ringstore-Superseded-By: " + winner + "\r\n";
    if (json) body += ",\"superseded_by\":\"" + winner + "\"";
  }
  if (op->meta.tombstone) return conn->respond(204, headers, "");
  std::string etag = blobstore::md5_hex(op->meta.md5);
  headers = "ETag: \"" + etag + "\"\r\n" + headers;
  if (!json) return conn->respond(201, headers, "");
  body += ",\"etag\":\"" + etag + "\"}\n";
  conn->respond(201, headers + "Content-Type: application/json\r\n", std::move(body));
}

namespace {
// A JSON string's contents for printable ASCII (gossiped addresses are no more).
std::string json_escaped(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) continue;
    out += ch;
  }
  return out;
}
}  // namespace

// What happened to a write, for its client: X-Ringstore-Acks: A/N (A durable copies
// when the answer went out, stand-ins included, of the N the key's owners should hold)
// and X-Ringstore-Replicas, one entry per node asked: ID@ADDR=acked|pending|failed, with
// ;hint-for=OWNER for a stand-in. The same goes into the JSON body, when there is one.
void Coordinator::add_receipt(const WriteOp& op, std::string* headers, std::string* body) const {
  std::size_t owners = 0;
  std::string list, replicas;
  for (const WriteOp::Target& t : op.targets) {
    if (!t.hint) owners++;
    const char* state = !t.done ? "pending" : t.ok ? "acked" : "failed";
    std::string id = node_hex(t.replica.id);
    if (!list.empty()) list += ", ";
    list += id + "@" + t.replica.addr + "=" + state;
    if (t.hint) list += ";hint-for=" + node_hex(t.owner);
    if (body == nullptr) continue;  // the JSON only when asked for
    if (!replicas.empty()) replicas += ',';
    replicas += "{\"id\":\"" + id + "\",\"addr\":\"" + json_escaped(t.replica.addr) +
                "\",\"state\":\"" + state + "\"";
    if (t.hint) replicas += ",\"hint_for\":\"" + node_hex(t.owner) + "\"";
    replicas += '}';
  }
  // The key's owners: those asked (a failed one stays among the targets beside its
  // stand-in), or the preference list's size when some were down from the start.
  std::size_t n = std::max(owners, static_cast<std::size_t>(effective_n()));
  const std::string acks = std::to_string(op.acks);
  *headers += "X-Ringstore-Acks: " + acks + "/" + std::to_string(n) + "\r\n";
  *headers += "X-Ringstore-Replicas: " + list + "\r\n";
  if (body == nullptr) return;
  *body += ",\"acks\":" + acks + ",\"n\":" + std::to_string(n) + ",\"replicas\":[" + replicas + "]";
}

// Versions must beat clocks. A replica answered that it holds a newer version than this
// write's: another coordinator's clock is ahead of this one's (a write this client saw
// acknowledged before it sent this one may be it), or a write in flight beat it. Either
// way this write was acknowledged after that version was stored, so it must win: it is
// sent again to the same replicas with a version above the newest they named (Garage's
// answer to the same loss: a version strictly above the one the replicas hold). With
// W + W > N the W answers of this write include one replica of any write acknowledged
// before it began, so a loss to an earlier acknowledged write is always seen.
// Two writes racing this way each rewrite at most write_rewrites_max times; the one
// that still loses answers with X-Ringstore-Superseded-By. False when no rewrite is
// due (the caller answers).
bool Coordinator::rewrite(const std::shared_ptr<WriteOp>& op) {
  if (op->attempt >= write_rewrites_max) return false;
  std::uint64_t wall = clock_.wall_ms();
  // A version too far ahead to adopt (stored before such versions were refused) wins.
  if (!server_.hlc().observe(op->newer->hlc, wall)) return false;
  auto next = std::make_shared<WriteOp>();
  next->started_ns = clock_.monotonic_ns();
  next->conn = op->conn;
  next->meta = op->meta;
  next->meta.version = blobstore::Version{server_.hlc().now(wall), server_.store().node_id()};
  next->body = op->body;
  if (op->body_fd >= 0) {
    next->body_fd = dup(op->body_fd);
    if (next->body_fd < 0) return false;
  }
  next->candidates = op->candidates;
  next->used = op->used;
  next->w = op->w;
  next->attempt = op->attempt + 1;
  // The same replicas and stand-ins, less those that failed (their replacements are in
  // the list already).
  for (const WriteOp::Target& t : op->targets) {
    if (t.done && !t.ok) continue;
    next->targets.push_back({t.replica, t.hint, t.owner});
  }
  next->unplaced = op->unplaced;
  counters_.writes_rewritten++;
  op->replied = true;  // what op still hears of changes nothing: next answers the client
  send_all(next);
  return true;
}

// ---- reads ----

void Coordinator::read(Connection& c, std::uint32_t r, bool head_only) {
  if (auto op = start_read(c, r, head_only)) ask(op);
}

namespace {
// What a precondition is checked against. REQUIRES: `etag` outlives the result.
Validators validators_of(const blobstore::BlobMeta* newest, const std::string& etag) {
  if (newest == nullptr || newest->tombstone) return {};
  return {true, etag, static_cast<std::int64_t>(newest->version.wall_ms() / 1000)};
}
std::string etag_of(const blobstore::BlobMeta* m) {
  return m == nullptr ? std::string() : "\"" + blobstore::md5_hex(m->md5) + "\"";
}
}  // namespace

void Coordinator::write_checked(Connection& c, std::unique_ptr<blobstore::BlobWriter> writer,
                                std::uint32_t w, std::uint32_t r) {
  auto op = start_read(c, r, /*head_only=*/true);
  if (!op) return;  // answered; the writer's spool goes with it
  // std::function must be copyable: the writer waits in a shared box. When the client
  // leaves first, or the precondition fails, the box drops the spool: nothing written.
  auto box = std::make_shared<std::unique_ptr<blobstore::BlobWriter>>(std::move(writer));
  op->then = [this, weak = op->conn, box, w](const blobstore::BlobMeta* newest) {
    auto conn = weak.lock();
    if (!conn) return;
    const std::string etag = etag_of(newest);
    PreconditionResult res = evaluate_preconditions(conn->request().conditions, /*read=*/false,
                                                    validators_of(newest, etag));
    if (res.outcome != Precondition::proceed) {
      return conn->respond_error(
          Status(Code::precondition_failed, std::string("precondition_failed: ") + res.reason));
    }
    // Versioned above what was checked, so that a replica holding that version takes
    // this write instead of making it rewrite() above it.
    if (newest != nullptr) (void)server_.hlc().observe(newest->version.hlc, clock_.wall_ms());
    write(*conn, std::move(*box), w);
  };
  ask(op);
}

// A read of the request's key from r replicas, ready to ask; null when it was answered
// (503: the ring is not complete yet).
std::shared_ptr<Coordinator::ReadOp> Coordinator::start_read(Connection& c, std::uint32_t r,
                                                             bool head_only) {
  if (Status s = server_.cluster().check_ring_complete(); !s.is_ok()) {
    c.respond_error(s);
    return nullptr;
  }
  auto op = std::make_shared<ReadOp>();
  op->conn = c.weak_from_this();
  op->key = c.request().target.path;
  op->head_only = head_only;
  op->r = r;
  const Cluster& cluster = server_.cluster();
  // A cluster being formed (every member still joining) has no current owners: its
  // writes go to the future ones (add_pending_targets), and so do its reads, at the
  // default quorum that those writes met.
  std::vector<Replica> replicas;
  if (cluster.member_count() == 0 && cluster.future_member_count() > 0) {
    auto n = std::min<std::uint32_t>(config_.n, static_cast<std::uint32_t>(cluster.future_member_count()));
    op->r = std::min(config_.r, n);
    replicas = cluster.future_preference_list(op->key, n);
  } else {
    replicas = cluster.preference_list(op->key, effective_n());
  }
  for (const Replica& rep : replicas) op->answers.push_back({rep});
  // The local copy answers at no cost: ask it first. Then the remote ones in ring
  // order, except that those much slower of late than the quickest go last.
  auto remote = std::stable_partition(op->answers.begin(), op->answers.end(),
                                      [](const ReadOp::Answer& a) { return a.replica.self; });
  // Fresh ms rather than the loop's cached ones: a score decays over the time its
  // samples were taken in (below).
  std::uint64_t now = clock_.monotonic_ns() / 1'000'000;
  double best = -1;
  for (auto it = remote; it != op->answers.end(); ++it) {
    double sc = scores_.score(it->replica.addr, now);
    if (it->replica.alive && (best < 0 || sc < best)) best = sc;
  }
  std::stable_partition(remote, op->answers.end(), [&](const ReadOp::Answer& a) {
    return !ReplicaScores::slow(scores_.score(a.replica.addr, now), best);
  });
  op->late_ms = std::clamp(late_factor * std::max(best, 0.0), late_min_ms, late_max_ms);
  return op;
}

void Coordinator::ask(const std::shared_ptr<ReadOp>& op) {
  while (op->ok_count + op->inflight < op->r + op->extra && op->next < op->answers.size()) {
    std::size_t i = op->next++;
    ReadOp::Answer& a = op->answers[i];
    if (!a.replica.alive) continue;
    if (a.replica.self) {
      auto m = server_.store().lookup(op->key);
      a.done = true;
      if (m.is_ok() && m.value().is_hint) m = Status::not_found();  // not ours to serve
      if (m.is_ok() || m.status().code() == Code::not_found) {
        a.ok = true;
        a.present = m.is_ok();
        if (a.present) a.meta = std::move(m.value());
        op->ok_count++;
      }
      continue;
    }
    op->inflight++;
    auto req = std::make_unique<PeerRequest>();
    req->method = "HEAD";
    req->target = "/_/internal/blob/" + encode_key(op->key);
    req->timeout_ms = config_.replica_timeout_ms;
    std::uint64_t sent_ns = clock_.monotonic_ns();
    req->done = [this, op, i, sent_ns](Status s, PeerResponse resp) {
      op->inflight--;
      ReadOp::Answer& ans = op->answers[i];
      ans.done = true;
      std::uint64_t now_ns = clock_.monotonic_ns();
      double took_ms = static_cast<double>(now_ns - sent_ns) / 1e6;
      scores_.sample(ans.replica.addr, took_ms, now_ns / 1'000'000);
      if (s.is_ok() && resp.status == 200 && meta_from_response(op->key, resp, &ans.meta)) {
        ans.ok = ans.present = true;
      } else if (s.is_ok() && resp.status == 404) {
        ans.ok = true;
      } else {
        counters_.replica_errors++;
      }
      if (ans.ok) op->ok_count++;
      on_answer(op);
    };
    server_.peers().send(a.replica.addr, std::move(req));
  }
  if (op->inflight == 0) return on_answer(op);
  watch_late(op);
}

// Arms the timer of a read that waits for remote answers and has another live replica
// to ask; one extra replica per read at most.
void Coordinator::watch_late(const std::shared_ptr<ReadOp>& op) {
  if (op->late != nullptr || op->extra > 0 || op->decided) return;
  bool spare = false;
  for (std::size_t i = op->next; i < op->answers.size() && !spare; i++) {
    spare = op->answers[i].replica.alive && !op->answers[i].replica.self;
  }
  if (!spare) return;
  op->late = new uv_timer_t;
  ASSERT(uv_timer_init(server_.loop(), op->late) == 0);
  op->late->data = new LateTimer{this, op};
  auto on_late = [](uv_timer_t* t) {
    auto* lt = static_cast<LateTimer*>(t->data);
    std::shared_ptr<ReadOp> op = lt->op.lock();
    Coordinator* self = lt->coordinator;
    if (!op) return close_late_timer(t);
    cancel_late(*op);
    if (op->decided || self->server_.stopping()) return;
    op->extra = 1;
    self->counters_.speculative_reads++;
    self->ask(op);
  };
  uv_timer_start(op->late, on_late, static_cast<std::uint64_t>(op->late_ms), 0);
}

void Coordinator::cancel_late(ReadOp& op) {
  if (op.late == nullptr) return;
  uv_timer_stop(op.late);
  close_late_timer(op.late);
  op.late = nullptr;
}

void Coordinator::on_answer(const std::shared_ptr<ReadOp>& op) {
  if (op->decided) return;
  if (op->ok_count < op->r) {
    if (op->inflight > 0) return;
    if (op->next < op->answers.size()) return ask(op);
    op->decided = true;
    cancel_late(*op);
    if (auto conn = op->conn.lock()) {
      conn->respond_error(Status::unavailable("not_enough_replicas: " + std::to_string(op->ok_count) +
                                              " of r=" + std::to_string(op->r) + " answered"));
    }
    return;
  }
  op->decided = true;
  cancel_late(*op);
  const ReadOp::Answer* newest = nullptr;
  for (const auto& a : op->answers) {
    if (a.ok && a.present && (newest == nullptr || newest->meta.version < a.meta.version)) newest = &a;
  }
  auto conn = op->conn.lock();
  if (newest != nullptr) repair(op);
  if (op->then) {
    auto then = std::move(op->then);  // runs once; a retry below never reaches here again
    return then(newest == nullptr ? nullptr : &newest->meta);
  }
  if (!conn) return;
  std::size_t index = newest == nullptr ? op->answers.size()
                                         : static_cast<std::size_t>(newest - op->answers.data());
  serve_newest(op, *conn, index);
}

// A GET or HEAD: the preconditions against the newest version, then that version.
void Coordinator::serve_newest(const std::shared_ptr<ReadOp>& op, Connection& conn,
                               std::size_t newest_index) {
  const ReadOp::Answer* newest =
      newest_index < op->answers.size() ? &op->answers[newest_index] : nullptr;
  // A plain GET formats no ETag here: a hot read stays free of string work.
  if (conn.request().conditions.constrain_read()) {
    const bool gone = newest != nullptr && expired_now(newest->meta.expires_ms, clock_);
    const blobstore::BlobMeta* meta = newest && !gone ? &newest->meta : nullptr;
    const std::string etag = etag_of(meta);
    PreconditionResult pre =
        evaluate_preconditions(conn.request().conditions, /*read=*/true, validators_of(meta, etag));
    if (pre.outcome == Precondition::failed) {
      return conn.respond_error(
          Status(Code::precondition_failed, std::string("precondition_failed: ") + pre.reason));
    }
    if (pre.outcome == Precondition::not_modified) {
      return server_.respond_not_modified(conn, newest->meta);
    }
  }
  // An expired value reads as absent, as a tombstone does (a later write still wins).
  if (newest == nullptr || newest->meta.tombstone ||
      expired_now(newest->meta.expires_ms, clock_)) {
    std::string h = "Content-Type: application/json\r\n";
    if (newest) h += "X-Ringstore-Version: " + newest->meta.version.to_string() + "\r\n";
    return conn.respond(404, h, error_body(Status::not_found("not_found")), op->head_only);
  }
  if (newest->replica.self) {
    if (server_.serve_local(conn, op->head_only).is_ok()) return;
    // This node's copy is damaged (and now dropped from its index): serve another
    // replica's, asking one more when none of those asked has the newest version.
    op->answers[newest_index].present = false;
    op->decided = false;
    op->r = std::min(op->r + 1, op->answers.size());
    op->ok_count--;
    op->answers[newest_index].ok = false;
    return ask(op);
  }
  if (op->head_only) return server_.serve_meta_head(conn, newest->meta);
  serve_remote(op, newest_index);
}

// Fetches the newest copy from the replica that holds it into a spool on this node, then
// serves it from there (and keeps it, when this node is a stale replica: read repair).
namespace {
// What serve_remote() fetches: a small value in memory, a larger one in a temp file.
struct Spool {
  std::unique_ptr<blobstore::BlobWriter> writer;  // a larger value
  std::string body;                                // a small one
  blobstore::Md5 md5;
  std::optional<blobstore::Md5Digest> digest;
  Status append(const char* d, std::size_t n) {
    if (writer) return writer->append(d, n);
    if (body.size() + n > blobstore::limits::small_value_bytes_max) {
      return Status::io_error("replica_read_failed: a longer copy than it announced");
    }
    body.append(d, n);
    md5.update(d, n);
    return Status::ok();
  }
  blobstore::Md5Digest finish_md5() {
    if (writer) return writer->finish_md5();
    if (!digest) digest = md5.finish();
    return *digest;
  }
};
}  // namespace

// The newest copy is on another replica: fetch it, serve it, and repair the local copy
// with it when that is due. A small value stays in memory: most reads that come here
// find the local copy a moment behind a write still on its way, leave it to that write,
// and so make no temp file at all. A larger one is spooled to a temp file, which the
// repair commits.
void Coordinator::serve_remote(const std::shared_ptr<ReadOp>& op, std::size_t holder) {
  const blobstore::BlobMeta want = op->answers[holder].meta;
  auto spool = std::make_shared<Spool>();
  if (want.size > blobstore::limits::small_value_bytes_max) {
    auto w = server_.store().begin_write(op->key, want.content_type, clock_.wall_ms());
    if (!w.is_ok()) {
      if (auto conn = op->conn.lock()) conn->respond_error(w.status());
      return;
    }
    spool->writer = std::move(w.value());
    spool->writer->set_attrs(want.attrs, want.expires_ms);
  }
  auto req = std::make_unique<PeerRequest>();
  req->method = "GET";
  req->target = "/_/internal/blob/" + encode_key(op->key);
  req->timeout_ms = transfer_timeout_ms(config_.replica_timeout_ms, want.size);
  req->body_sink = [spool](const char* d, std::size_t n) { return spool->append(d, n); };
  req->done = [this, op, spool, want](Status s, PeerResponse resp) {
    auto conn = op->conn.lock();
    blobstore::BlobMeta got;
    if (s.is_ok() && (resp.status != 200 || !meta_from_response(op->key, resp, &got) ||
                      got.version != want.version || spool->finish_md5() != got.md5)) {
      s = Status::io_error("replica_read_failed: the copy changed or did not check out");
    }
    if (!s.is_ok()) {
      counters_.replica_errors++;
      if (conn) conn->respond_error(s);
      return;
    }
    // A spooled copy is served from its temp file, opened before the repair renames it.
    // One relayed in memory (this node's disks are all full) is served from there, and
    // cannot repair the local copy.
    const std::string* relayed = spool->writer ? spool->writer->body_in_memory() : nullptr;
    std::optional<Result<blobstore::BlobHandle>> handle;
    if (spool->writer && relayed == nullptr) handle = server_.store().handle_of(*spool->writer, want.version);
    bool local_replica = std::any_of(op->answers.begin(), op->answers.end(),
                                     [](const ReadOp::Answer& a) { return a.replica.self && a.ok; });
    bool young = local_replica && write_may_be_in_flight(want);
    if (young) counters_.read_repairs_skipped++;
    if (local_replica && !young && relayed == nullptr && take_repair_token()) {
      counters_.read_repairs++;
      Status c = repair_local(op->key, want, spool->body, std::move(spool->writer));
      if (!c.is_ok()) log::warn("read repair of a local copy failed: " + c.message());
    }
    if (!conn) return;
    if (handle && !handle->is_ok()) return conn->respond_error(handle->status());
    if (handle) return server_.serve_handle(*conn, std::move(handle->value()), false);
    const std::string& body = relayed != nullptr ? *relayed : spool->body;
    blobstore::BlobMeta m = want;
    m.size = body.size();
    m.md5 = got.md5;
    server_.serve_body(*conn, m, body);
  };
  server_.peers().send(op->answers[holder].replica.addr, std::move(req));
}

// Commits the copy serve_remote() fetched as this node's own: `writer` when it spooled
// one, else a new write of `body`.
Status Coordinator::repair_local(const std::string& key, const blobstore::BlobMeta& want,
                                 const std::string& body, std::unique_ptr<blobstore::BlobWriter> writer) {
  if (Status s = server_.accept_version(want.version); !s.is_ok()) return s;
  if (!writer) {
    auto w = server_.store().begin_write(key, want.content_type, clock_.wall_ms());
    if (!w.is_ok()) return w.take_status();
    writer = std::move(w.value());
    writer->set_attrs(want.attrs, want.expires_ms);
    if (Status a = writer->append(body.data(), body.size()); !a.is_ok()) return a;
  }
  writer->set_background();
  return server_.store().commit(std::move(writer), want.version, [](Status, blobstore::CommitResult) {});
}

// A replica found without a version younger than that write's replica timeout is left to
// the write: its coordinator is still sending it there, or keeps a hint for it once the
// replica fails or times out. A repair then only races the write (under a steady load of
// fresh keys, a quarter of the reads did): one of the two copies is written and the other
// dropped as already held, for two more internal requests. A coordinator that dies
// mid-write leaves the miss to a later read or to anti-entropy.
bool Coordinator::write_may_be_in_flight(const blobstore::BlobMeta& newest) const {
  std::uint64_t window = transfer_timeout_ms(config_.replica_timeout_ms, newest.size);
  return newest.version.wall_ms() + window > clock_.wall_ms();
}

bool Coordinator::take_repair_token() {
  if (repair_budget_.take_one(clock_.monotonic_ms())) return true;
  counters_.read_repairs_deferred++;
  return false;
}

// Every asked replica that answered without the newest version gets it, from this node
// when it holds it, else from the replica that does (POST /_/internal/push).
void Coordinator::repair(const std::shared_ptr<ReadOp>& op) {
  const ReadOp::Answer* newest = nullptr;
  for (const auto& a : op->answers) {
    if (a.ok && a.present && (newest == nullptr || newest->meta.version < a.meta.version)) newest = &a;
  }
  if (newest == nullptr) return;
  const bool young = write_may_be_in_flight(newest->meta);
  for (const auto& a : op->answers) {
    if (!a.ok || a.replica.self) continue;  // the local copy is repaired by serve_remote
    if (a.present && !(a.meta.version < newest->meta.version)) continue;
    if (young) {
      counters_.read_repairs_skipped++;
      continue;
    }
    if (!take_repair_token()) continue;
    counters_.read_repairs++;
    std::string addr = a.replica.addr;
    if (newest->replica.self) {
      push(op->key, addr, nullptr, [addr](Status s, bool) {
        if (!s.is_ok()) log::warn("read repair to " + addr + " failed: " + s.message());
      });
      continue;
    }
    auto req = std::make_unique<PeerRequest>();
    req->method = "POST";
    req->target = "/_/internal/push/" + encode_key(op->key) + "?to=" + encode_key(addr);
    req->timeout_ms = transfer_timeout_ms(config_.replica_timeout_ms, newest->meta.size) * 2;
    req->done = [addr](Status s, PeerResponse r) {
      if (!s.is_ok() || r.status != 200) log::warn("read repair to " + addr + " failed");
    };
    server_.peers().send(newest->replica.addr, std::move(req));
  }
}

void Coordinator::push(const std::string& key, const std::string& addr,
                       const ring::NodeId* hint_for, PushDone done) {
  auto h = server_.store().open_read(key);
  if (!h.is_ok()) return done(h.take_status(), false);
  const blobstore::BlobMeta& m = h.value().meta;
  auto req = std::make_unique<PeerRequest>();
  req->method = "PUT";
  req->target = "/_/internal/blob/" + encode_key(key);
  req->headers = "X-Ringstore-Version: " + m.version.to_string() + "\r\n" +
                 "X-Ringstore-Md5: " + blobstore::md5_hex(m.md5) + "\r\n" +
                 "X-Ringstore-Background: 1\r\n";  // no client waits for a pushed copy
  req->headers += replica_meta_headers(m);
  if (!m.content_type.empty()) req->headers += "Content-Type: " + m.content_type + "\r\n";
  if (hint_for) req->headers += "X-Ringstore-Hint-For: " + node_hex(*hint_for) + "\r\n";
  if (const std::string* held = h.value().held()) {
    req->body = held->substr(0, m.size);  // a small file not written out yet
  } else if (!m.tombstone) {
    req->body_fd = dup(h.value().fd());
    req->body_length = m.size;
  }
  req->timeout_ms = transfer_timeout_ms(config_.replica_timeout_ms, m.size);
  req->done = [done = std::move(done)](Status s, PeerResponse r) {
    if (s.is_ok() && r.status != 201) s = Status::io_error("push answered " + std::to_string(r.status));
    bool applied = s.is_ok() && !answered_already_held(r);
    done(std::move(s), applied);
  };
  server_.peers().send(addr, std::move(req));
}

// ---- locate ----

void Coordinator::locate(Connection& c, const std::string& key) {
  struct LocateOp {
    std::weak_ptr<Connection> conn;
    std::string key;
    std::vector<Replica> pref;
    std::vector<nlohmann::json> replicas;
    std::size_t pending = 0;
  };
  auto op = std::make_shared<LocateOp>();
  op->conn = c.weak_from_this();
  op->key = key;
  op->pref = server_.cluster().preference_list(key, effective_n());
  op->replicas.resize(op->pref.size());
  auto finish = [op] {
    if (op->pending != 0) return;
    auto conn = op->conn.lock();
    if (!conn) return;
    nlohmann::json pl = nlohmann::json::array();
    for (const Replica& r : op->pref) pl.push_back({{"id", node_hex(r.id)}, {"addr", r.addr}});
    nlohmann::json j = {{"key", op->key},
                        {"position", std::to_string(ring::key_position(op->key))},
                        {"preference_list", pl},
                        {"replicas", op->replicas}};
    conn->respond(200, "Content-Type: application/json\r\n",
                  j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  };
  auto record = [op](std::size_t i, const blobstore::BlobMeta* m, const char* error) {
    const Replica& r = op->pref[i];
    nlohmann::json e = {{"id", node_hex(r.id)}, {"addr", r.addr}, {"alive", r.alive}};
    e["version"] = m ? nlohmann::json(m->version.to_string()) : nlohmann::json(nullptr);
    e["tombstone"] = m ? m->tombstone : false;
    if (error) e["error"] = error;
    op->replicas[i] = e;
  };
  for (std::size_t i = 0; i < op->pref.size(); i++) {
    const Replica& r = op->pref[i];
    if (r.self) {
      auto m = server_.store().lookup(key);
      record(i, m.is_ok() ? &m.value() : nullptr, nullptr);
      continue;
    }
    op->pending++;
    auto req = std::make_unique<PeerRequest>();
    req->method = "HEAD";
    req->target = "/_/internal/blob/" + encode_key(key);
    req->timeout_ms = config_.replica_timeout_ms;
    req->done = [op, i, record, finish](Status s, PeerResponse resp) {
      op->pending--;
      blobstore::BlobMeta m;
      if (s.is_ok() && resp.status == 200 && meta_from_response(op->key, resp, &m)) {
        record(i, &m, nullptr);
      } else {
        record(i, nullptr, s.is_ok() ? (resp.status == 404 ? nullptr : "bad answer") : "unreachable");
      }
      finish();
    };
    server_.peers().send(r.addr, std::move(req));
  }
  finish();
}

}  // namespace node
