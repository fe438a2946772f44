// UdpTransport on 127.0.0.1: real sockets and timers on one loop.
#include "gossip/udp_transport.h"

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

#include "common/system_clock.h"

namespace gossip {
namespace {

NodeId make_id(std::uint8_t b) {
  NodeId id{};
  id.fill(b);
  return id;
}

Config config_for(std::uint8_t id, std::vector<std::string> seeds) {
  return Config{.self = make_id(id),
                .self_addr = "127.0.0.1:0",
                .generation = 1,
                .seeds = std::move(seeds),
                .secret = "test secret",
                .interval_ms = 50};
}

// Runs the loop until `done()` or the deadline; every test's loop gets one.
bool run_until(uv_loop_t* loop, std::uint64_t deadline_ms, const std::function<bool()>& done) {
  struct Poll {
    const std::function<bool()>* done;
    std::uint64_t deadline;
    bool met = false;
  } poll{&done, uv_now(loop) + deadline_ms};
  uv_timer_t timer;
  REQUIRE(uv_timer_init(loop, &timer) == 0);
  timer.data = &poll;
  uv_timer_start(
      &timer,
      [](uv_timer_t* t) {
        auto* p = static_cast<Poll*>(t->data);
        p->met = (*p->done)();
        if (p->met || uv_now(t->loop) >= p->deadline) uv_timer_stop(t);
      },
      0, 10);
  while (uv_is_active(reinterpret_cast<uv_handle_t*>(&timer))) uv_run(loop, UV_RUN_ONCE);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
  uv_run(loop, UV_RUN_NOWAIT);
  return poll.met;
}

}  // namespace

TEST_CASE("socket addresses parse and print", "[gossip][udp]") {
  sockaddr_storage ss;
  REQUIRE(parse_socket_addr("127.0.0.1:3001", &ss));
  CHECK(format_socket_addr(reinterpret_cast<sockaddr*>(&ss)) == "127.0.0.1:3001");
  REQUIRE(parse_socket_addr("[::1]:7000", &ss));
  CHECK(format_socket_addr(reinterpret_cast<sockaddr*>(&ss)) == "[::1]:7000");
  for (const char* bad : {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",
                          "127.0.0.1:80x", "localhost:80", "::1:80", "[::1]", "1.2.3:4"}) {
    INFO(bad);
    CHECK_FALSE(parse_socket_addr(bad, &ss));
  }
}

TEST_CASE("three transports on one loop converge, then close cleanly", "[gossip][udp]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  common::SystemClock clock(&loop);
  std::vector<std::unique_ptr<Rng>> rngs;
  std::vector<std::unique_ptr<UdpTransport>> nodes;
  std::vector<int> ring_changes(3, 0);
  for (std::uint8_t i = 0; i < 3; i++) {
    rngs.push_back(std::make_unique<Rng>(100 + i));
    nodes.push_back(std::make_unique<UdpTransport>(&loop, clock, *rngs.back()));
    std::vector<std::string> seeds;
    if (i > 0) seeds.push_back(nodes[0]->addr());
    AppState app{.http_addr = "127.0.0.1:" + std::to_string(3000 + i), .vnodes = 8};
    REQUIRE(nodes[i]
                ->start(config_for(static_cast<std::uint8_t>(i + 1), seeds), app,
                        [&ring_changes, i](std::uint64_t) { ring_changes[i]++; })
                .is_ok());
    CHECK(nodes[i]->port() > 0);
    CHECK(nodes[i]->addr() == "127.0.0.1:" + std::to_string(nodes[i]->port()));
    CHECK(nodes[i]->membership().config().self_addr == nodes[i]->addr());
  }

  auto converged = [&] {
    for (auto& n : nodes) {
      auto members = n->membership().members(n->now_ms());
      if (members.size() != 3) return false;
      for (const MemberView& m : members) {
        if (m.generation != 1 || !m.alive) return false;
      }
    }
    return true;
  };
  REQUIRE(run_until(&loop, 10'000, converged));
  for (int i = 0; i < 3; i++) CHECK(ring_changes[i] >= 1);  // joins seen by each
  auto view = nodes[2]->membership().member(make_id(1), nodes[2]->now_ms());
  REQUIRE(view.has_value());
  CHECK(view->gossip_addr == nodes[0]->addr());
  CHECK(view->app.http_addr == "127.0.0.1:3000");

  // Junk from a stranger is dropped and counted; the cluster does not notice.
  uv_udp_t stranger;
  REQUIRE(uv_udp_init(&loop, &stranger) == 0);
  sockaddr_storage to;
  REQUIRE(parse_socket_addr(nodes[1]->addr(), &to));
  std::string junk(200, 'x');  // long enough to be judged by its MAC
  uv_buf_t buf = uv_buf_init(junk.data(), static_cast<unsigned>(junk.size()));
  REQUIRE(uv_udp_try_send(&stranger, &buf, 1, reinterpret_cast<const sockaddr*>(&to)) > 0);
  REQUIRE(run_until(&loop, 5'000,
                    [&] { return nodes[1]->membership().counters().dropped_bad_mac == 1; }));
  uv_close(reinterpret_cast<uv_handle_t*>(&stranger), nullptr);

  // A state change travels over the wire and fires the ring callback.
  const int before = ring_changes[0];
  nodes[2]->membership().set_app_state(
      {.http_addr = "127.0.0.1:3002", .status = NodeStatus::leaving, .vnodes = 8});
  REQUIRE(run_until(&loop, 5'000, [&] {
    auto v = nodes[0]->membership().member(make_id(3), nodes[0]->now_ms());
    return v && v->app.status == NodeStatus::leaving;
  }));
  CHECK(ring_changes[0] > before);

  // A stopped node is convicted by the others; it stays a member.
  int stopped = 0;
  nodes[2]->stop([&] { stopped++; });
  REQUIRE(run_until(&loop, 10'000, [&] {
    return !nodes[0]->membership().is_alive(make_id(3), nodes[0]->now_ms()) &&
           !nodes[1]->membership().is_alive(make_id(3), nodes[1]->now_ms());
  }));
  CHECK(stopped == 1);
  CHECK(nodes[0]->membership().generation_of(make_id(3)) == 1);

  nodes[0]->stop([&] { stopped++; });
  nodes[1].reset();  // destroyed without stop(): closes its handles all the same
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(stopped == 2);
  nodes.clear();
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("a transport that cannot bind reports it and leaves nothing open", "[gossip][udp]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    common::SystemClock clock(&loop);
    Rng rng(1);
    UdpTransport t(&loop, clock, rng);
    Config c = config_for(1, {});
    c.self_addr = "192.0.2.1:7000";  // TEST-NET-1: not an address of this machine
    CHECK_FALSE(t.start(c, {}).is_ok());
    UdpTransport bad(&loop, clock, rng);
    c.self_addr = "not an address";
    CHECK_FALSE(bad.start(c, {}).is_ok());
    UdpTransport refused(&loop, clock, rng);
    c.self_addr = "127.0.0.1:0";
    AppState app{.zone = std::string(limits::zone_bytes_max + 1, 'z')};
    Status s = refused.start(c, app);
    CHECK_FALSE(s.is_ok());
    CHECK(s.message().find("zone") != std::string::npos);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("two transports cannot share a port", "[gossip][udp]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    common::SystemClock clock(&loop);
    Rng rng_a(1), rng_b(2);
    UdpTransport a(&loop, clock, rng_a), b(&loop, clock, rng_b);
    REQUIRE(a.start(config_for(1, {}), {}).is_ok());
    Config c = config_for(2, {});
    c.self_addr = a.addr();
    CHECK_FALSE(b.start(c, {}).is_ok());
    a.stop(nullptr);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
}

}  // namespace gossip
