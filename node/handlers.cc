// The public blob API, the /_/ system endpoints and the /_/internal node-to-node API, on
// top of Connection. Quorum logic lives in the Coordinator.
#include <nlohmann/json.hpp>
#include <optional>

#include "node/json_util.h"
#include "node/admin_page.h"
#include "node/attrs.h"
#include "node/coordinator.h"
#include "node/http_status.h"
#include "node/log.h"
#include "node/server.h"

namespace node {

namespace {

// A request that has no business carrying a body may still send a small one; we read
// and drop at most this much rather than keep the connection in an odd state.
constexpr std::uint64_t ignored_body_bytes_max = 64 * 1024;

bool is_system(const Target& t) { return t.path.compare(0, 2, "_/") == 0; }
bool starts_with(const std::string& s, std::string_view p) { return s.compare(0, p.size(), p) == 0; }
constexpr std::string_view internal_blob = "_/internal/blob/";
constexpr std::string_view internal_push = "_/internal/push/";

std::string etag_of(const blobstore::BlobMeta& m) { return "\"" + blobstore::md5_hex(m.md5) + "\""; }

std::int64_t last_modified_s(const blobstore::BlobMeta& m) {
  return static_cast<std::int64_t>(m.version.wall_ms() / 1000);
}

// The headers of a value less its Content-Type, which a multipart answer replaces.
std::string validator_headers(const blobstore::BlobMeta& m) {
  std::string h;
  h += "ETag: " + etag_of(m) + "\r\n";
  h += "Last-Modified: " + http_date(last_modified_s(m)) + "\r\n";
  h += "X-Ringstore-Version: " + m.version.to_string() + "\r\n";
  h += "Accept-Ranges: bytes\r\n";
  h += client_meta_headers(m);  // the stored block as it is: nothing parsed
  return h;
}

std::string blob_headers(const blobstore::BlobMeta& m) {
  return validator_headers(m) + "Content-Type: " + m.content_type + "\r\n";
}

// What a replica says about its copy, for HEAD and GET /_/internal/blob.
std::string internal_headers(const blobstore::BlobMeta& m) {
  std::string h = "X-Ringstore-Version: " + m.version.to_string() + "\r\n";
  h += "X-Ringstore-Md5: " + blobstore::md5_hex(m.md5) + "\r\n";
  h += "X-Ringstore-Size: " + std::to_string(m.size) + "\r\n";
  if (!m.content_type.empty()) h += "Content-Type: " + m.content_type + "\r\n";
  h += replica_meta_headers(m);  // tombstone kind, attributes, expiry
  return h;
}

}  // namespace

// ---- routing ----

Status Server::on_headers(Connection& c) {
  HttpRequest& r = c.request();
  auto target = parse_target(r.url);
  if (!target.is_ok()) return target.take_status();
  r.target = std::move(target.value());
  if (starts_with(r.target.path, "_/internal/")) return on_internal_headers(c);
  bool listing = r.method == HTTP_GET && (r.target.has("list") || r.target.has("unlinked"));
  bool writes = r.method == HTTP_PUT || r.method == HTTP_DELETE || r.method == HTTP_UNLINK;
  // A write to "_/..." is a write to a reserved key (400); reads there are endpoints.
  if ((!is_system(r.target) && !listing) || (is_system(r.target) && writes)) {
    if (Status s = validate_key(r.target.path); !s.is_ok()) return s;
    // Before the body: a write with a condition it cannot read is refused unread.
    if (Status s = r.conditions.validate(); !s.is_ok()) return s;
  }
  if (r.method == HTTP_PUT) return begin_upload(c, r.target.path, /*internal=*/false);
  switch (r.method) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_DELETE:
    case HTTP_UNLINK:
      break;
    default:
      return Status(Code::method_not_allowed,
                    "method_not_allowed: use GET, HEAD, PUT, DELETE or UNLINK");
  }
  if (!r.chunked && r.content_length > ignored_body_bytes_max) {
    return limit_error(Code::body_too_large, "body_too_large", ignored_body_bytes_max);
  }
  return Status::ok();
}

