#include "node/listing.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <queue>

#include "node/coordinator.h"
#include "node/http_status.h"
#include "node/log.h"
#include "node/peer_client.h"
#include "node/server.h"
#include "node/json_util.h"

namespace node {

namespace {

constexpr std::string_view internal_list = "_/internal/list";

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// ["key","version",kind] or ["key","version",0,expires_ms]; kind 0 a value, 1 a
// tombstone, 2 an unlinked one.
bool decode_row(const nlohmann::json& e, blobstore::KeyVersion* out) {
  if (!e.is_array() || e.size() < 3 || e.size() > 4) return false;
  if (!e[0].is_string() || !e[1].is_string() || !e[2].is_number_unsigned()) return false;
  auto v = blobstore::Version::parse(e[1].get_ref<const std::string&>());
  std::uint64_t kind = e[2].get<std::uint64_t>();
  if (!v || kind > 2) return false;
  out->expires_ms = 0;
  if (e.size() == 4) {
    if (!e[3].is_number_unsigned() || kind != 0) return false;
    out->expires_ms = e[3].get<std::uint64_t>();
  }
  out->key = e[0].get<std::string>();
  out->version = *v;
  out->tombstone = kind != 0;
  out->unlinked = kind == 2;
  return true;
}

std::optional<std::size_t> parse_limit(const std::string* text, std::size_t max) {
  if (text == nullptr) return std::nullopt;
  auto n = parse_u64(*text);
  if (!n || *n == 0 || *n > max) return std::nullopt;
  return static_cast<std::size_t>(*n);
}

}  // namespace

std::string encode_list_answer(const ListAnswer& a) {
  nlohmann::json rows = nlohmann::json::array();
  for (const blobstore::KeyVersion& r : a.rows) {
    int kind = !r.tombstone ? 0 : r.unlinked ? 2 : 1;
    if (r.expires_ms != 0 && !r.tombstone) {
      rows.push_back({r.key, r.version.to_string(), kind, r.expires_ms});
    } else {
      rows.push_back({r.key, r.version.to_string(), kind});
    }
  }
  return json_line({{"rows", std::move(rows)}, {"next", a.next}});
}

Status decode_list_answer(std::string_view body, std::string_view prefix, std::string_view start,
                          std::size_t limit, ListAnswer* out) {
  out->rows.clear();
  out->next.clear();
  auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  const nlohmann::json* rows = field(j, "rows");
  const nlohmann::json* next = field(j, "next");
  if (rows == nullptr || !rows->is_array() || next == nullptr || !next->is_string()) {
    return Status::invalid("bad_list_answer: rows and next are required");
  }
  if (rows->size() > limit) return Status::invalid("bad_list_answer: more rows than asked for");
  std::string_view from = start > prefix ? start : prefix;
  for (const nlohmann::json& e : *rows) {
    blobstore::KeyVersion row;
    if (!decode_row(e, &row)) return Status::invalid("bad_list_answer: a malformed row");
    if (!starts_with(row.key, prefix) || row.key < from) {
      return Status::invalid("bad_list_answer: a key outside the range asked for");
    }
    if (!out->rows.empty() && !(out->rows.back().key < row.key)) {
      return Status::invalid("bad_list_answer: keys out of order");
    }
    out->rows.push_back(std::move(row));
  }
  out->next = next->get<std::string>();
  if (!out->next.empty()) {
    bool follows = out->rows.empty() ? out->next >= from : out->next > out->rows.back().key;
    if (!follows || !starts_with(out->next, prefix)) {
      return Status::invalid("bad_list_answer: next does not follow the rows");
    }
  }
  return Status::ok();
}

void merge_list_answers(const std::vector<const ListAnswer*>& answers, std::size_t limit,
                        std::vector<std::string>* keys, std::string* next, ListMode mode,
                        std::uint64_t now_ms) {
  keys->clear();
  next->clear();
  // An answer cut short says nothing of its node's keys from its `next` on: the page
  // stops at the smallest such boundary, and the next page starts there.
  const std::string* bound = nullptr;
  for (const ListAnswer* a : answers) {
    if (!a->next.empty() && (bound == nullptr || a->next < *bound)) bound = &a->next;
  }
  struct Cursor {
    const ListAnswer* answer;
    std::size_t at;
    const std::string& key() const { return answer->rows[at].key; }
  };
  auto later = [](const Cursor& x, const Cursor& y) { return x.key() > y.key(); };
  std::priority_queue<Cursor, std::vector<Cursor>, decltype(later)> heap(later);
  for (const ListAnswer* a : answers) {
    if (!a->rows.empty()) heap.push({a, 0});
  }
  while (!heap.empty()) {
    Cursor top = heap.top();
    const std::string& key = top.key();
    if (bound != nullptr && key >= *bound) break;
    // Every answer's row for this key: the newest version decides.
    const blobstore::KeyVersion* newest = &top.answer->rows[top.at];
    while (!heap.empty() && heap.top().key() == key) {
      Cursor c = heap.top();
      heap.pop();
      const blobstore::KeyVersion& row = c.answer->rows[c.at];
      if (newest->version < row.version) newest = &row;
      if (c.at + 1 < c.answer->rows.size()) heap.push({c.answer, c.at + 1});
    }
    // The live listing leaves out tombstones of both kinds and expired values; the
    // unlinked one keeps only keys whose newest state is an UNLINK.
    if (mode == ListMode::live &&
        (newest->tombstone || blobstore::expired_at(newest->expires_ms, now_ms))) {
      continue;
    }
    if (mode == ListMode::unlinked && !newest->unlinked) continue;
    if (keys->size() == limit) {
      *next = newest->key;
      return;
    }
    keys->push_back(newest->key);
  }
  if (bound != nullptr) *next = *bound;
}

std::optional<UncoveredArc> find_uncovered_arc(const ring::Ring& ring, std::size_t n,
                                               std::size_t r, const std::vector<bool>& answered) {
  ASSERT(answered.size() == ring.members().size());
  std::size_t tokens = ring.token_count();
  // Every arc has min(n, owners) owners. When no more of the owners failed to answer than
  // that number less r, every arc keeps r without looking: the usual case (everyone
  // answered, or one member down at N=3, R=2) skips a walk over 4,096 tokens per member.
  std::size_t owners = 0, silent = 0;
  for (std::size_t m = 0; m < answered.size(); m++) {
    if (!ring::owns_tokens(ring.members()[m].state)) continue;
    owners++;
    silent += answered[m] ? 0 : 1;
  }
  std::size_t per_arc = std::min(n, owners);
  if (per_arc >= r && silent <= per_arc - r) return std::nullopt;
  // A key at position p belongs to the first token at or after p (Ring::preference_list),
  // so the arc (token[i-1], token[i]] shares the preference list of token[i].
  for (std::size_t i = 0; i < tokens; i++) {
    ring::PreferenceList pl;
    ring.preference_list(ring.token_position(i), n, &pl);
    std::size_t count = 0;
    for (std::uint32_t m : pl.view()) count += answered[m] ? 1 : 0;
    if (count >= std::min(r, pl.size)) continue;
    UncoveredArc arc;
    arc.from = ring.token_position(i == 0 ? tokens - 1 : i - 1);
    arc.to = ring.token_position(i);
    arc.owners.assign(pl.view().begin(), pl.view().end());
    arc.answered = count;
    return arc;
  }
  return std::nullopt;
}

// ---- the node-to-node part ----

bool Listing::handles(const std::string& path) { return path == internal_list; }

Status Listing::check_headers(Connection& c) {
  if (c.request().method != HTTP_GET) {
    return Status(Code::method_not_allowed, "method_not_allowed: use GET");
  }
  return Status::ok();
}

void Listing::serve_internal(Connection& c) {
  const Target& t = c.request().target;
  const std::string* prefix = t.get("prefix");
  const std::string* start = t.get("start");
  auto limit = parse_limit(t.get("limit"), blobstore::limits::list_limit_max);
  if (!limit) {
    return c.respond_error(Status::invalid(
        "bad_limit: limit must be 1.." + std::to_string(blobstore::limits::list_limit_max)));
  }
  ListAnswer a;
  Status s = server_.store().list_versions(prefix ? *prefix : "", start ? *start : "", *limit,
                                           &a.rows, &a.next);
  if (!s.is_ok()) return c.respond_error(s);
  c.respond(200, "Content-Type: application/json\r\n", encode_list_answer(a));
}

// ---- the public listing ----

struct Listing::ListOp {
  std::weak_ptr<Connection> conn;
  std::string prefix, start;
  std::size_t limit = 0;
  ListMode mode = ListMode::live;
  std::uint32_t r = 0, n = 0;
  std::shared_ptr<const ring::Ring> ring;  // the snapshot coverage is decided on
  struct Member {
    std::uint32_t index = 0;  // in ring->members()
    std::string addr;
    bool answered = false;
    std::string failure;  // why it did not answer, for the 503
    ListAnswer answer;
  };
  std::vector<Member> asked;
  std::size_t waiting = 0;
};

void Listing::list(Connection& c, std::string prefix, std::string start, std::size_t limit,
                   std::uint32_t r, ListMode mode) {
  counters_.pages++;
  if (Status s = server_.cluster().check_ring_complete(); !s.is_ok()) return c.respond_error(s);
  auto op = std::make_shared<ListOp>();
  op->conn = c.weak_from_this();
  op->prefix = std::move(prefix);
  op->start = std::move(start);
  op->limit = limit;
  op->r = r;
  op->mode = mode;
  op->n = server_.coordinator().effective_n();
  op->ring = server_.cluster().ring();
  // Owners, and members taking tokens over: a joining node gets every write meanwhile,
  // so it may hold the newest version of a key before it owns it.
  const std::vector<ring::Member>& members = op->ring->members();
  for (std::uint32_t i = 0; i < members.size(); i++) {
    const ring::Member& m = members[i];
    if (!ring::owns_tokens(m.state) && m.state != ring::MemberState::joining) continue;
    const Replica* rep = server_.cluster().find(m.id);
    ListOp::Member a;
    a.index = i;
    a.addr = rep ? rep->addr : m.addr;
    if (rep == nullptr || !rep->alive) {
      a.failure = "down";
    } else if (rep->self) {
      Status s = server_.store().list_versions(op->prefix, op->start, limit, &a.answer.rows,
                                               &a.answer.next);
      a.answered = s.is_ok();
      if (!s.is_ok()) a.failure = s.message();
    } else {
      op->waiting++;
    }
    op->asked.push_back(std::move(a));
  }
  std::string query = "?prefix=" + encode_key(op->prefix) + "&start=" + encode_key(op->start) +
                      "&limit=" + std::to_string(limit);
  for (std::size_t k = 0; k < op->asked.size(); k++) {
    ListOp::Member& a = op->asked[k];
    if (a.answered || !a.failure.empty()) continue;
    counters_.peer_requests++;
    auto req = std::make_unique<PeerRequest>();
    req->target = "/_/internal/list" + query;
    req->timeout_ms = server_.coordinator().config().replica_timeout_ms;
    req->response_body_max = list_limits::answer_bytes_max;
    req->done = [this, op, k](Status s, PeerResponse resp) {
      ListOp::Member& m = op->asked[k];
      if (s.is_ok() && resp.status != 200) {
        s = Status::io_error("answered " + std::to_string(resp.status));
      }
      if (s.is_ok()) s = decode_list_answer(resp.body, op->prefix, op->start, op->limit, &m.answer);
      m.answered = s.is_ok();
      if (!s.is_ok()) {
        counters_.peer_failures++;
        m.failure = s.message();
        log::warn("listing from " + m.addr + " failed: " + m.failure);
      }
      if (--op->waiting == 0) finish(op);
    };
    server_.peers().send(a.addr, std::move(req));
  }
  if (op->waiting == 0) finish(op);
}

void Listing::finish(const std::shared_ptr<ListOp>& op) {
  auto conn = op->conn.lock();
  if (!conn) return;
  std::vector<bool> answered(op->ring->members().size(), false);
  std::vector<const ListAnswer*> answers;
  for (const ListOp::Member& m : op->asked) {
    if (!m.answered) continue;
    answered[m.index] = true;
    answers.push_back(&m.answer);
  }
  if (auto arc = find_uncovered_arc(*op->ring, op->n, op->r, answered)) {
    counters_.unavailable++;
    nlohmann::json owners = nlohmann::json::array();
    for (std::uint32_t i : arc->owners) {
      const ring::Member& m = op->ring->members()[i];
      nlohmann::json o = {{"id", ring::hex_id(m.id)}, {"addr", m.addr}, {"answered", answered[i]}};
      for (const ListOp::Member& a : op->asked) {
        if (a.index == i && !a.answered) o["failure"] = a.failure;
      }
      owners.push_back(std::move(o));
    }
    std::string range = "(" + std::to_string(arc->from) + ", " + std::to_string(arc->to) + "]";
    nlohmann::json j = {
        {"error", "ring_range_unavailable"},
        {"reason", "ring range " + range + " has " + std::to_string(arc->answered) + " of " +
                       std::to_string(arc->owners.size()) + " owners answering, " +
                       std::to_string(op->r) + " needed"},
        {"range", {{"from", std::to_string(arc->from)}, {"to", std::to_string(arc->to)}}},
        {"owners", std::move(owners)},
        {"answered", arc->answered},
        {"needed", op->r}};
    return conn->respond(http_status(Code::unavailable), "Content-Type: application/json\r\n",
                         json_line(j));
  }
  std::vector<std::string> keys;
  std::string next;
  merge_list_answers(answers, op->limit, &keys, &next, op->mode, clock_.wall_ms());
  conn->respond(200, "Content-Type: application/json\r\n",
                json_line({{"keys", std::move(keys)}, {"next", std::move(next)}}));
}

}  // namespace node
