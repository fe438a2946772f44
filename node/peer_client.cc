#include "node/peer_client.h"

#include "common/assert.h"
#include "node/clock_watch.h"

#include <strings.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "node/header_pair.h"
#include "node/limits.h"

namespace node {

namespace {
// Peer clocks are sampled from at most this many answers' Date headers per second (see
// PeerClient::set_date_seen): each peer still gets a sample every few seconds.
constexpr std::uint64_t date_sample_interval_ms = 100;
}  // namespace

namespace {
// Idle connections kept per peer; more are closed when returned. Above the requests a
// node has in flight to one peer at once (100 client connections writing through one
// node: ~100): at 64, every burst closed the connections beyond it and opened new ones
// later, TIME_WAIT sockets piled up (16,000), and connect()'s search for a free
// ephemeral port took 60% of the loop thread (inet_bind2_bucket_find): PUT at 100
// connections fell from 2,300 to 490/s over 30 s. A peer that closes an idle one (its
// --idle-timeout-ms) takes it out of the pool.
constexpr std::size_t idle_per_peer_max = 256;
constexpr std::uint32_t sweep_interval_ms = 50;
constexpr std::size_t body_chunk_bytes = 256 * 1024;
constexpr std::size_t read_buffer_bytes = 64 * 1024;
constexpr std::size_t small_body_inline_bytes = 64 * 1024;
}  // namespace

std::string encode_key(std::string_view key) {
  static const char digits[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(key.size() * 3);
  for (unsigned char c : key) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~' || c == '/') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(digits[c >> 4]);
      out.push_back(digits[c & 15]);
    }
  }
  return out;
}

PeerRequest::~PeerRequest() {
  if (body_fd >= 0) ::close(body_fd);
}

struct PeerClient::Conn {
  PeerClient* owner = nullptr;
  uv_tcp_t* tcp = nullptr;
  std::string addr;
  llhttp_t parser;
  std::unique_ptr<PeerRequest> req;
  PeerResponse resp;
  HeaderPair header;
  bool connected = false;
  bool reused = false;
  bool retried = false;
  bool got_bytes = false;
  bool complete = false;
  bool keep_alive = true;
  bool closing = false;
  std::uint64_t deadline_ms = 0;
  std::uint64_t body_sent = 0;
  int writes_queued = 0;  // write requests libuv has not completed
  Status error;
  uv_connect_t connect_req;
  std::vector<char> read_buf;

  static int on_header_field(llhttp_t* p, const char* at, std::size_t n) {
    auto* c = static_cast<Conn*>(p->data);
    c->header.add_field(at, n);
    return c->header.field.size() > limits::header_bytes_max ? -1 : 0;
  }
  static int on_header_value(llhttp_t* p, const char* at, std::size_t n) {
    auto* c = static_cast<Conn*>(p->data);
    c->header.add_value(at, n);
    return c->header.value.size() > limits::header_bytes_max ? -1 : 0;
  }
  static int on_header_value_complete(llhttp_t* p) {
    auto* c = static_cast<Conn*>(p->data);
    std::string name = c->header.field;
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    c->resp.headers[name] = c->header.value;
    c->header.clear();
    return 0;
  }
  static int on_headers_complete(llhttp_t* p) {
    auto* c = static_cast<Conn*>(p->data);
    c->resp.status = p->status_code;
    return c->req && c->req->method == "HEAD" ? 1 : 0;  // 1: a HEAD answer has no body
  }
  static int on_body(llhttp_t* p, const char* at, std::size_t n) {
    auto* c = static_cast<Conn*>(p->data);
    if (c->req->body_sink && c->resp.status / 100 == 2) {
      Status s = c->req->body_sink(at, n);
      if (!s.is_ok()) {
        c->error = std::move(s);
        return -1;
      }
      return 0;
    }
    if (c->resp.body.size() + n > c->req->response_body_max) {
      c->error = Status::io_error("peer_response_too_large");
      return -1;
    }
    c->resp.body.append(at, n);
    return 0;
  }
  static int on_message_complete(llhttp_t* p) {
    auto* c = static_cast<Conn*>(p->data);
    c->complete = true;
    c->keep_alive = llhttp_should_keep_alive(p);
    return HPE_PAUSED;
  }
  static const llhttp_settings_t* settings() { return response_parser_settings<Conn>(); }

