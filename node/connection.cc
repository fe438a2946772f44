#include "node/connection.h"

#include <strings.h>

#include <cstring>

#include "node/attrs.h"
#include "node/http_status.h"
#include "node/log.h"
#include "node/server.h"

namespace node {

struct Connection::WriteReq {
  uv_write_t req;
  std::string bytes;
  Part part;
};

struct Connection::StreamState {
  blobstore::BlobHandle handle;
  ByteRange range;
  bool verify_first = false;  // a partial body: check the whole blob before sending
  bool verifying = false;
  std::uint64_t offset = 0;   // next byte of the file to read
  std::uint64_t end = 0;      // one past the last byte to read in this pass
  blobstore::Md5 md5;
  std::string buf;
  uv_fs_t fs;
  bool read_in_flight = false;  // then fs belongs to libuv and the callback frees this
  bool md5_checked = false;     // the whole body checked out before its last chunk left
  std::weak_ptr<Connection> owner;
};

namespace {

bool header_is(const std::string& field, const char* name) {
  return strcasecmp(field.c_str(), name) == 0;
}

Connection* self_of(llhttp_t* p) { return static_cast<Connection*>(p->data); }

// A list header sent twice is one list (RFC 9110 §5.3); a second date or If-Range makes
// the field invalid, and an empty value is ignored like a malformed one.
void capture_list(std::optional<std::string>& slot, const std::string& value) {
  if (slot) {
    *slot += ", ";
    *slot += value;
  } else {
    slot = value;
  }
}

void capture_single(std::optional<std::string>& slot, const std::string& value) {
  if (slot) {
    slot->clear();
  } else {
    slot = value;
  }
}

void capture_condition(Conditions& c, const std::string& field, const std::string& value) {
  if (header_is(field, "if-match")) return capture_list(c.if_match, value);
  if (header_is(field, "if-none-match")) return capture_list(c.if_none_match, value);
  if (header_is(field, "if-modified-since")) return capture_single(c.if_modified_since, value);
  if (header_is(field, "if-unmodified-since")) return capture_single(c.if_unmodified_since, value);
  if (header_is(field, "if-range")) return capture_single(c.if_range, value);
}

// is_stored_header() without lower-casing (and allocating) every header's name first.
bool stored_header_field(const std::string& f) {
  return (f.size() > 17 && strncasecmp(f.c_str(), "x-ringstore-meta-", 17) == 0) ||
         header_is(f, "content-encoding") || header_is(f, "content-disposition") ||
         header_is(f, "cache-control");
}

std::string lower_name(const std::string& field) {
  std::string name = field;
  for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return name;
}

}  // namespace

Connection::Connection(Server* server, std::uint64_t now_ms)
    : server_(server), tcp_(new uv_tcp_t) {
  llhttp_init(&parser_, HTTP_REQUEST, settings());
  parser_.data = this;
  deadline_ms_ = now_ms + server_->limits().idle_timeout_ms;
}

Connection::~Connection() {
  ASSERT(tcp_ == nullptr || closing_);
  drop_stream();
}

void Connection::drop_stream() {
  if (stream_ && stream_->read_in_flight) {
    (void)stream_.release();  // the read's callback sees it orphaned and deletes it
  }
  stream_.reset();
}

const llhttp_settings_t* Connection::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t x;
    llhttp_settings_init(&x);
    x.on_message_begin = on_message_begin;
    x.on_url = on_url;
    x.on_header_field = on_header_field;
    x.on_header_value = on_header_value;
    x.on_header_value_complete = on_header_value_complete;
    x.on_headers_complete = on_headers_complete;
    x.on_body = on_body;
    x.on_message_complete = on_message_complete;
    return x;
  }();
  return &s;
}

Status Connection::start() {
  tcp_->data = this;
  uv_tcp_nodelay(tcp_, 1);
  read_start();
  return Status::ok();
}

void Connection::read_start() {
  if (reading_ || closing_) return;
  if (uv_read_start(reinterpret_cast<uv_stream_t*>(tcp_), on_alloc, on_read) == 0) reading_ = true;
}

void Connection::read_stop() {
  if (!reading_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(tcp_));
  reading_ = false;
}

void Connection::set_deadline(std::uint32_t timeout_ms) {
  deadline_ms_ = server_->now_ms() + timeout_ms;
}

