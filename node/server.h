// Server is one ringstore node's HTTP side: the listening socket, the client
// connections, the sweep timer that enforces their deadlines, and the BlobStore with the
// async handle its committer wakes the loop through. It also answers requests
// (handlers.cc): the public blob API and the /_/ system endpoints.
// It owns the node's time and randomness: every subsystem it builds reads the one Clock
// (config.clock, or a SystemClock on the loop) and draws from the one Rng.
// Thread: the loop thread only (start() and stop() included).
// Lifetime: the loop, and config.clock when given, must outlive the Server; close() must
// complete (its callback run) before the Server is destroyed.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "blobstore/blob_store.h"
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/rng.h"
#include "common/system_clock.h"
#include "gossip/udp_transport.h"
#include "node/anti_entropy.h"
#include "node/clock_watch.h"
#include "node/cluster.h"
#include "node/connection.h"
#include "node/coordinator.h"
#include "node/hints.h"
#include "node/hlc.h"
#include "node/limits.h"
#include "node/listing.h"
#include "node/metrics.h"
#include "node/peer_client.h"
#include "node/transfers.h"
#include "node/repair.h"

namespace node {

struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: an ephemeral port, see port()
  std::string data_dir;
  std::vector<std::string> disks;
  ServerLimits limits;
  std::uint64_t cache_bytes = 32ull << 20;
  blobstore::FaultHook fault;  // tests only
  // Cluster.
  QuorumConfig quorum;
  std::string secret;           // the cluster secret: empty only with insecure
  bool insecure = false;
  std::vector<std::string> seeds;  // "ip:port"
  std::string zone;
  std::uint32_t vnodes = ring::limits::vnodes_default;
  std::uint32_t gossip_interval_ms = 1000;
  double phi_convict = 8.0;
  std::uint32_t hint_interval_ms = 1000;
  AntiEntropyConfig anti_entropy;
  std::uint32_t transfer_keys_per_s = 0;  // membership transfers; 0: no limit
  HintConfig hints;            // window, caps, delivery rate
  RepairConfig repair;         // refetch of lost copies
  blobstore::ScrubConfig scrub;  // background MD5 scrub (on by default)
  blobstore::SyncPolicy sync;    // when writes reach the disk (always, or periodic)
  std::uint64_t version_drift_ms = limits::version_drift_ms_default;  // see Hlc
  std::uint32_t id_conflict_window_ms = limits::twin_start_window_ms;  // see check_twin()
  // Where the node reads the time: tests (and a simulation) pass a ManualClock; nullptr
  // is a SystemClock on the loop. Not owned.
  const common::Clock* clock = nullptr;
  // The seed of the node's Rng; without one, the wall clock at start and the node id.
  std::optional<std::uint64_t> rng_seed;
};

struct ServerCounters {
  std::uint64_t requests = 0;
  std::uint64_t connections_refused = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t corrupt_served_cut = 0;
  std::uint64_t puts_already_held = 0;  // internal PUTs of a version held here already
  std::uint64_t versions_refused = 0;   // versions too far ahead of this node's clock
};

