// AntiEntropy keeps this node's replicas in step with the other replicas of the same
// keys without any client read, and purges tombstones once every replica holds them.
//
// It keeps one Leaf (XOR of 128-bit entry hashes plus a count, blobstore/summary.h) of
// (key, version, tombstone) per arc of the ring, updated on every applied write through
// the BlobStore's change listener and rebuilt from the index (scan_positions, in chunks)
// at start and whenever the ring changes. Hint rows are not part of it.
//
// A pass, every interval_ms, compares with each live peer in turn:
//   1. GET /_/internal/ae/summary?ring=FP&with=SELF: the peer's leaves of the arcs the
//      two share, combined into groups of group_arcs arcs (one leaf per group);
//   2. for each group that differs, ...&group=G: the leaves of its arcs;
//   3. for each run of differing arcs, GET /_/internal/ae/keys?from=P&to=Q: the peer's
//      (key, version, tombstone) list of that position range, paged, merged against the
//      local index; last writer wins: what the peer lacks or holds stale is pushed
//      (Coordinator::push), what this node lacks is pulled (the peer is asked to push
//      it here through /_/internal/push).
// Then, locally: keys in arcs this node does not own are pushed to every owner and
// dropped once all acknowledged; tombstones older than the grace period are purged once
// every other replica answers that it holds the same or a newer version (or nothing).
// Transfers go through one queue, spent at keys_per_sec with at most
// transfers_in_flight_max at once, so a large repair never crowds out clients.
//
// Thread: the loop thread only. Lifetime: owned by the Server; stop() before the
// Server's PeerClient closes (callbacks that arrive afterwards do nothing).
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "blobstore/committer.h"
#include "blobstore/summary.h"
#include "common/clock.h"
#include "node/cluster.h"
#include "node/connection.h"
#include "node/token_bucket.h"

namespace node {

class Server;

// One replica row as anti-entropy compares it: this node's, or a peer's from its key list.
struct AeEntry {
  std::string key;
  blobstore::Version version;
  bool tombstone = false;
  std::uint64_t position = 0;
  std::uint64_t expires_ms = 0;  // a value's expiry (0: none)
};

// Reads a peer's answer to GET /_/internal/ae/keys?from=FROM&to=TO without throwing:
// {"entries":[["hex key","version",0|1(,expires_ms)],...],"next":P|null}. Every key
// must be valid and lie in [from, *covered_to]; `next` (null: the range is complete)
// must lie in (from, to], and the answer then covers [from, next - 1]. False for
// anything else (the peer's failure).
bool parse_keys_page(std::string_view body, std::uint64_t from, std::uint64_t to,
                     std::vector<AeEntry>* out, std::uint64_t* covered_to);

// Reads a peer's summary page (GET /_/internal/ae/summary?...&start=START):
// {"groups":[["hash",count],...],"shared_arcs":N,"next":G|null}. N must equal
// `shared_arcs` (the arcs this node shares with the peer), and the groups from `start`
// on must be groups of those arcs. *next is the next page's first group, 0 when there
// is none (a `next` outside (start, group count) ends the pages). False otherwise.
bool parse_summary_answer(std::string_view body, std::size_t shared_arcs, std::size_t start,
                          std::vector<blobstore::Leaf>* groups, std::size_t* next);
// Reads a peer's leaves of one group's arcs (...&group=G): {"arcs":[[arc,"hash",count],
// ...]}, exactly the n arcs `arcs` in that order. False otherwise.
bool parse_arcs_answer(std::string_view body, const std::size_t* arcs, std::size_t n,
                       std::vector<blobstore::Leaf>* out);

namespace limits {
// The loop's tick: the transfer budget refills and the next step runs at this pace.
inline constexpr std::uint32_t ae_tick_ms = 20;
// Arcs per group, the first level of a comparison. With 3 nodes × 4,096 vnodes two
// replicas share 12,288 arcs: 192 groups, one ~10 KB answer when nothing differs.
inline constexpr std::size_t ae_group_arcs = 64;
// Groups in one summary answer (~50 bytes each: ~50 KB); more come in pages.
inline constexpr std::size_t ae_groups_page_max = 1024;
// Entries in one key-list answer. A key is at most 1 KiB (2 KiB in hex), so a page
// stays under ~1.1 MB, inside ae_response_bytes_max.
inline constexpr std::size_t ae_keys_page_max = 512;
inline constexpr std::size_t ae_response_bytes_max = 2 << 20;
static_assert(ae_keys_page_max * (2 * 1024 + 64) < ae_response_bytes_max);
static_assert(ae_groups_page_max * 64 < ae_response_bytes_max);
// Transfers (push, pull, hand-off, purge check) running at once.
inline constexpr std::size_t ae_transfers_in_flight_max = 16;
// Transfers queued before the comparison waits for the queue to drain.
inline constexpr std::size_t ae_queue_max = 1024;
static_assert(ae_keys_page_max <= ae_queue_max, "one page's transfers fit the queue");
// Groups of ae_group_arcs arcs that `arcs` shared arcs make (the last one may be short).
inline constexpr std::size_t ae_groups_of(std::size_t arcs) { return (arcs + ae_group_arcs - 1) / ae_group_arcs; }
// Index rows read per tick while the summaries are rebuilt (~2-4 ms of the loop).
inline constexpr std::size_t ae_rebuild_rows_per_tick = 4096;
// Defaults of the flags.
inline constexpr std::uint32_t ae_interval_ms_default = 10'000;
inline constexpr std::uint32_t ae_keys_per_sec_default = 2'000;
inline constexpr std::uint64_t tombstone_grace_s_default = 10ull * 24 * 3600;
}  // namespace limits

struct AntiEntropyConfig {
  std::uint32_t interval_ms = limits::ae_interval_ms_default;  // pause between passes; 0: off
  std::uint32_t keys_per_sec = limits::ae_keys_per_sec_default;  // transfer budget
  std::uint64_t tombstone_grace_s = limits::tombstone_grace_s_default;
};

struct AntiEntropyCounters {
  std::uint64_t passes = 0;
  std::uint64_t ranges_compared = 0;   // shared arcs covered by comparisons
  std::uint64_t ranges_differing = 0;  // of which differed
  std::uint64_t keys_pushed = 0;
  std::uint64_t keys_pulled = 0;
  std::uint64_t offers_already_held = 0;  // pushed or pulled, and the receiver had it: refunded
  std::uint64_t keys_handed_off = 0;
  std::uint64_t tombstones_purged = 0;
  std::uint64_t transfer_errors = 0;
  std::uint64_t peer_errors = 0;       // comparisons given up (peer down, ring differs)
  std::uint64_t summary_rebuilds = 0;
  std::uint64_t summary_fixes = 0;     // arcs recomputed after their leaf was found wrong
  std::uint64_t last_pass_ms = 0;      // duration of the last full pass
  std::uint64_t last_pass_end_unix_ms = 0;
};

class AntiEntropy {
 public:
  // `clock` is the Server's: wall ms for tombstone ages, monotonic ms for the passes.
  AntiEntropy(Server& server, const common::Clock& clock, AntiEntropyConfig config);
  ~AntiEntropy();
  AntiEntropy(const AntiEntropy&) = delete;
  AntiEntropy& operator=(const AntiEntropy&) = delete;

