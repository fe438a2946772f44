#include "support/test_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "common/assert.h"

namespace testing {

TempDir::TempDir() {
  char tmpl[] = "/tmp/ringstore-test.XXXXXX";
  ASSERT(mkdtemp(tmpl) != nullptr);
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

TestServer::TestServer(node::ServerConfig config) {
  if (config.data_dir.empty()) {
    config.data_dir = dir_.path() + "/data";
    if (config.disks.empty()) config.disks = {dir_.path() + "/d1", dir_.path() + "/d2"};
  }
  config.host = "127.0.0.1";
  config.port = 0;
  std::promise<int> ready;
  auto port = ready.get_future();
  thread_ = std::thread([this, config, &ready]() mutable {
    ASSERT(uv_loop_init(&loop_) == 0);
    node::Server server(&loop_, config);
    Status s = server.start();
    if (!s.is_ok()) {
      uv_run(&loop_, UV_RUN_DEFAULT);
      loop_close_rc_ = uv_loop_close(&loop_);
      ready.set_value(-1);
      return;
    }
    server_ = &server;
    uv_async_init(&loop_, &stop_async_, [](uv_async_t* a) {
      auto* self = static_cast<TestServer*>(a->data);
      uv_close(reinterpret_cast<uv_handle_t*>(&self->stop_async_), nullptr);
      self->server_->stop(nullptr);
    });
    stop_async_.data = this;
    ready.set_value(server.port());
    uv_run(&loop_, UV_RUN_DEFAULT);
    server_ = nullptr;
    loop_close_rc_ = uv_loop_close(&loop_);
  });
  port_ = port.get();
  ASSERT(port_ > 0);
}

void TestServer::stop() {
  if (stopped_) return;
  stopped_ = true;
  uv_async_send(&stop_async_);
  thread_.join();
}

TestServer::~TestServer() {
  stop();
  ASSERT(loop_close_rc_ == 0);
}

RawClient::RawClient(int port) {
  fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd_);
    fd_ = -1;
    return;
  }
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

RawClient::~RawClient() {
  if (fd_ >= 0) ::close(fd_);
}

bool RawClient::send(const std::string& bytes) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

bool RawClient::fill(int timeout_ms) {
  pollfd p{fd_, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) return false;
  char tmp[65536];
  ssize_t n = recv(fd_, tmp, sizeof tmp, 0);
  if (n <= 0) return false;
  buf_.append(tmp, static_cast<std::size_t>(n));
  return true;
}

HttpResponse RawClient::read_response(int timeout_ms, bool head) {
  HttpResponse r;
  std::size_t end;
  while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
    if (!fill(timeout_ms)) return r;
  }
  std::string headers = buf_.substr(0, end);
  buf_.erase(0, end + 4);
  std::size_t line_end = headers.find("\r\n");
  std::string status_line = headers.substr(0, line_end);
  if (status_line.size() < 12) return r;
  int status = std::atoi(status_line.c_str() + 9);
  std::size_t pos = line_end == std::string::npos ? headers.size() : line_end + 2;
  while (pos < headers.size()) {
    std::size_t e = headers.find("\r\n", pos);
    if (e == std::string::npos) e = headers.size();
    std::string line = headers.substr(pos, e - pos);
    std::size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::size_t v = colon + 1;
      while (v < line.size() && line[v] == ' ') v++;
      r.headers[name] = line.substr(v);
    }
    pos = e + 2;
  }
  if (status == 100) return read_response(timeout_ms, head);
  std::size_t length = 0;
  if (!head && r.headers.count("content-length")) {
    length = static_cast<std::size_t>(std::stoull(r.headers["content-length"]));
  }
  while (buf_.size() < length) {
    if (!fill(timeout_ms)) return r;
  }
  r.body = buf_.substr(0, length);
  buf_.erase(0, length);
  r.status = status;
  return r;
}

void RawClient::shutdown_send() { ::shutdown(fd_, SHUT_WR); }

bool RawClient::closed_by_peer(int timeout_ms) {
  for (;;) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return false;
    char tmp[4096];
    ssize_t n = recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return true;
  }
}

}  // namespace testing