class Server {
 public:
  Server(uv_loop_t* loop, ServerConfig config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Opens the store and starts listening.
  Status start();
  int port() const { return port_; }
  std::string address() const { return config_.host + ":" + std::to_string(port_); }
  // Graceful stop: no new connections, requests in flight finish (up to
  // drain_timeout_ms), the store commits and closes, every handle is closed; then `done`.
  void stop(std::function<void()> done);

  // For connections and handlers.
  uv_loop_t* loop() const { return loop_; }
  bool stopping() const { return stopping_; }
  const ServerLimits& limits() const { return config_.limits; }
  blobstore::BlobStore& store() { return *store_; }
  // The node's clock, and its monotonic ms (deadlines and rates are set in these).
  const common::Clock& clock() const { return *clock_; }
  std::uint64_t now_ms() const { return clock_->monotonic_ms(); }
  // The node's one randomness source. REQUIRES: started (it is seeded with the node id).
  common::Rng& rng() {
    ASSERT(rng_.has_value());
    return *rng_;
  }
  const std::string& date_header();  // "Date: ...\r\n", cached for the current second
  char* read_buffer() { return read_buffer_.data(); }
  std::size_t read_buffer_size() const { return read_buffer_.size(); }
  void forget(Connection* c);
  ServerCounters& counters() { return counters_; }
  Metrics& metrics() { return metrics_; }
  std::string metrics_text();

  // Handlers (handlers.cc).
  Status on_headers(Connection& c);
  Status on_body(Connection& c, const char* data, std::size_t n);
  void on_request(Connection& c);
  // Serving this node's copy of the request's key, or a copy fetched from a replica.
  // Returns a corruption Status, having sent nothing, when this node's copy is damaged
  // (the caller serves another replica's); otherwise it answers, and returns ok.
  Status serve_local(Connection& c, bool head_only);
  void serve_handle(Connection& c, blobstore::BlobHandle h, bool head_only);
  void serve_meta_head(Connection& c, const blobstore::BlobMeta& m);
  // A whole small value held in memory, already checked against m.md5.
  void serve_body(Connection& c, const blobstore::BlobMeta& m, const std::string& body);
  // 304 for a GET or HEAD whose If-None-Match or If-Modified-Since matched `m`.
  void respond_not_modified(Connection& c, const blobstore::BlobMeta& m);

  Cluster& cluster() { return *cluster_; }
  PeerClient& peers() { return *peers_; }
  Hlc& hlc() { return hlc_; }
  // A version that reached this node from elsewhere, to be stored here: ok (and the
  // clock moved past it) unless it is more than version_drift_ms ahead of this node's
  // clock, which is refused (400 version_too_far_ahead) and counted.
  Status accept_version(const blobstore::Version& v);
  ClockWatch::View clock_view() const { return clock_watch_.view(now_ms()); }
  Coordinator& coordinator() { return *coordinator_; }
  AntiEntropy& anti_entropy() { return *ae_; }
  Transfers& transfers() { return *transfers_; }
  Listing& listing() { return *listing_; }
  // Membership changes (node/transfers.h). REQUIRES: started.
  gossip::Membership& membership() { return gossip_->membership(); }
  std::uint64_t gossip_now_ms() const { return gossip_->now_ms(); }
  // Gossips what this node says about itself now (address, status, vnodes, zone, usage).
  void publish_app_state();
  const ServerConfig& config() const { return config_; }
  HintPolicy& hint_policy() { return *hint_policy_; }
  nlohmann::json status_json();
  nlohmann::json clock_json();
  nlohmann::json twins_json();
  // Called when the node must stop on its own (another process runs under its id); the
  // binary sends itself SIGTERM, so the stop takes the path of any other. exit_code()
  // is then 1.
  void set_on_fatal(std::function<void()> f) { on_fatal_ = std::move(f); }
  int exit_code() const { return exit_code_; }
  // Hints, repair and scrub in /_/status and /_/metrics (healing_status.cc).
  nlohmann::json healing_policy_json();
  nlohmann::json scrub_json();
  void healing_metrics(std::string& out);
  // The value of X-Ringstore-Auth that /_/internal requires: HMAC-SHA256 of a fixed
  // label under the cluster secret, in hex.
  static std::string auth_token_for(const std::string& secret);

 private:
  static void on_connection(uv_stream_t* s, int status);
  static void on_sweep(uv_timer_t* t);
  static void on_async(uv_async_t* a);
  void sweep();
  void maybe_finish_stop();

  Status begin_upload(Connection& c, const std::string& key, bool internal);
  Status on_internal_headers(Connection& c);
  void on_internal_request(Connection& c);
  void internal_put(Connection& c);
  void serve_blob(Connection& c, const blobstore::BlobMeta& m, const std::string& headers,
                  const std::string* body, blobstore::BlobHandle* handle, bool head_only);
  bool serve_multipart(Connection& c, const blobstore::BlobMeta& m, const std::string& body,
                       const std::vector<ByteRange>& ranges);
  void handle_list(Connection& c, bool unlinked);
  void handle_system(Connection& c);
  static void on_hint_timer(uv_timer_t* t);
  void deliver_hints();
  void hint_sweep_done(bool delivered);
  Status start_gossip();
  static void on_membership_timer(uv_timer_t* t);
  void refresh_membership();
  void save_peers();
  void on_peer_date(const std::string& addr, std::int64_t date_s);
  void check_twin();
  gossip::AppState app_state();

  uv_loop_t* loop_;
  ServerConfig config_;
  std::unique_ptr<common::SystemClock> system_clock_;  // only when config_.clock is null
  const common::Clock* clock_;                         // config_.clock or system_clock_
  std::optional<common::Rng> rng_;                     // seeded in start()
  std::unique_ptr<blobstore::BlobStore> store_;
  std::unique_ptr<Cluster> cluster_;
  std::unique_ptr<PeerClient> peers_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<AntiEntropy> ae_;
  std::unique_ptr<Transfers> transfers_;
  std::unique_ptr<Listing> listing_;
  std::unique_ptr<HintPolicy> hint_policy_;
  std::unique_ptr<Repairer> repairer_;
  std::string auth_token_;
  uv_timer_t* hint_timer_ = nullptr;
  uv_timer_t* membership_timer_ = nullptr;
  std::unique_ptr<gossip::UdpTransport> gossip_;
  bool gossip_stopping_ = false, gossip_stopped_ = false;
  std::uint64_t generation_ = 0;
  std::uint64_t saved_ring_version_ = 0;
  std::uint32_t app_state_ticks_ = 0;
  std::size_t hints_in_flight_ = 0;
  std::size_t hint_sweep_delivered_ = 0;
  bool peers_closing_ = false, peers_closed_ = false;
  // Per-member fields from gossip for /_/status (state, phi, generation, ...).
  std::vector<std::pair<std::string, nlohmann::json>> member_extra_;
  std::uint64_t hints_delivered_ = 0;
  Hlc hlc_;
  ClockWatch clock_watch_;
  std::uint64_t started_ms_ = 0;
  std::function<void()> on_fatal_;
  int exit_code_ = 0;
  // The last time another process claimed this node's id, and its address.
  std::string twin_addr_;
  std::uint64_t twin_claims_ = 0, twin_at_unix_ms_ = 0;
  std::uint32_t twin_defends_ = 0;
  std::uint64_t clock_checked_ms_ = 0, clock_warned_ms_ = 0, refused_logged_ms_ = 0;
  uv_tcp_t* listener_ = nullptr;
  uv_timer_t* sweep_timer_ = nullptr;
  uv_async_t* async_ = nullptr;
  int port_ = 0;
  std::unordered_map<Connection*, std::shared_ptr<Connection>> conns_;
  std::vector<char> read_buffer_;
  std::string date_;
  std::int64_t date_second_ = -1;
  bool stopping_ = false;
  std::uint64_t stop_deadline_ms_ = 0;
  std::function<void()> stop_done_;
  ServerCounters counters_;
  Metrics metrics_;
};

// Closes a libuv handle allocated with new T; frees it in the close callback.
template <typename T>
void close_and_free(T*& handle) {
  if (handle == nullptr) return;
  auto* h = reinterpret_cast<uv_handle_t*>(handle);
  h->data = nullptr;
  uv_close(h, [](uv_handle_t* closed) { delete reinterpret_cast<T*>(closed); });
  handle = nullptr;
}

}  // namespace node