  void reset_response() {
    llhttp_init(&parser, HTTP_RESPONSE, settings());
    parser.data = this;
    resp = PeerResponse();
    header.clear();
    got_bytes = false;
    complete = false;
    keep_alive = true;
    body_sent = 0;
    error = Status::ok();
  }

  struct Write {
    uv_write_t req;
    std::string bytes;
    Conn* conn;
  };

  // Sends the bytes. The last bytes of a request go straight to the socket when nothing
  // is queued before them and the socket takes them whole: no write request, and no
  // drain of libuv's write queue, which in libuv 1.44 costs an epoll_ctl per write (five
  // per thrasher cycle on a coordinator). Anything else, or what the socket did not
  // take, waits in a write request, whose completion sends the body's next chunk; errors
  // are reported from there, never before the caller's send() returns.
  void write(std::string bytes) {
    if (!body_left() && writes_queued == 0) {
      uv_buf_t b = uv_buf_init(bytes.data(), static_cast<unsigned>(bytes.size()));
      int n = uv_try_write(reinterpret_cast<uv_stream_t*>(tcp), &b, 1);
      if (n == static_cast<int>(bytes.size())) return;
      if (n > 0) bytes.erase(0, static_cast<std::size_t>(n));
    }
    auto* w = new Write{uv_write_t{}, std::move(bytes), this};
    uv_buf_t b = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
    int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(tcp), &b, 1, on_write);
    if (rc != 0) {
      delete w;
      owner->finish(this, Status::io_error(std::string("peer write: ") + uv_strerror(rc)));
      return;
    }
    writes_queued++;
  }

  static void on_write(uv_write_t* r, int status) {
    auto* w = reinterpret_cast<Write*>(r);
    Conn* c = w->conn;
    delete w;
    c->writes_queued--;
    if (c->closing || !c->req) return;
    if (status < 0) {
      c->owner->finish(c, Status::io_error(std::string("peer write: ") + uv_strerror(status)));
      return;
    }
    std::string chunk;
    if (c->next_body_chunk(&chunk)) c->write(std::move(chunk));
  }

  // Whether a file body has chunks not sent yet.
  bool body_left() const { return req && req->body_fd >= 0 && body_sent < req->body_length; }

  // File bodies go out one chunk at a time: the next is read when the last is written.
  // False when there is none (or reading it failed, which finishes the request).
  bool next_body_chunk(std::string* chunk) {
    if (!body_left()) return false;
    PeerRequest& r = *req;
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(body_chunk_bytes, r.body_length - body_sent));
    chunk->assign(n, '\0');
    std::size_t got = 0;
    while (got < n) {
      ssize_t k = pread(r.body_fd, chunk->data() + got, n - got,
                        static_cast<off_t>(r.body_offset + body_sent + got));
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) {
        owner->finish(this, Status::io_error("reading the body to send"));
        return false;
      }
      got += static_cast<std::size_t>(k);
    }
    body_sent += n;
    return true;
  }

  static void on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
    auto* c = static_cast<Conn*>(h->data);
    *buf = uv_buf_init(c->read_buf.data(), static_cast<unsigned>(c->read_buf.size()));
  }

  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    auto* c = static_cast<Conn*>(s->data);
    if (c == nullptr || c->closing) return;
    if (n == 0) return;
    if (n < 0) {
      if (!c->req) {  // idle: the peer closed it
        c->owner->destroy(c);
        return;
      }
      llhttp_errno_t e = llhttp_finish(&c->parser);
      if (e == HPE_OK && c->complete) return c->owner->finish(c, Status::ok());
      c->owner->finish(c, Status::io_error("peer closed the connection"));
      return;
    }
    if (!c->req) {  // bytes nobody asked for
      c->owner->destroy(c);
      return;
    }
    c->got_bytes = true;
    llhttp_errno_t e = llhttp_execute(&c->parser, buf->base, static_cast<std::size_t>(n));
    if (c->complete) return c->owner->finish(c, Status::ok());
    if (e != HPE_OK) {
      Status s = c->error.is_ok() ? Status::io_error(std::string("bad peer response: ") +
                                                     llhttp_errno_name(e))
                                  : c->error;
      c->owner->finish(c, std::move(s));
    }
  }

  static void on_connect(uv_connect_t* r, int status) {
    auto* c = static_cast<Conn*>(r->data);
    if (c->closing) return;
    if (status < 0) {
      c->owner->finish(c, Status::unavailable(std::string("peer connect: ") + uv_strerror(status)));
      return;
    }
    c->connected = true;
    uv_tcp_nodelay(c->tcp, 1);
    uv_read_start(reinterpret_cast<uv_stream_t*>(c->tcp), on_alloc, on_read);
    if (c->req) c->owner->start(c);
  }
};

