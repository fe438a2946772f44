// UdpTransport runs one Membership over UDP on a libuv loop: a uv_udp_t bound to the
// gossip address feeds received datagrams to it, a uv_timer_t calls its on_tick every
// interval_ms, and whatever it puts in its outbox is sent. It decides nothing itself.
//
// Owns: the Membership, a uv_udp_t and a uv_timer_t (each freed in its close callback,
// never earlier), a 64 KiB receive buffer, and each queued send's bytes (freed by the
// send's callback, whatever its status). The Membership's time is `clock`'s monotonic
// ms, and its ticks draw from `rng`: both are the node's, handed in.
// Thread: the loop's thread only; the node calls membership() from there too.
// Lifetime: `loop`, `clock` and `rng` must outlive the transport. stop() closes both
// handles; the loop must run again for their close callbacks, and `done` runs after the
// second one. Destroying a started transport without stop() closes the handles the same
// way, with no `done`.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/rng.h"
#include "common/status.h"
#include "gossip/membership.h"

namespace gossip {

class UdpTransport {
 public:
  // Runs after a datagram or a tick changed membership().ring_version(). It may call
  // stop(), but must not destroy the transport.
  using RingChangedCallback = std::function<void(std::uint64_t ring_version)>;

  UdpTransport(uv_loop_t* loop, const common::Clock& clock, common::Rng& rng);
  ~UdpTransport();
  UdpTransport(const UdpTransport&) = delete;
  UdpTransport& operator=(const UdpTransport&) = delete;

  // Binds config.self_addr exactly ("ip:port" or "[ipv6]:port"; port 0 picks a free one,
  // and config.self_addr becomes the bound address), makes the Membership and starts
  // ticking (the first tick runs on the next loop iteration). On error (check_config()
  // refused the settings, or the socket could not be bound) nothing is left open.
  // REQUIRES: not started.
  Status start(Config config, AppState self_state, RingChangedCallback on_ring_changed = nullptr);

  // Closes both handles; `done` (may be empty) runs once both are freed.
  // REQUIRES: started and not stopped.
  void stop(std::function<void()> done);

  // REQUIRES: started (stays valid after stop(), until destruction).
  Membership& membership();
  const Membership& membership() const;
  const std::string& addr() const { return addr_; }  // bound "ip:port"
  int port() const { return port_; }
  // The clock fed to the Membership: the monotonic ms of the node's clock. Pass it to
  // members().
  std::uint64_t now_ms() const { return clock_.monotonic_ms(); }

  struct Counters {
    std::uint64_t send_errors = 0;  // unparsable peer address or a failed send
    std::uint64_t recv_errors = 0;
  };
  const Counters& counters() const { return counters_; }

 private:
  static void on_alloc(uv_handle_t* h, std::size_t suggested, uv_buf_t* buf);
  static void on_recv(uv_udp_t* h, ssize_t nread, const uv_buf_t* buf, const sockaddr* addr,
                      unsigned flags);
  static void on_timer(uv_timer_t* h);
  void flush();
  void send_one(const Datagram& d);
  void check_ring_version();

  uv_loop_t* loop_;
  const common::Clock& clock_;
  common::Rng& rng_;
  uv_udp_t* udp_ = nullptr;      // owned until uv_close; freed in its close callback
  uv_timer_t* timer_ = nullptr;  // likewise
  std::unique_ptr<Membership> membership_;
  RingChangedCallback on_ring_changed_;
  std::uint64_t ring_version_ = 0;
  std::string addr_;
  int port_ = 0;
  Outbox outbox_;
  std::vector<std::uint8_t> recv_buf_;  // one read at a time: libuv hands it back in on_recv
  Counters counters_;
};

// "ip:port" and "[ipv6]:port" to a socket address, and back. Exposed for tests.
bool parse_socket_addr(std::string_view text, sockaddr_storage* out);
std::string format_socket_addr(const sockaddr* addr);

}  // namespace gossip