void Connection::close() {
  if (closing_) return;
  closing_ = true;
  read_stop();
  uv_close(reinterpret_cast<uv_handle_t*>(tcp_), on_close);
}

void Connection::close_reset() {
  if (closing_) return;
  closing_ = true;
  read_stop();
  if (uv_tcp_close_reset(tcp_, on_close) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(tcp_), on_close);
  }
}

void Connection::on_close(uv_handle_t* h) {
  auto* self = static_cast<Connection*>(h->data);
  delete reinterpret_cast<uv_tcp_t*>(h);
  if (self == nullptr) return;
  self->tcp_ = nullptr;
  self->server_->forget(self);  // may destroy self
}

// ---- reading and parsing ----

void Connection::on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
  auto* self = static_cast<Connection*>(h->data);
  // One buffer for the whole loop: a read is parsed to the end before the next one, and
  // any bytes after a complete request are copied to pending_.
  *buf = uv_buf_init(self->server_->read_buffer(),
                     static_cast<unsigned>(self->server_->read_buffer_size()));
}

void Connection::on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<Connection*>(s->data);
  if (self == nullptr || self->closing_) return;
  if (nread == 0) return;  // EAGAIN
  if (nread == UV_EOF && self->answering_) {
    // A client may shut its side after its last request: answer it, then close.
    self->peer_eof_ = true;
    self->read_stop();
    return;
  }
  if (nread < 0) {
    // EOF or reset. A request in progress is abandoned: an upload's temp file goes with it.
    self->close();
    return;
  }
  self->server_->metrics().bytes_in += static_cast<std::uint64_t>(nread);
  if (self->answering_) {
    self->pending_.append(buf->base, static_cast<std::size_t>(nread));
    if (self->pending_.size() >= limits::pending_bytes_max) self->read_stop();
    return;
  }
  self->feed(buf->base, static_cast<std::size_t>(nread));
}

void Connection::feed(const char* data, std::size_t n) {
  auto keep = shared_from_this();  // a handler may close the connection
  for (;;) {
    llhttp_errno_t err = llhttp_execute(&parser_, data, n);
    if (closing_) return;
    if (err == HPE_OK) {
      if (peer_eof_) return close();  // nothing more will come
      read_start();
      return;
    }
    if (err != HPE_PAUSED) {
      if (error_.is_ok()) {
        error_ = Status::invalid(std::string("bad_request: ") + llhttp_errno_name(err));
      }
      fail(error_);
      return;
    }
    // A whole request has arrived: answer it before parsing the next.
    const char* pos = llhttp_get_error_pos(&parser_);
    std::size_t used = pos ? static_cast<std::size_t>(pos - data) : n;
    phase_ = Phase::handling;
    dispatching_ = true;
    done_during_dispatch_ = false;
    server_->on_request(*this);
    dispatching_ = false;
    if (closing_) return;
    if (!done_during_dispatch_) {
      pending_.assign(data + used, n - used);
      answering_ = true;
      if (pending_.size() >= limits::pending_bytes_max) read_stop();
      return;
    }
    if (!next_request()) return;
    data += used;
    n -= used;
  }
}

void Connection::fail(const Status& s) {
  keep_alive_ = false;
  read_stop();
  respond_error(s);
}

void Connection::reset_request() {
  req_ = HttpRequest();
  header_bytes_ = 0;
  header_.clear();
  error_ = Status::ok();
  drop_stream();
  phase_ = Phase::idle;
  set_deadline(server_->limits().idle_timeout_ms);
}

int Connection::count_header_bytes(std::size_t n) {
  header_bytes_ += n;
  std::size_t max = server_->limits().header_bytes_max;
  // A replica write carries the stored headers of its value (node/attrs.h). The target
  // comes first, so it is known here; whoever sends it, the room is bounded.
  if (req_.url.compare(0, 12, "/_/internal/") == 0) max += attr_limits::internal_header_bytes_extra;
  if (header_bytes_ > max) {
    error_ = limit_error(Code::headers_too_large, "headers_too_large", max);
    return HPE_USER;
  }
  return HPE_OK;
}

int Connection::on_message_begin(llhttp_t* p) {
  Connection* self = self_of(p);
  self->phase_ = Phase::headers;
  self->req_.started_ms = self->server_->now_ms();
  self->req_.started_ns = self->server_->clock().monotonic_ns();
  self->set_deadline(self->server_->limits().header_timeout_ms);
  return HPE_OK;
}