// A client's PUT stores the headers it captured (node/attrs.h) and expires after its
// X-Ringstore-TTL, counted from this node's clock: the coordinator's, so every replica
// gets the same absolute expiry. A replica write carries what its coordinator decided.
Status Server::begin_upload(Connection& c, const std::string& key, bool internal) {
  HttpRequest& r = c.request();
  if (!r.chunked && r.content_length > config_.limits.body_bytes_max) {
    return limit_error(Code::body_too_large, "body_too_large", config_.limits.body_bytes_max);
  }
  blobstore::BlobMeta stored;
  if (internal) {
    if (!replica_meta_from(r.ringstore_headers, &stored)) {
      return Status::invalid("bad_replica_meta: tombstone, attributes or expiry malformed");
    }
  } else {
    auto attrs = encode_attrs(std::move(r.stored_headers));
    if (!attrs.is_ok()) return attrs.take_status();
    stored.attrs = std::move(attrs.value());
    auto expires = expiry_from_ttl(r.ringstore_header("ttl"), clock_->wall_ms());
    if (!expires.is_ok()) return expires.take_status();
    stored.expires_ms = expires.value();
  }
  const bool tombstone = stored.tombstone;
  std::string ct = r.has_content_type ? r.content_type : "application/octet-stream";
  if (tombstone) ct.clear();
  if (ct.size() > blobstore::limits::content_type_bytes_max) {
    return Status::invalid("content_type_too_long");
  }
  auto w = tombstone ? store_->begin_tombstone(key, clock_->wall_ms())
                     : store_->begin_write(key, ct, clock_->wall_ms());
  if (!w.is_ok()) return w.take_status();
  r.writer = std::move(w.value());
  if (!tombstone) r.writer->set_attrs(std::move(stored.attrs), stored.expires_ms);
  if (stored.unlinked) r.writer->set_unlinked();
  if (r.expect_continue) c.send_continue();
  return Status::ok();
}

Status Server::on_body(Connection& c, const char* data, std::size_t n) {
  HttpRequest& r = c.request();
  r.body_bytes += n;
  if (!r.writer) {
    if (r.body_bytes > ignored_body_bytes_max && !r.already_held) {
      return limit_error(Code::body_too_large, "body_too_large", ignored_body_bytes_max);
    }
    return Status::ok();
  }
  if (r.body_bytes > config_.limits.body_bytes_max) {  // chunked bodies have no length up front
    return limit_error(Code::body_too_large, "body_too_large", config_.limits.body_bytes_max);
  }
  if (r.writer->meta().tombstone) return Status::invalid("tombstone_with_body");
  Status s = r.writer->append(data, n);
  if (!s.is_ok()) log::error("write failed: " + s.message());
  return s;
}

void Server::on_request(Connection& c) {
  HttpRequest& r = c.request();
  if (starts_with(r.target.path, "_/internal/")) return on_internal_request(c);
  if (is_system(r.target)) return handle_system(c);
  std::uint32_t quorum = 0;
  switch (r.method) {
    case HTTP_GET:
    case HTTP_HEAD:
      if (r.method == HTTP_GET && r.target.has("list")) return handle_list(c, /*unlinked=*/false);
      if (r.method == HTTP_GET && r.target.has("unlinked")) return handle_list(c, /*unlinked=*/true);
      if (Status s = coordinator_->pick(r.target, "r", coordinator_->config().r, &quorum); !s.is_ok()) {
        return c.respond_error(s);
      }
      return coordinator_->read(c, quorum, r.method == HTTP_HEAD);
    case HTTP_PUT:
    case HTTP_DELETE:
    case HTTP_UNLINK: {
      if (Status s = coordinator_->pick(r.target, "w", coordinator_->config().w, &quorum); !s.is_ok()) {
        return c.respond_error(s);
      }
      // UNLINK is a DELETE that leaves the key listed under ?unlinked (minikeyvalue's
      // virtual delete); a DELETE of it writes a plain tombstone, which ends that.
      if (r.method == HTTP_DELETE || r.method == HTTP_UNLINK) {
        auto w = store_->begin_tombstone(r.target.path, clock_->wall_ms());
        if (!w.is_ok()) return c.respond_error(w.status());
        r.writer = std::move(w.value());
        if (r.method == HTTP_UNLINK) r.writer->set_unlinked();
      }
      // Only a write with a precondition pays for reading the current version first.
      if (!r.conditions.constrain_write()) {
        return coordinator_->write(c, std::move(r.writer), quorum);
      }
      std::uint32_t read_quorum = 0;
      if (Status s = coordinator_->pick(r.target, "r", coordinator_->config().r, &read_quorum);
          !s.is_ok()) {
        return c.respond_error(s);
      }
      return coordinator_->write_checked(c, std::move(r.writer), quorum, read_quorum);
    }
    default:
      return c.respond_error(Status(Code::method_not_allowed, "method_not_allowed"));
  }
}

