#include "gossip/udp_transport.h"

#include <charconv>
#include <cstring>

#include "common/assert.h"

namespace gossip {
namespace {

// The largest UDP payload: a datagram longer than datagram_bytes_max arrives whole and
// is counted as oversize by the Membership, rather than truncated into something else.
constexpr std::size_t recv_buffer_bytes = 64 * 1024;

// Both handles close together; `done` runs after the second close callback.
struct Closing {
  int pending = 0;
  std::function<void()> done;
};

// A handle with room for the Closing its close callback reports to, so that `data` can
// be cleared at close: a callback still in flight then never reaches the transport.
template <typename T>
struct HandleBox {
  T handle;  // first: a T* and its HandleBox* are interconvertible
  Closing* closing = nullptr;
};

template <typename T>
T* new_handle() {
  return &(new HandleBox<T>{})->handle;
}

// Frees a handle whose init failed or never ran its close: only before uv_*_init.
template <typename T>
void delete_unused_handle(T* handle) {
  delete reinterpret_cast<HandleBox<T>*>(handle);
}

template <typename T>
void close_and_free(T* handle, Closing* closing) {
  auto* box = reinterpret_cast<HandleBox<T>*>(handle);
  box->closing = closing;
  auto* h = reinterpret_cast<uv_handle_t*>(handle);
  h->data = nullptr;
  uv_close(h, [](uv_handle_t* closed) {
    auto* box = reinterpret_cast<HandleBox<T>*>(closed);
    Closing* c = box->closing;
    delete box;
    if (--c->pending > 0) return;
    std::function<void()> done = std::move(c->done);
    delete c;
    if (done) done();
  });
}

// A queued send owns its bytes until its callback, which frees both whatever the status.
struct SendReq {
  uv_udp_send_t req;
  std::vector<std::uint8_t> bytes;
};

Status uv_error(const char* what, int rc) {
  return Status::io_error(std::string(what) + ": " + uv_strerror(rc));
}

}  // namespace

bool parse_socket_addr(std::string_view text, sockaddr_storage* out) {
  std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == text.size()) return false;
  std::string_view host = text.substr(0, colon), port_text = text.substr(colon + 1);
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535) return false;
  std::memset(out, 0, sizeof *out);
  bool v6 = host.size() >= 2 && host.front() == '[' && host.back() == ']';
  std::string ip(v6 ? host.substr(1, host.size() - 2) : host);
  if (v6)
    return uv_ip6_addr(ip.c_str(), static_cast<int>(port), reinterpret_cast<sockaddr_in6*>(out)) ==
           0;
  return uv_ip4_addr(ip.c_str(), static_cast<int>(port), reinterpret_cast<sockaddr_in*>(out)) == 0;
}

std::string format_socket_addr(const sockaddr* addr) {
  char ip[INET6_ADDRSTRLEN] = {};
  if (addr->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    uv_ip4_name(in, ip, sizeof ip);
    return std::string(ip) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (addr->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    uv_ip6_name(in6, ip, sizeof ip);
    return "[" + std::string(ip) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return {};
}

UdpTransport::UdpTransport(uv_loop_t* loop, const common::Clock& clock, common::Rng& rng)
    : loop_(loop), clock_(clock), rng_(rng) {}

UdpTransport::~UdpTransport() {
  if (udp_ != nullptr) stop(nullptr);
}

Membership& UdpTransport::membership() {
  ASSERT(membership_ != nullptr);
  return *membership_;
}

const Membership& UdpTransport::membership() const {
  ASSERT(membership_ != nullptr);
  return *membership_;
}

Status UdpTransport::start(Config config, AppState self_state,
                           RingChangedCallback on_ring_changed) {
  ASSERT(udp_ == nullptr);
  ASSERT(membership_ == nullptr);
  if (Status s = check_config(config, self_state); !s.is_ok()) return s;
  sockaddr_storage bind_addr;
  if (!parse_socket_addr(config.self_addr, &bind_addr)) {
    return Status::invalid("gossip address is not ip:port: " + config.self_addr);
  }
  uv_udp_t* udp = new_handle<uv_udp_t>();
  if (int rc = uv_udp_init(loop_, udp); rc < 0) {
    delete_unused_handle(udp);  // libuv's rule: a failed init leaves nothing to close
    return uv_error("uv_udp_init", rc);
  }
  udp->data = this;
  udp_ = udp;  // from here on, the handle is freed only by its close callback
  auto fail = [&](const char* what, int rc) {
    auto* closing = new Closing{1, nullptr};
    close_and_free(udp_, closing);
    udp_ = nullptr;
    return uv_error(what, rc);
  };
  if (int rc = uv_udp_bind(udp_, reinterpret_cast<const sockaddr*>(&bind_addr), 0); rc < 0) {
    return fail("uv_udp_bind", rc);
  }
  sockaddr_storage bound;
  int len = sizeof bound;
  if (int rc = uv_udp_getsockname(udp_, reinterpret_cast<sockaddr*>(&bound), &len); rc < 0) {
    return fail("uv_udp_getsockname", rc);
  }
  addr_ = format_socket_addr(reinterpret_cast<const sockaddr*>(&bound));
  port_ = bound.ss_family == AF_INET6
              ? ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port)
              : ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  recv_buf_.resize(recv_buffer_bytes);
  if (int rc = uv_udp_recv_start(udp_, on_alloc, on_recv); rc < 0)
    return fail("uv_udp_recv_start", rc);

  uv_timer_t* timer = new_handle<uv_timer_t>();
  if (int rc = uv_timer_init(loop_, timer); rc < 0) {
    delete_unused_handle(timer);
    return fail("uv_timer_init", rc);
  }
  timer->data = this;
  timer_ = timer;

  config.self_addr = addr_;
  std::uint32_t interval_ms = config.interval_ms;
  membership_ = std::make_unique<Membership>(std::move(config), std::move(self_state));
  on_ring_changed_ = std::move(on_ring_changed);
  ring_version_ = membership_->ring_version();
  int rc = uv_timer_start(timer_, on_timer, 0, interval_ms);
  ASSERT(rc == 0);  // fails only for a closing handle or a null callback
  return Status::ok();
}

void UdpTransport::stop(std::function<void()> done) {
  ASSERT(udp_ != nullptr);
  ASSERT(timer_ != nullptr);
  uv_udp_recv_stop(udp_);
  uv_timer_stop(timer_);
  auto* closing = new Closing{2, std::move(done)};
  close_and_free(udp_, closing);
  close_and_free(timer_, closing);
  udp_ = nullptr;
  timer_ = nullptr;
}

void UdpTransport::on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
  auto* self = static_cast<UdpTransport*>(h->data);
  if (self == nullptr) {
    *buf = uv_buf_init(nullptr, 0);
    return;
  }
  *buf = uv_buf_init(reinterpret_cast<char*>(self->recv_buf_.data()),
                     static_cast<unsigned>(self->recv_buf_.size()));
}