PeerClient::PeerClient(uv_loop_t* loop, const common::Clock& clock, std::string bind_ip,
                       std::string auth_header)
    : loop_(loop), clock_(clock), bind_ip_(std::move(bind_ip)), auth_header_(std::move(auth_header)) {
  sweep_ = new uv_timer_t;
  ASSERT(uv_timer_init(loop_, sweep_) == 0);
  sweep_->data = this;
  uv_timer_start(sweep_, on_sweep, sweep_interval_ms, sweep_interval_ms);
}

PeerClient::~PeerClient() { ASSERT(all_.empty() && sweep_ == nullptr); }

PeerClient::Conn* PeerClient::connect(const std::string& addr) {
  auto* c = new Conn();
  opened_++;
  c->owner = this;
  c->addr = addr;
  c->read_buf.resize(read_buffer_bytes);
  c->tcp = new uv_tcp_t;
  ASSERT(uv_tcp_init(loop_, c->tcp) == 0);
  c->tcp->data = c;
  all_.insert(c);
  c->reset_response();
  std::size_t colon = addr.rfind(':');
  sockaddr_in to{}, from{};
  int port = colon == std::string::npos ? -1 : std::atoi(addr.c_str() + colon + 1);
  int rc = colon == std::string::npos ? UV_EINVAL
                                      : uv_ip4_addr(addr.substr(0, colon).c_str(), port, &to);
  if (rc == 0 && !bind_ip_.empty() && uv_ip4_addr(bind_ip_.c_str(), 0, &from) == 0) {
    rc = uv_tcp_bind(c->tcp, reinterpret_cast<sockaddr*>(&from), 0);
  }
  c->connect_req.data = c;
  if (rc == 0) rc = uv_tcp_connect(&c->connect_req, c->tcp, reinterpret_cast<sockaddr*>(&to), Conn::on_connect);
  if (rc != 0) c->error = Status::unavailable(std::string("peer connect: ") + uv_strerror(rc));
  return c;
}

void PeerClient::send(const std::string& addr, std::unique_ptr<PeerRequest> req) {
  send_on(addr, std::move(req), /*fresh=*/false);
}

void PeerClient::send_on(const std::string& addr, std::unique_ptr<PeerRequest> req, bool fresh) {
  ASSERT(req->done);
  if (closing_) {
    auto done = std::move(req->done);
    done(Status::unavailable("shutting down"), PeerResponse());
    return;
  }
  Conn* c = nullptr;
  auto& pool = idle_[addr];
  if (!fresh && !pool.empty()) {
    c = pool.back();
    pool.pop_back();
    c->reused = true;
  } else {
    c = connect(addr);
  }
  c->req = std::move(req);
  Status connect_error = c->error;
  c->reset_response();
  c->deadline_ms = clock_.monotonic_ms() + c->req->timeout_ms;
  busy_.insert(c);
  if (!connect_error.is_ok()) return finish(c, connect_error);
  if (c->connected) start(c);
}

