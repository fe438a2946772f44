// PeerClient against a peer on a real socket whose answers the test holds back, so the
// number of requests in flight (and so of connections needed) is exact.
#include "node/peer_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <map>
#include <thread>
#include <vector>

#include "common/system_clock.h"
#include "support/loopback_listener.h"

namespace {

// A keep-alive HTTP peer that answers only once `hold` requests are waiting, then
// answers them all: `hold` requests sent at once need `hold` connections open together.
class HoldingPeer {
 public:
  explicit HoldingPeer(std::size_t hold) : hold_(hold) {
    fd_ = testing::listen_on_loopback(512, &port_);
    REQUIRE(fd_ >= 0);
    thread_ = std::thread([this] { serve(); });
  }
  ~HoldingPeer() {
    stop_ = true;
    thread_.join();
    for (auto& [c, buf] : conns_) close(c);
    close(fd_);
  }
  std::string addr() const { return "127.0.0.1:" + std::to_string(port_); }
  std::size_t accepted() const { return accepted_; }

 private:
  void serve() {
    std::vector<int> waiting;
    while (!stop_) {
      std::vector<pollfd> ps{{fd_, POLLIN, 0}};
      for (auto& [c, buf] : conns_) ps.push_back({c, POLLIN, 0});
      if (poll(ps.data(), ps.size(), 20) <= 0) continue;
      if (ps[0].revents & POLLIN) {
        int c = accept(fd_, nullptr, nullptr);
        if (c >= 0) {
          conns_[c];
          accepted_++;
        }
      }
      for (std::size_t i = 1; i < ps.size(); i++) {
        if (!(ps[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        int c = ps[i].fd;
        char buf[4096];
        ssize_t n = recv(c, buf, sizeof buf, 0);
        if (n <= 0) {
          close(c);
          conns_.erase(c);
          continue;
        }
        std::string& got = conns_[c];
        got.append(buf, static_cast<std::size_t>(n));
        for (std::size_t end; (end = got.find("\r\n\r\n")) != std::string::npos;) {
          got.erase(0, end + 4);  // GETs only: no body
          waiting.push_back(c);
        }
      }
      if (waiting.size() >= hold_) {
        static const std::string answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        for (int c : waiting) (void)!send(c, answer.data(), answer.size(), MSG_NOSIGNAL);
        waiting.clear();
      }
    }
  }
  std::size_t hold_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<std::size_t> accepted_{0};
  std::map<int, std::string> conns_;  // the serving thread's
  std::thread thread_;
};

// Sends `count` GETs to `addr` at once and runs the loop until every one is answered.
void burst(uv_loop_t* loop, node::PeerClient& client, const std::string& addr, int count) {
  int ok = 0, done = 0;
  for (int i = 0; i < count; i++) {
    auto req = std::make_unique<node::PeerRequest>();
    req->target = "/_/internal/probe/" + std::to_string(i);
    req->timeout_ms = 10'000;
    req->done = [&](Status s, node::PeerResponse r) {
      done++;
      if (s.is_ok() && r.status == 200 && r.body == "ok") ok++;
    };
    client.send(addr, std::move(req));
  }
  while (done < count) uv_run(loop, UV_RUN_ONCE);
  REQUIRE(ok == count);
}

void close_client(uv_loop_t* loop, node::PeerClient& client) {
  bool closed = false;
  client.close([&] { closed = true; });
  while (!closed) uv_run(loop, UV_RUN_ONCE);
  uv_run(loop, UV_RUN_DEFAULT);
}

}  // namespace

TEST_CASE("a burst of replica requests wider than 64 keeps its connections for the next burst",
          "[peer_client]") {
  // 150 requests in flight to one peer (100 client connections writing through one node
  // put ~100 there): the connections they opened stay pooled, so the second burst opens
  // none. When the pool kept 64, each burst closed 86 and the next opened 86 again.
  constexpr int width = 150;
  HoldingPeer peer(width);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    common::SystemClock clock(&loop);
    node::PeerClient client(&loop, clock, "127.0.0.1", "");
    burst(&loop, client, peer.addr(), width);
    CHECK(client.connections_opened() == width);
    burst(&loop, client, peer.addr(), width);
    burst(&loop, client, peer.addr(), width);
    CHECK(client.connections_opened() == width);
    CHECK(peer.accepted() == static_cast<std::size_t>(width));
    close_client(&loop, client);
  }
  REQUIRE(uv_loop_close(&loop) == 0);
}
