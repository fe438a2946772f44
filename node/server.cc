#include "node/server.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <ctime>

#include "blobstore/version.h"
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
    : loop_(loop), config_(std::move(config)), read_buffer_(limits::read_buffer_bytes) {}

Server::~Server() {
  ASSERT(conns_.empty());
  ASSERT(listener_ == nullptr && sweep_timer_ == nullptr && async_ == nullptr);
}

Status Server::start() {
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
  uv_async_t* async = async_;
  opts.notify = [async] { uv_async_send(async); };
  auto store = blobstore::BlobStore::open(std::move(opts));
  if (!store.is_ok()) {
    close_and_free(async_);
    return store.take_status();
  }
  store_ = std::move(store.value());
  log::set_node(blobstore::hex(store_->node_id().data(), store_->node_id().size()));

  sweep_timer_ = new uv_timer_t;
  uv_timer_init(loop_, sweep_timer_);
  sweep_timer_->data = this;
  std::uint32_t every = sweep_interval(config_.limits);
  uv_timer_start(sweep_timer_, on_sweep, every, every);

  listener_ = new uv_tcp_t;
  uv_tcp_init(loop_, listener_);
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
  return Status::ok();
}

const std::string& Server::date_header() {
  std::int64_t now = static_cast<std::int64_t>(std::time(nullptr));
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
  uv_tcp_init(self->loop_, conn->tcp());
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
