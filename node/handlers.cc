// The public blob API and the /_/ system endpoints, on top of Connection.
#include <nlohmann/json.hpp>

#include "node/http_status.h"
#include "node/log.h"
#include "node/server.h"

namespace node {

namespace {

// A request that has no business carrying a body may still send a small one; we read
// and drop at most this much rather than keep the connection in an odd state.
constexpr std::uint64_t ignored_body_bytes_max = 64 * 1024;

bool is_system(const Target& t) { return t.path.compare(0, 2, "_/") == 0; }

std::string etag_of(const blobstore::BlobMeta& m) { return "\"" + blobstore::md5_hex(m.md5) + "\""; }

std::string blob_headers(const blobstore::BlobMeta& m) {
  std::string h;
  h += "ETag: " + etag_of(m) + "\r\n";
  h += "Last-Modified: " + http_date(static_cast<std::int64_t>(m.version.wall_ms() / 1000)) + "\r\n";
  h += "X-Ringstore-Version: " + m.version.to_string() + "\r\n";
  h += "Accept-Ranges: bytes\r\n";
  h += "Content-Type: " + m.content_type + "\r\n";
  return h;
}

std::string json_line(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace

Status Server::on_headers(Connection& c) {
  HttpRequest& r = c.request();
  auto target = parse_target(r.url);
  if (!target.is_ok()) return target.take_status();
  r.target = std::move(target.value());
  bool listing = r.method == HTTP_GET && r.target.has("list");
  bool writes = r.method == HTTP_PUT || r.method == HTTP_DELETE;
  // A write to "_/..." is a write to a reserved key (400); reads there are endpoints.
  if ((!is_system(r.target) && !listing) || (is_system(r.target) && writes)) {
    if (Status s = validate_key(r.target.path); !s.is_ok()) return s;
  }
  if (r.method == HTTP_PUT && !is_system(r.target)) {
    if (!r.chunked && r.content_length > config_.limits.body_bytes_max) {
      return limit_error(Code::body_too_large, "body_too_large", config_.limits.body_bytes_max);
    }
    std::string ct = r.has_content_type ? r.content_type : "application/octet-stream";
    if (ct.size() > blobstore::limits::content_type_bytes_max) {
      return Status::invalid("content_type_too_long");
    }
    auto w = store_->begin_write(r.target.path, ct, Hlc::wall_clock_ms());
    if (!w.is_ok()) return w.take_status();
    r.writer = std::move(w.value());
    if (r.expect_continue) c.send_continue();
    return Status::ok();
  }
  switch (r.method) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_DELETE:
      break;
    default:
      return Status(Code::method_not_allowed, "method_not_allowed: use GET, HEAD, PUT or DELETE");
  }
  if (!r.chunked && r.content_length > ignored_body_bytes_max) {
    return limit_error(Code::body_too_large, "body_too_large", ignored_body_bytes_max);
  }
  return Status::ok();
}

Status Server::on_body(Connection& c, const char* data, std::size_t n) {
  HttpRequest& r = c.request();
  r.body_bytes += n;
  if (!r.writer) {
    if (r.body_bytes > ignored_body_bytes_max) {
      return limit_error(Code::body_too_large, "body_too_large", ignored_body_bytes_max);
    }
    return Status::ok();
  }
  if (r.body_bytes > config_.limits.body_bytes_max) {  // chunked bodies have no length up front
    return limit_error(Code::body_too_large, "body_too_large", config_.limits.body_bytes_max);
  }
  Status s = r.writer->append(data, n);
  if (!s.is_ok()) log::error("write failed: " + s.message());
  return s;
}

void Server::on_request(Connection& c) {
  HttpRequest& r = c.request();
  if (is_system(r.target)) return handle_system(c);
  switch (r.method) {
    case HTTP_GET:
      if (r.target.has("list")) return handle_list(c);
      return handle_get(c, false);
    case HTTP_HEAD: return handle_get(c, true);
    case HTTP_PUT: return handle_put(c);
    case HTTP_DELETE: return handle_delete(c);
    default: return c.respond_error(Status(Code::method_not_allowed, "method_not_allowed"));
  }
}

void Server::handle_put(Connection& c) {
  HttpRequest& r = c.request();
  ASSERT(r.writer != nullptr);
  blobstore::Version v{hlc_.now(Hlc::wall_clock_ms()), store_->node_id()};
  std::weak_ptr<Connection> weak = c.shared_from_this();
  std::string key = r.target.path;
  Status s = store_->commit(std::move(r.writer), v,
      [weak, v](Status st, blobstore::CommitResult res) {
        auto conn = weak.lock();
        if (!conn) return;  // the client left; the write still counts
        if (!st.is_ok()) {
          log::error("commit failed: " + st.message());
          return conn->respond_error(st);
        }
        nlohmann::json j = {{"version", v.to_string()}, {"etag", blobstore::md5_hex(res.md5)}};
        std::string h = "ETag: \"" + blobstore::md5_hex(res.md5) + "\"\r\n" +
                        "X-Ringstore-Version: " + v.to_string() + "\r\n" +
                        "Content-Type: application/json\r\n";
        conn->respond(201, std::move(h), json_line(j));
      });
  if (!s.is_ok()) c.respond_error(s);
}

void Server::handle_delete(Connection& c) {
  HttpRequest& r = c.request();
  blobstore::Version v{hlc_.now(Hlc::wall_clock_ms()), store_->node_id()};
  std::weak_ptr<Connection> weak = c.shared_from_this();
  Status s = store_->remove(r.target.path, v, Hlc::wall_clock_ms(),
      [weak, v](Status st, blobstore::CommitResult) {
        auto conn = weak.lock();
        if (!conn) return;
        if (!st.is_ok()) return conn->respond_error(st);
        conn->respond(204, "X-Ringstore-Version: " + v.to_string() + "\r\n", "");
      });
  if (!s.is_ok()) c.respond_error(s);
}

void Server::handle_get(Connection& c, bool head_only) {
  HttpRequest& r = c.request();
  blobstore::BlobHandle large;
  auto got = store_->read(r.target.path, &large);
  if (!got.is_ok()) {
    if (got.status().code() == Code::not_found) {
      return c.respond_error(Status::not_found("not_found"));
    }
    log::error("read failed: " + got.status().message());
    return c.respond_error(got.status());
  }
  const blobstore::CachedValue* small = got.value().get();
  const blobstore::BlobMeta& m = small ? small->meta : large.meta;
  if (m.tombstone) {
    return c.respond(404, "Content-Type: application/json\r\nX-Ringstore-Version: " +
                              m.version.to_string() + "\r\n",
                     error_body(Status::not_found("not_found")), head_only);
  }
  // A cached value keeps its response headers, so a hot GET formats nothing.
  std::string built;
  if (small && small->extra.empty()) small->extra = blob_headers(m);
  const std::string& headers = small ? small->extra : (built = blob_headers(m));
  if (!r.if_none_match.empty() && etag_matches(r.if_none_match, etag_of(m))) {
    return c.respond(304, headers, "", true);
  }
  RangeResult range = r.range.empty() ? RangeResult{} : parse_range(r.range, m.size);
  if (range.kind == RangeKind::unsatisfiable) {
    return c.respond(416, headers + "Content-Range: bytes */" + std::to_string(m.size) + "\r\n",
                     error_body(Status(Code::range_not_satisfiable, "range_not_satisfiable")),
                     head_only);
  }
  int status = 200;
  ByteRange br{0, m.size == 0 ? 0 : m.size - 1};
  std::uint64_t length = m.size;
  std::string extra;
  if (range.kind == RangeKind::partial) {
    status = 206;
    br = range.range;
    length = br.length();
    extra = "Content-Range: bytes " + std::to_string(br.first) + "-" + std::to_string(br.last) +
            "/" + std::to_string(m.size) + "\r\n";
  }
  if (head_only) return c.respond_head(status, headers + extra, length);
  if (small) {
    std::string_view body(small->body);
    return c.respond(status, extra.empty() ? headers : headers + extra,
                     std::string(body.substr(br.first, length)));
  }
  c.stream(status, headers + extra, std::move(large), br);
}

void Server::handle_list(Connection& c) {
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
  const std::string* start = r.target.get("start");
  std::vector<std::string> keys;
  std::string next;
  Status s = store_->list(r.target.path, start ? *start : "", limit, &keys, &next);
  if (!s.is_ok()) return c.respond_error(s);
  nlohmann::json j = {{"keys", keys}, {"next", next}};
  c.respond(200, "Content-Type: application/json\r\n", json_line(j));
}

void Server::handle_system(Connection& c) {
  HttpRequest& r = c.request();
  if (r.method != HTTP_GET && r.method != HTTP_HEAD) {
    return c.respond_error(Status(Code::method_not_allowed, "method_not_allowed"));
  }
  if (r.target.path == "_/status") {
    nlohmann::json disks = nlohmann::json::array();
    for (const auto& d : store_->disks_info(Hlc::wall_clock_ms())) {
      disks.push_back({{"path", d.path}, {"healthy", d.healthy}, {"free_bytes", d.free_bytes},
                       {"total_bytes", d.total_bytes}});
    }
    nlohmann::json j = {
        {"id", blobstore::hex(store_->node_id().data(), store_->node_id().size())},
        {"addr", address()},
        {"keys", store_->live_keys()},
        {"disks", disks},
        {"connections", conns_.size()},
        {"requests", counters_.requests},
        {"corrupt_reads", store_->corrupt_reads()},
        {"cache", {{"bytes", store_->cache().bytes()}, {"bytes_max", store_->cache().bytes_max()},
                   {"hits", store_->cache().hits()}, {"misses", store_->cache().misses()}}},
    };
    return c.respond(200, "Content-Type: application/json\r\n", json_line(j),
                     r.method == HTTP_HEAD);
  }
  c.respond_error(Status::not_found("no_such_endpoint"));
}

}  // namespace node