int Connection::on_url(llhttp_t* p, const char* at, std::size_t n) {
  Connection* self = self_of(p);
  if (self->req_.url.size() + n > limits::url_bytes_max) {
    self->error_ = limit_error(Code::uri_too_long, "uri_too_long", limits::url_bytes_max);
    return HPE_USER;
  }
  self->req_.url.append(at, n);
  return self->count_header_bytes(n);
}

int Connection::on_header_field(llhttp_t* p, const char* at, std::size_t n) {
  Connection* self = self_of(p);
  if (int rc = self->count_header_bytes(n); rc != HPE_OK) return rc;
  self->header_.add_field(at, n);
  return HPE_OK;
}

int Connection::on_header_value(llhttp_t* p, const char* at, std::size_t n) {
  Connection* self = self_of(p);
  if (int rc = self->count_header_bytes(n); rc != HPE_OK) return rc;
  self->header_.add_value(at, n);
  return HPE_OK;
}

int Connection::on_header_value_complete(llhttp_t* p) {
  Connection* self = self_of(p);
  HttpRequest& r = self->req_;
  const std::string& f = self->header_.field;
  const std::string& value = self->header_.value;
  if (header_is(f, "content-type")) {
    r.content_type = value;
    r.has_content_type = true;
  } else if (header_is(f, "range")) {
    r.range = value;
  } else if (f.size() > 3 && strncasecmp(f.c_str(), "if-", 3) == 0) {
    capture_condition(r.conditions, f, value);
  } else if (stored_header_field(f)) {
    std::string name = lower_name(f);
    // Kept with the value by a PUT; bounded here, as it arrives, by attrs_bytes_max
    // (the stored line is "name: value\r\n").
    r.stored_header_bytes += name.size() + value.size() + 4;
    if (r.stored_header_bytes > attr_limits::attrs_bytes_max) {
      self->error_ = limit_error(Code::invalid_argument, "metadata_too_large", attr_limits::attrs_bytes_max);
      return HPE_USER;
    }
    if (!valid_header_text(value)) {
      self->error_ = Status::invalid("bad_metadata: header values must be printable ASCII");
      return HPE_USER;
    }
    r.stored_headers.emplace_back(std::move(name), value);
  } else if (f.size() > 12 && strncasecmp(f.c_str(), "x-ringstore-", 12) == 0) {
    // Bounded by header_bytes_max like every header.
    std::string name = f.substr(12);
    for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    r.ringstore_headers.emplace_back(std::move(name), value);
  } else if (header_is(f, "accept")) {
    if (strcasestr(value.c_str(), "application/json") != nullptr) r.accepts_json = true;
  } else if (header_is(f, "expect")) {
    if (strcasecmp(value.c_str(), "100-continue") == 0) r.expect_continue = true;
  }
  self->header_.clear();
  return HPE_OK;
}

int Connection::on_headers_complete(llhttp_t* p) {
  Connection* self = self_of(p);
  HttpRequest& r = self->req_;
  r.method = static_cast<llhttp_method_t>(p->method);
  r.chunked = (p->flags & F_CHUNKED) != 0;
  if (p->flags & F_CONTENT_LENGTH) r.content_length = p->content_length;
  r.has_body = r.chunked || r.content_length > 0;
  self->keep_alive_ = self->keep_alive_ && llhttp_should_keep_alive(p);
  self->phase_ = Phase::body;
  self->set_deadline(self->server_->limits().body_timeout_ms);
  Status s = self->server_->on_headers(*self);
  if (!s.is_ok()) {
    self->error_ = std::move(s);
    return -1;
  }
  return HPE_OK;
}

int Connection::on_body(llhttp_t* p, const char* at, std::size_t n) {
  Connection* self = self_of(p);
  self->set_deadline(self->server_->limits().body_timeout_ms);
  Status s = self->server_->on_body(*self, at, n);
  if (!s.is_ok()) {
    self->error_ = std::move(s);
    return HPE_USER;
  }
  return HPE_OK;
}

int Connection::on_message_complete(llhttp_t* p) {
  Connection* self = self_of(p);
  self->keep_alive_ = self->keep_alive_ && llhttp_should_keep_alive(p);
  return HPE_PAUSED;
}

// ---- deadlines ----