// ---- serving a stored value ----

Status Server::serve_local(Connection& c, bool head_only) {
  HttpRequest& r = c.request();
  blobstore::BlobHandle large;
  auto got = store_->read(r.target.path, &large);
  if (!got.is_ok()) {
    if (got.status().code() == Code::corruption) {
      log::error("damaged copy of a key: " + got.status().message());
      return got.take_status();
    }
    if (got.status().code() == Code::not_found) {
      c.respond_error(Status::not_found("not_found"));
      return Status::ok();
    }
    log::error("read failed: " + got.status().message());
    c.respond_error(got.status());
    return Status::ok();
  }
  const blobstore::CachedValue* small = got.value().get();
  if (small == nullptr) {
    serve_handle(c, std::move(large), head_only);
    return Status::ok();
  }
  if (small->meta.tombstone || expired_now(small->meta.expires_ms, *clock_)) {
    c.respond(404, "Content-Type: application/json\r\nX-Ringstore-Version: " +
                       small->meta.version.to_string() + "\r\n",
              error_body(Status::not_found("not_found")), head_only);
    return Status::ok();
  }
  // A cached value keeps its response headers, so a hot GET formats nothing.
  if (small->extra.empty()) small->extra = blob_headers(small->meta);
  serve_blob(c, small->meta, small->extra, &small->body, nullptr, head_only);
  return Status::ok();
}

void Server::serve_handle(Connection& c, blobstore::BlobHandle h, bool head_only) {
  if (expired_now(h.meta.expires_ms, *clock_)) {
    return c.respond(404, "Content-Type: application/json\r\n",
                     error_body(Status::not_found("not_found")), head_only);
  }
  std::string headers = blob_headers(h.meta);
  if (!head_only && h.meta.size <= blobstore::limits::small_value_bytes_max) {
    auto body = store_->read_verified(h);
    if (!body.is_ok()) return c.respond_error(body.status());
    return serve_blob(c, h.meta, headers, &body.value(), nullptr, head_only);
  }
  blobstore::BlobMeta meta = h.meta;
  serve_blob(c, meta, headers, nullptr, &h, head_only);
}

void Server::serve_body(Connection& c, const blobstore::BlobMeta& m, const std::string& body) {
  serve_blob(c, m, blob_headers(m), &body, nullptr, false);
}

void Server::serve_meta_head(Connection& c, const blobstore::BlobMeta& m) {
  serve_blob(c, m, blob_headers(m), nullptr, nullptr, true);
}

void Server::respond_not_modified(Connection& c, const blobstore::BlobMeta& m) {
  c.respond(304, blob_headers(m), "", true);
}

namespace {
// The ranges a GET or HEAD is answered with: whole without a Range, and when an
// If-Range names another version (RFC 9110 §13.1.5).
RangeSet wanted_ranges(const HttpRequest& r, const blobstore::BlobMeta& m) {
  if (r.range.empty()) return {};
  const std::string etag = etag_of(m);
  Validators v{true, etag, last_modified_s(m)};
  if (!if_range_matches(r.conditions.if_range, v)) return {};
  return parse_ranges(r.range, m.size);
}
}  // namespace

