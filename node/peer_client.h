// PeerClient sends HTTP requests to other nodes' /_/internal API over pooled keep-alive
// connections. Every outgoing socket is bound to this node's IP. A request body comes
// from memory or from a file (read in chunks, one in flight, so memory stays bounded);
// a response body is collected (up to a cap) or handed to a sink as it arrives.
// A request that failed on a reused pooled connection before any answer is retried
// once on a fresh connection (the peer may have closed it while it was idle).
// Deadlines are in `clock`'s monotonic ms (the sweep timer checks them).
// Owns: the connections. Thread: the loop thread only. Lifetime: close() must complete
// before destruction; the loop and the clock must outlive it.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/clock.h"
#include "common/status.h"

namespace node {

struct PeerResponse {
  int status = 0;
  std::unordered_map<std::string, std::string> headers;  // lower-case names
  std::string body;
  const std::string* header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? nullptr : &it->second;
  }
};

struct PeerRequest {
  ~PeerRequest();
  std::string method = "GET";
  std::string target;   // already percent-encoded
  std::string headers;  // extra lines, each ending in \r\n
  std::string body;     // used when body_fd < 0
  int body_fd = -1;     // owned: closed with the request
  std::uint64_t body_offset = 0;
  std::uint64_t body_length = 0;
  std::size_t response_body_max = 1 << 20;
  // When set, response body bytes go here instead of PeerResponse::body.
  std::function<Status(const char*, std::size_t)> body_sink;
  std::uint32_t timeout_ms = 2000;
  std::function<void(Status, PeerResponse)> done;  // exactly once
  bool retried = false;  // PeerClient's own
};

class PeerClient {
 public:
  PeerClient(uv_loop_t* loop, const common::Clock& clock, std::string bind_ip,
             std::string auth_header);
  ~PeerClient();
  PeerClient(const PeerClient&) = delete;
  PeerClient& operator=(const PeerClient&) = delete;

  void send(const std::string& addr, std::unique_ptr<PeerRequest> req);
  // Called with an answer's Date header (seconds since the epoch) and the peer's
  // address, before the request's own callback: how ClockWatch hears of peer clocks.
  // At most one answer per date_sample_interval_ms is parsed: a Date has one-second
  // resolution, and parsing one per replica write and read cost the write path.
  using DateSeen = std::function<void(const std::string& addr, std::int64_t date_s)>;
  void set_date_seen(DateSeen f) { date_seen_ = std::move(f); }
  // Fails requests in flight, closes every connection; then `done`.
  void close(std::function<void()> done);
  std::uint64_t errors() const { return errors_; }
  std::uint64_t timeouts() const { return timeouts_; }
  // Connections opened since start: a pool that keeps up with the load opens few.
  std::uint64_t connections_opened() const { return opened_; }
  std::size_t in_flight() const { return busy_.size(); }

  struct Conn;

 private:
  friend struct Conn;
  void send_on(const std::string& addr, std::unique_ptr<PeerRequest> req, bool fresh);
  void maybe_closed();
  void start(Conn* c);
  void finish(Conn* c, Status s);
  void release(Conn* c);
  void destroy(Conn* c);
  Conn* connect(const std::string& addr);
  static void on_sweep(uv_timer_t* t);

  uv_loop_t* loop_;
  const common::Clock& clock_;
  std::string bind_ip_;
  std::string auth_header_;
  uv_timer_t* sweep_ = nullptr;
  std::unordered_map<std::string, std::vector<Conn*>> idle_;
  std::unordered_set<Conn*> busy_;
  std::unordered_set<Conn*> all_;
  bool closing_ = false;
  std::function<void()> close_done_;
  std::uint64_t errors_ = 0, timeouts_ = 0, opened_ = 0;
  DateSeen date_seen_;
  std::uint64_t date_sampled_ms_ = 0;
};

// Percent-encodes a key for a request target (unreserved characters and '/' stay).
std::string encode_key(std::string_view key);

}  // namespace node