void Connection::on_deadline() {
  switch (phase_) {
    case Phase::idle:
      close();
      return;
    case Phase::headers:
    case Phase::body:
      server_->counters().timeouts++;
      fail(Status(Code::timeout, "request_timeout: the request did not arrive in time"));
      // The client is not sending: give the 408 little time to leave, then cut.
      set_deadline(1000);
      phase_ = Phase::sending;
      return;
    case Phase::handling:
      return;  // internal work has its own limits
    case Phase::sending:
      server_->counters().timeouts++;
      close();
      return;
  }
}

// ---- writing ----

std::string Connection::status_head(int status, std::size_t content_length, bool has_length,
                                    std::string_view headers, std::size_t body_reserve) {
  std::string h;
  h.reserve(192 + headers.size() + body_reserve);
  h += "HTTP/1.1 ";
  h += std::to_string(status);
  h += ' ';
  h += reason_phrase(status);
  h += "\r\nServer: ringstore\r\n";
  h += server_->date_header();
  if (has_length) {
    h += "Content-Length: ";
    h += std::to_string(content_length);
    h += "\r\n";
  }
  if (!keep_alive_) h += "Connection: close\r\n";
  h += headers;
  h += "\r\n";
  return h;
}

void Connection::respond(int status, std::string_view headers, std::string body, bool head_only) {
  ASSERT(phase_ != Phase::sending || !keep_alive_);
  phase_ = Phase::sending;
  req_.status = status;
  set_deadline(server_->limits().send_timeout_ms);
  bool has_length = status != 204 && status != 304;
  std::string out = status_head(status, body.size(), has_length, headers,
                                head_only ? 0 : body.size());
  if (!head_only) out += body;
  send(std::move(out), Part::response_end);
}

void Connection::respond_head(int status, std::string_view headers, std::uint64_t content_length) {
  phase_ = Phase::sending;
  req_.status = status;
  set_deadline(server_->limits().send_timeout_ms);
  send(status_head(status, content_length, true, headers), Part::response_end);
}

void Connection::respond_error(const Status& s) {
  int status = http_status(s.code());
  std::string headers = "Content-Type: application/json\r\n";
  if (s.code() == Code::unavailable) headers += "Retry-After: 1\r\n";
  respond(status, std::move(headers), error_body(s), req_.method == HTTP_HEAD);
}

void Connection::send_continue() { send("HTTP/1.1 100 Continue\r\n\r\n", Part::interim); }

void Connection::send(std::string bytes, Part part) {
  if (closing_) return;
  server_->metrics().bytes_out += bytes.size();
  if (writes_in_flight_ == 0) {
    uv_buf_t b = uv_buf_init(bytes.data(), static_cast<unsigned>(bytes.size()));
    int n = uv_try_write(reinterpret_cast<uv_stream_t*>(tcp_), &b, 1);
    if (n == static_cast<int>(bytes.size())) {
      on_part_written(part);
      return;
    }
    if (n > 0) bytes.erase(0, static_cast<std::size_t>(n));
    else if (n != UV_EAGAIN && n != UV_ENOSYS) {
      close();
      return;
    }
  }
  auto* w = new WriteReq{uv_write_t{}, std::move(bytes), part};
  w->req.data = this;
  uv_buf_t b = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
  if (uv_write(&w->req, reinterpret_cast<uv_stream_t*>(tcp_), &b, 1, on_write) != 0) {
    delete w;
    close();
    return;
  }
  writes_in_flight_++;
}

void Connection::on_write(uv_write_t* req, int status) {
  auto* w = reinterpret_cast<WriteReq*>(req);
  auto* self = static_cast<Connection*>(req->data);
  Part part = w->part;
  delete w;
  self->writes_in_flight_--;
  if (status < 0 || self->closing_) {
    self->close();
    return;
  }
  self->set_deadline(self->server_->limits().send_timeout_ms);
  self->on_part_written(part);
}

void Connection::on_part_written(Part part) {
  switch (part) {
    case Part::interim: return;
    case Part::stream_chunk: stream_next(); return;
    case Part::response_end: response_done(); return;
  }
}

// After a response: close, or get ready to parse the next request on this connection.
bool Connection::next_request() {
  if (!keep_alive_) {
    close();
    return false;
  }
  reset_request();
  llhttp_resume(&parser_);
  return true;
}