void UdpTransport::on_recv(uv_udp_t* h, ssize_t nread, const uv_buf_t* buf, const sockaddr* addr,
                           unsigned flags) {
  (void)flags;
  auto* self = static_cast<UdpTransport*>(h->data);
  if (self == nullptr) return;  // closing
  if (nread < 0) {
    self->counters_.recv_errors++;
    return;
  }
  if (addr == nullptr) return;  // nothing more to read for now
  std::string from = format_socket_addr(addr);
  if (from.empty()) return;
  std::span<const std::uint8_t> bytes(reinterpret_cast<const std::uint8_t*>(buf->base),
                                      static_cast<std::size_t>(nread));
  self->membership_->on_datagram(self->now_ms(), from, bytes, self->outbox_);
  self->flush();
  self->check_ring_version();
}

void UdpTransport::on_timer(uv_timer_t* h) {
  auto* self = static_cast<UdpTransport*>(h->data);
  if (self == nullptr) return;
  self->membership_->on_tick(self->now_ms(), self->rng_, self->outbox_);
  self->flush();
  self->check_ring_version();
}

void UdpTransport::flush() {
  for (const Datagram& d : outbox_) send_one(d);
  outbox_.clear();
}

void UdpTransport::send_one(const Datagram& d) {
  sockaddr_storage to;
  if (!parse_socket_addr(d.addr, &to)) {
    counters_.send_errors++;
    return;
  }
  const auto* dest = reinterpret_cast<const sockaddr*>(&to);
  uv_buf_t buf = uv_buf_init(reinterpret_cast<char*>(const_cast<std::uint8_t*>(d.bytes.data())),
                             static_cast<unsigned>(d.bytes.size()));
  int rc = uv_udp_try_send(udp_, &buf, 1, dest);
  if (rc >= 0) return;
  if (rc != UV_EAGAIN && rc != UV_ENOSYS) {
    counters_.send_errors++;
    return;
  }
  // The socket's buffer is full (or try_send is unsupported): queue a copy.
  auto* req = new SendReq{{}, d.bytes};
  buf = uv_buf_init(reinterpret_cast<char*>(req->bytes.data()),
                    static_cast<unsigned>(req->bytes.size()));
  req->req.data = req;
  rc = uv_udp_send(&req->req, udp_, &buf, 1, dest,
                   [](uv_udp_send_t* r, int) { delete static_cast<SendReq*>(r->data); });
  if (rc < 0) {
    delete req;
    counters_.send_errors++;
  }
}

void UdpTransport::check_ring_version() {
  std::uint64_t v = membership_->ring_version();
  if (v == ring_version_) return;
  ring_version_ = v;
  if (on_ring_changed_) on_ring_changed_(v);
}

}  // namespace gossip