void PeerClient::start(Conn* c) {
  PeerRequest& r = *c->req;
  std::uint64_t length = r.body_fd >= 0 ? r.body_length : r.body.size();
  std::string head = r.method + " " + r.target + " HTTP/1.1\r\nHost: " + c->addr + "\r\n" +
                     auth_header_ + r.headers;
  if (r.method != "GET" && r.method != "HEAD") {
    head += "Content-Length: " + std::to_string(length) + "\r\n";
  }
  head += "\r\n";
  if (r.body_fd < 0) {
    head += r.body;
  } else if (r.body_length <= small_body_inline_bytes) {
    // A small body goes out with the head in one write (one segment, one wakeup).
    std::size_t at = head.size();
    head.resize(at + r.body_length);
    std::size_t got = 0;
    while (got < r.body_length) {
      ssize_t k = pread(r.body_fd, head.data() + at + got, r.body_length - got,
                        static_cast<off_t>(r.body_offset + got));
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) return finish(c, Status::io_error("reading the body to send"));
      got += static_cast<std::size_t>(k);
    }
    c->body_sent = r.body_length;
  }
  c->write(std::move(head));
}

void PeerClient::finish(Conn* c, Status s) {
  if (!c->req) return;
  busy_.erase(c);
  std::unique_ptr<PeerRequest> req = std::move(c->req);
  PeerResponse resp = std::move(c->resp);
  std::string addr = c->addr;
  // A pooled connection that the peer closed while idle fails before any answer: the
  // request never reached the peer, so it is safe to send again, once.
  bool retry = !s.is_ok() && c->reused && !c->got_bytes && !req->retried &&
               s.code() != Code::timeout;
  if (s.is_ok() && c->keep_alive && c->complete) {
    release(c);
  } else {
    destroy(c);
  }
  if (retry && !closing_) {
    req->retried = true;
    send_on(addr, std::move(req), /*fresh=*/true);
    return;
  }
  if (!s.is_ok()) errors_++;
  const std::uint64_t now = clock_.monotonic_ms();
  if (s.is_ok() && date_seen_ && now >= date_sampled_ms_ + date_sample_interval_ms) {
    date_sampled_ms_ = now;
    if (const std::string* date = resp.header("date")) {
      std::int64_t t = parse_http_date(*date);
      if (t >= 0) date_seen_(addr, t);
    }
  }
  auto done = std::move(req->done);
  done(std::move(s), std::move(resp));
}

void PeerClient::release(Conn* c) {
  auto& pool = idle_[c->addr];
  if (closing_ || pool.size() >= idle_per_peer_max) return destroy(c);
  c->reused = false;
  pool.push_back(c);
}

void PeerClient::destroy(Conn* c) {
  if (c->closing) return;
  c->closing = true;
  busy_.erase(c);
  auto& pool = idle_[c->addr];
  pool.erase(std::remove(pool.begin(), pool.end(), c), pool.end());
  uv_close(reinterpret_cast<uv_handle_t*>(c->tcp), [](uv_handle_t* h) {
    auto* conn = static_cast<Conn*>(h->data);
    delete reinterpret_cast<uv_tcp_t*>(h);
    PeerClient* owner = conn->owner;
    owner->all_.erase(conn);
    delete conn;
    owner->maybe_closed();
  });
}

void PeerClient::maybe_closed() {
  if (!closing_ || !all_.empty() || sweep_ != nullptr || !close_done_) return;
  auto done = std::move(close_done_);
  close_done_ = nullptr;
  done();
}

void PeerClient::on_sweep(uv_timer_t* t) {
  auto* self = static_cast<PeerClient*>(t->data);
  if (self == nullptr) return;
  std::uint64_t now = self->clock_.monotonic_ms();
  std::vector<Conn*> late;
  for (Conn* c : self->busy_) {
    if (now >= c->deadline_ms) late.push_back(c);
  }
  for (Conn* c : late) {
    self->timeouts_++;
    self->finish(c, Status(Code::timeout, "replica_timeout"));
  }
}

void PeerClient::close(std::function<void()> done) {
  closing_ = true;
  close_done_ = std::move(done);
  std::vector<Conn*> busy(busy_.begin(), busy_.end());
  for (Conn* c : busy) finish(c, Status::unavailable("shutting down"));
  std::vector<Conn*> all(all_.begin(), all_.end());
  for (Conn* c : all) destroy(c);
  uv_timer_stop(sweep_);
  uv_close(reinterpret_cast<uv_handle_t*>(sweep_), [](uv_handle_t* h) {
    auto* self = static_cast<PeerClient*>(h->data);
    delete reinterpret_cast<uv_timer_t*>(h);
    self->sweep_ = nullptr;
    self->maybe_closed();
  });
}

}  // namespace node