// One of `body` (whole, verified) or `handle` (to stream); neither for HEAD. The
// preconditions were checked by the coordinator against the newest version.
void Server::serve_blob(Connection& c, const blobstore::BlobMeta& m, const std::string& headers,
                        const std::string* body, blobstore::BlobHandle* handle, bool head_only) {
  RangeSet ranges = wanted_ranges(c.request(), m);
  if (ranges.kind == RangeKind::unsatisfiable) {
    return c.respond(416, headers + "Content-Range: bytes */" + std::to_string(m.size) + "\r\n",
                     error_body(Status(Code::range_not_satisfiable, "range_not_satisfiable")),
                     head_only);
  }
  if (ranges.kind == RangeKind::partial && ranges.ranges.size() > 1) {
    // Several ranges of a value held in memory: one multipart/byteranges answer. A
    // streamed (large) value, or a HEAD, gets the whole value instead, as RFC 9110
    // §14.2 allows: parts would need a stream of their own per range.
    if (body != nullptr && !head_only && serve_multipart(c, m, *body, ranges.ranges)) return;
    ranges = {};
  }
  int status = 200;
  ByteRange br{0, m.size == 0 ? 0 : m.size - 1};
  std::uint64_t length = m.size;
  std::string extra;
  if (ranges.kind == RangeKind::partial) {
    status = 206;
    br = ranges.ranges.front();
    length = br.length();
    extra = "Content-Range: bytes " + std::to_string(br.first) + "-" + std::to_string(br.last) +
            "/" + std::to_string(m.size) + "\r\n";
  }
  if (head_only) return c.respond_head(status, headers + extra, length);
  if (body != nullptr) {
    std::string_view b(*body);
    return c.respond(status, extra.empty() ? headers : headers + extra,
                     std::string(b.substr(br.first, length)));
  }
  ASSERT(handle != nullptr);
  c.stream(status, headers + extra, std::move(*handle), br);
}

// The boundary holds the value's own MD5: a value that contains it would be one that
// contains its own hash. Checked anyway (false: the caller sends the whole value).
bool Server::serve_multipart(Connection& c, const blobstore::BlobMeta& m, const std::string& body,
                             const std::vector<ByteRange>& ranges) {
  const std::string boundary = "ringstore-" + blobstore::md5_hex(m.md5);
  if (body.find(boundary) != std::string::npos) return false;
  std::string headers = validator_headers(m);
  headers += "Content-Type: multipart/byteranges; boundary=" + boundary + "\r\n";
  c.respond(206, headers, multipart_byteranges(body, ranges, m.content_type, boundary));
  return true;
}

// ---- the node-to-node API ----

namespace {
// A copy no client waits for (repair, hint delivery, transfer): X-Ringstore-Background: 1.
bool is_background(const HttpRequest& r) {
  const std::string* bg = r.ringstore_header("background");
  return bg != nullptr && *bg == "1";
}
}  // namespace

Status Server::on_internal_headers(Connection& c) {
  HttpRequest& r = c.request();
  const std::string* auth = r.ringstore_header("auth");
  if (auth == nullptr || *auth != auth_token_) {
    return Status(Code::unauthorized, "unauthorized: the cluster secret is required");
  }
  if (AntiEntropy::handles(r.target.path)) return ae_->on_headers(c);
  if (starts_with(r.target.path, internal_blob)) {
    std::string key = r.target.path.substr(internal_blob.size());
    if (Status s = validate_key(key); !s.is_ok()) return s;
    if (r.method == HTTP_GET || r.method == HTTP_HEAD) return Status::ok();
    if (r.method != HTTP_PUT) return Status(Code::method_not_allowed, "method_not_allowed");
    const std::string* v = r.ringstore_header("version");
    auto version = v == nullptr ? std::nullopt : blobstore::Version::parse(*v);
    if (!version) return Status::invalid("bad_version");
    // Every copy a node takes (a client's write, a hint, a read repair, a push of
    // anti-entropy or of a transfer) comes through here or through the two fetches
    // that check the same (repair and read repair).
    if (Status s = accept_version(*version); !s.is_ok()) return s;
    // The committer would drop it as not newer: skip the temp file (creating one is the
    // dearest step of a write here). Replicas repairing the same node offer it the same
    // copy, and handoffs and hints are retried after lost answers: background copies.
    // A client's write is almost never held yet, and asking the index for a key it does
    // not hold costs a query per replica write; the committer still drops it if it is.
    if (is_background(r)) {
      auto held = store_->lookup(key);
      if (held.is_ok() && !(held.value().version < *version)) {
        r.already_held = true;
        if (r.expect_continue) c.send_continue();
        return Status::ok();
      }
    }
    return begin_upload(c, key, /*internal=*/true);
  }
  if (starts_with(r.target.path, internal_push)) {
    if (r.method != HTTP_POST) return Status(Code::method_not_allowed, "method_not_allowed");
    if (Status s = validate_key(r.target.path.substr(internal_push.size())); !s.is_ok()) return s;
    if (!r.target.has("to")) return Status::invalid("missing_to");
    return Status::ok();
  }
  if (Transfers::handles(r.target.path)) return transfers_->check_headers(c);
  if (Listing::handles(r.target.path)) return listing_->check_headers(c);
  return Status::not_found("no_such_endpoint");
}