  // Starts the tick timer (the summaries are built on the first ticks).
  Status start();
  // Closes the timer; callbacks still in flight find stopped_ and do nothing.
  void stop();

  // The BlobStore's change listener.
  void on_change(const std::string& key, const blobstore::CommitResult& r);

  // /_/internal/ae/... (authenticated by the Server before these run).
  static bool handles(const std::string& path);
  Status on_headers(Connection& c);  // 400 for bad parameters, 405 for a method not GET
  void on_request(Connection& c);

  nlohmann::json status_json() const;
  void write_metrics(std::string& out) const;
  const AntiEntropyCounters& counters() const { return counters_; }

  struct Compare;
  struct Transfer;

 private:
  static void on_tick(uv_timer_t* t);
  void tick();
  // Summaries.
  bool ring_changed() const;
  void begin_rebuild();
  void rebuild_step();
  // The arcs whose preference list holds both members (indices into the ring).
  std::vector<std::size_t> shared_arcs(int a, int b) const;
  bool owns(std::size_t arc, int member) const;
  std::string fingerprint_of(const ring::Ring& r, std::size_t n) const;
  // Passes.
  void start_pass();
  void next_peer();
  void fetch_groups(const std::shared_ptr<Compare>& cmp);
  void next_group(const std::shared_ptr<Compare>& cmp);
  void fetch_arcs(const std::shared_ptr<Compare>& cmp, std::size_t group);
  void sync_runs(const std::shared_ptr<Compare>& cmp);
  void sync_page(const std::shared_ptr<Compare>& cmp);
  void on_keys_page(const std::shared_ptr<Compare>& cmp, std::string_view body);
  void finish_runs(const std::shared_ptr<Compare>& cmp);
  void local_step();
  void finish_pass();
  bool pass_alive(std::uint64_t gen) const { return !stopped_ && gen == pass_gen_; }
  // Transfers.
  void enqueue(Transfer t);
  void pump();
  void offer_was_held();
  void run_transfer(const std::shared_ptr<Transfer>& t);
  void transfer_done(bool ok);
  // This node holds `key` as a replica at `v` or newer.
  bool holds(const std::string& key, const blobstore::Version& v);
  // Endpoint bodies.
  void serve_summary(Connection& c);
  void serve_keys(Connection& c);

  Server& server_;
  const common::Clock& clock_;
  AntiEntropyConfig config_;
  AntiEntropyCounters counters_;
  uv_timer_t* timer_ = nullptr;
  bool stopped_ = false;

  // The summaries of `ring_` with `n_` replicas; next_ while a rebuild runs.
  std::shared_ptr<const ring::Ring> ring_;
  std::size_t n_ = 0;
  std::string fingerprint_;
  std::unique_ptr<blobstore::RangeSummaries> summaries_, next_;
  std::vector<std::uint16_t> arc_owners_, next_owners_;  // n_ member indices per arc
  std::size_t next_n_ = 0;
  std::shared_ptr<const ring::Ring> next_ring_;
  std::uint64_t rebuild_cursor_ = 0;
  bool rebuilding_ = false;
  std::uint64_t changes_ = 0;  // on_change calls: a fix is safe only when none came

  // The pass in progress.
  bool pass_running_ = false;
  std::uint64_t pass_gen_ = 0;
  std::uint64_t pass_started_ms_ = 0;
  std::uint64_t next_pass_ms_ = 0;
  std::vector<ring::NodeId> pass_peers_;
  std::size_t pass_peer_ = 0;
  std::size_t local_arc_ = 0;
  bool local_phase_ = false;
  bool purge_now_ = false;          // this pass looks for tombstones to purge
  bool purge_expired_ = false;      // ... and for expired values (every owned arc)
  std::uint64_t next_purge_ms_ = 0;
  std::function<void()> resume_;  // a step waiting for the queue to drain

  std::deque<Transfer> queue_;
  std::size_t in_flight_ = 0;
  bool pumping_ = false;
  // Transfers allowed now: keys_per_sec, a tenth of a second of burst (at least a full
  // window of transfers in flight).
  TokenBucket budget_;
};

}  // namespace node