void Connection::response_done() {
  server_->counters().requests++;
  const std::uint64_t now_ns = server_->clock().monotonic_ns();
  double seconds = req_.started_ns ? static_cast<double>(now_ns - req_.started_ns) / 1e9 : 0;
  server_->metrics().on_response(llhttp_method_name(req_.method), req_.status, seconds);
  if (dispatching_) {  // answered synchronously: feed() carries on
    done_during_dispatch_ = true;
    return;
  }
  answering_ = false;
  if (!next_request()) return;
  std::string p = std::move(pending_);
  pending_.clear();
  feed(p.data(), p.size());
}

// ---- streaming a blob ----

void Connection::stream(int status, std::string headers, blobstore::BlobHandle handle,
                        ByteRange range) {
  // Only large values stream, and they are never pending in memory (small ones are).
  ASSERT(handle.fd() >= 0);
  phase_ = Phase::sending;
  req_.status = status;
  set_deadline(server_->limits().send_timeout_ms);
  auto st = std::make_unique<StreamState>();
  st->range = range;
  st->verify_first = range.first != 0 || range.last + 1 != handle.meta.size;
  st->verifying = st->verify_first;
  st->offset = st->verifying ? 0 : range.first;
  st->end = st->verifying ? handle.meta.size : range.last + 1;
  st->handle = std::move(handle);
  st->buf.resize(limits::stream_chunk_bytes);
  st->owner = weak_from_this();
  stream_ = std::move(st);
  std::string head = status_head(status, range.length(), true, headers);
  if (stream_->verifying) {
    pending_head_ = std::move(head);  // sent once the whole blob checks out
    stream_next();
  } else {
    send(std::move(head), Part::stream_chunk);
  }
}

void Connection::stream_next() {
  StreamState& st = *stream_;
  if (st.offset == st.end) {
    bool whole_pass = st.verifying || !st.verify_first;
    if (whole_pass && !st.md5_checked && st.md5.finish() != st.handle.meta.md5) {
      server_->store().report_damaged(st.handle.meta);
      server_->counters().corrupt_served_cut++;
      log::error("checksum mismatch reading key of " + std::to_string(st.handle.meta.size) +
                 " bytes; response cut");
      if (st.verifying) {
        respond_error(Status::corruption("checksum_mismatch: the stored copy is damaged"));
      } else {
        close_reset();
      }
      return;
    }
    if (st.verifying) {  // checked: now send the requested part
      st.verifying = false;
      st.offset = st.range.first;
      st.end = st.range.last + 1;
      send(std::move(pending_head_), Part::stream_chunk);
      return;
    }
    drop_stream();
    response_done();
    return;
  }
  std::uint64_t want = st.end - st.offset;
  if (want > st.buf.size()) want = st.buf.size();
  uv_buf_t b = uv_buf_init(st.buf.data(), static_cast<unsigned>(want));
  st.fs.data = &st;
  int rc = uv_fs_read(server_->loop(), &st.fs, st.handle.fd(), &b, 1,
                      static_cast<std::int64_t>(st.offset), [](uv_fs_t* req) {
                        auto* s = static_cast<StreamState*>(req->data);
                        s->read_in_flight = false;
                        ssize_t result = req->result;
                        uv_fs_req_cleanup(req);
                        auto conn = s->owner.lock();
                        if (!conn || conn->stream_.get() != s) {
                          delete s;  // orphaned: the connection went away mid-read
                          return;
                        }
                        conn->stream_read_done(result);
                      });
  if (rc != 0) {
    close();
    return;
  }
  st.read_in_flight = true;
}

void Connection::stream_read_done(ssize_t n) {
  StreamState& st = *stream_;
  if (closing_) return;
  if (n <= 0) {
    log::error("read error while streaming a blob");
    close_reset();
    return;
  }
  std::size_t got = static_cast<std::size_t>(n);
  st.md5.update(st.buf.data(), got);
  st.offset += got;
  if (st.verifying) {
    stream_next();
    return;
  }
  if (st.offset == st.end && !st.verify_first) {
    // The last chunk leaves only once the whole body checked out: a damaged copy is cut
    // short (the client sees a truncated body, an error), never delivered whole.
    st.md5_checked = true;
    if (st.md5.finish() != st.handle.meta.md5) {
      server_->store().report_damaged(st.handle.meta);
      server_->counters().corrupt_served_cut++;
      log::error("checksum mismatch streaming a key of " + std::to_string(st.handle.meta.size) +
                 " bytes; response cut before its last chunk");
      close_reset();
      return;
    }
  }
  send(std::string(st.buf.data(), got), Part::stream_chunk);
}

}  // namespace node