void Server::on_internal_request(Connection& c) {
  HttpRequest& r = c.request();
  if (AntiEntropy::handles(r.target.path)) return ae_->on_request(c);
  if (starts_with(r.target.path, internal_push)) {
    std::weak_ptr<Connection> weak = c.weak_from_this();
    return coordinator_->push(r.target.path.substr(internal_push.size()), *r.target.get("to"),
                              nullptr, [weak](Status s, bool applied) {
                                auto conn = weak.lock();
                                if (!conn) return;
                                if (!s.is_ok()) return conn->respond_error(s);
                                conn->respond(200, "Content-Type: application/json\r\n",
                                              applied ? "{\"pushed\":true,\"applied\":true}\n"
                                                      : "{\"pushed\":true,\"applied\":false}\n");
                              });
  }
  if (Transfers::handles(r.target.path)) return transfers_->on_request(c);
  if (Listing::handles(r.target.path)) return listing_->serve_internal(c);
  std::string key = r.target.path.substr(internal_blob.size());
  if (r.method == HTTP_PUT) return internal_put(c);
  if (r.method == HTTP_HEAD) {
    // A read's question "which version do you hold?": the index (or the cache) answers
    // it without opening the file; a GET for the bytes checks the file.
    auto m = store_->lookup(key);
    if (!m.is_ok() || m.value().is_hint) {
      if (!m.is_ok() && m.status().code() != Code::not_found) return c.respond_error(m.status());
      return c.respond(404, "Content-Type: application/json\r\n",
                       error_body(Status::not_found("not_found")), true);
    }
    return c.respond(200, internal_headers(m.value()), "", true);
  }
  auto h = store_->open_read(key);
  if (!h.is_ok() || h.value().meta.is_hint) {
    // A hint is not this node's copy to report.
    if (!h.is_ok() && h.status().code() != Code::not_found) return c.respond_error(h.status());
    return c.respond(404, "Content-Type: application/json\r\n",
                     error_body(Status::not_found("not_found")), r.method == HTTP_HEAD);
  }
  const blobstore::BlobMeta& m = h.value().meta;
  std::string headers = internal_headers(m);
  if (r.method == HTTP_HEAD || m.tombstone) return c.respond(200, headers, "", true);
  if (m.size <= blobstore::limits::small_value_bytes_max) {
    auto body = store_->read_verified(h.value());
    if (!body.is_ok()) return c.respond_error(body.status());
    return c.respond(200, headers, std::move(body.value()));
  }
  ByteRange all{0, m.size - 1};
  c.stream(200, headers, std::move(h.value()), all);
}

void Server::internal_put(Connection& c) {
  HttpRequest& r = c.request();
  auto version = blobstore::Version::parse(*r.ringstore_header("version"));
  ASSERT(version);  // checked at the headers, and accept_version() moved the clock past it
  if (r.already_held) {
    counters_.puts_already_held++;
    return c.respond(201, "Content-Type: application/json\r\n", "{\"applied\":false}\n");
  }
  if (const std::string* md5 = r.ringstore_header("md5")) {
    if (*md5 != blobstore::md5_hex(r.writer->finish_md5())) {
      return c.respond_error(Status::invalid("checksum_mismatch: the body does not match its MD5"));
    }
  }
  if (is_background(r)) r.writer->set_background();
  std::optional<ring::NodeId> hinted;
  if (const std::string* hint = r.ringstore_header("hint-for")) {
    ring::NodeId owner{};
    if (!blobstore::unhex(*hint, owner.data(), owner.size())) return c.respond_error(Status::invalid("bad_hint_for"));
    if (!hint_policy_->admit(owner)) {  // the coordinator leaves this miss to anti-entropy
      return c.respond_error(Status::unavailable("hint_cap: this node holds its cap of hints"));
    }
    r.writer->set_hint_for(owner);
    hinted = owner;
  }
  std::weak_ptr<Connection> weak = c.weak_from_this();
  Status s = store_->commit(std::move(r.writer), *version,
      [this, weak, hinted](Status st, blobstore::CommitResult res) {
        if (hinted) hint_policy_->release(*hinted, st.is_ok());
        auto conn = weak.lock();
        if (!conn) return;
        if (!st.is_ok()) return conn->respond_error(st);
        if (res.applied) return conn->respond(201, "Content-Type: application/json\r\n", "{\"applied\":true}\n");
        if (!res.newer) return conn->respond(201, "Content-Type: application/json\r\n", "{\"applied\":false}\n");
        // The coordinator writes again above this version, or tells its client it lost.
        const std::string held = res.newer->to_string();
        conn->respond(201, "Content-Type: application/json\r\nX-Ringstore-Held: " + held + "\r\n",
                      "{\"applied\":false,\"held\":\"" + held + "\"}\n");
      });
  if (!s.is_ok()) {
    if (hinted) hint_policy_->release(*hinted, false);
    c.respond_error(s);
  }
}

// ---- listing and system endpoints ----

void Server::handle_list(Connection& c, bool unlinked) {
  HttpRequest& r = c.request();
  std::size_t limit = blobstore::limits::list_limit_default;
  if (const std::string* l = r.target.get("limit")) {
    auto n = parse_u64(*l);
    if (!n || *n == 0 || *n > blobstore::limits::list_limit_max) {
      return c.respond_error(Status::invalid(
          "bad_limit: limit must be 1.." + std::to_string(blobstore::limits::list_limit_max)));
    }
    limit = *n;
  }
  std::uint32_t quorum = 0;
  if (Status s = coordinator_->pick(r.target, "r", coordinator_->config().r, &quorum); !s.is_ok()) {
    return c.respond_error(s);
  }
  // Gathered from every member, not from this node's copies alone (node/listing.h).
  const std::string* start = r.target.get("start");
  listing_->list(c, r.target.path, start ? *start : "", limit, quorum,
                 unlinked ? ListMode::unlinked : ListMode::live);
}

void Server::handle_system(Connection& c) {
  HttpRequest& r = c.request();
  if (r.method != HTTP_GET && r.method != HTTP_HEAD) {
    return c.respond_error(Status(Code::method_not_allowed, "method_not_allowed"));
  }
  if (r.target.path == "_/status") {
    return c.respond(200, "Content-Type: application/json\r\n", json_line(status_json()),
                     r.method == HTTP_HEAD);
  }
  if (r.target.path == "_/admin" || r.target.path == "_/admin/") {
    return c.respond(200, "Content-Type: text/html; charset=utf-8\r\nCache-Control: no-cache\r\n",
                     std::string(admin_page()), r.method == HTTP_HEAD);
  }
  if (r.target.path == "_/metrics") {
    return c.respond(200, "Content-Type: text/plain; version=0.0.4\r\n", metrics_text(),
                     r.method == HTTP_HEAD);
  }
  if (r.target.path == "_/locate") {
    const std::string* key = r.target.get("key");
    if (key == nullptr) return c.respond_error(Status::invalid("missing_key"));
    if (Status s = validate_key(*key); !s.is_ok()) return c.respond_error(s);
    return coordinator_->locate(c, *key);
  }
  c.respond_error(Status::not_found("no_such_endpoint"));
}

}  // namespace node
