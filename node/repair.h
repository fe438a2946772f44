// Repairer fetches this node's lost copies back from other replicas, by itself (no
// client read needed):
//  - copies that failed their checksum (on a client read or in the scrub): the
//    BlobStore reports each one;
//  - every index row on a disk that failed: it walks those rows a page at a time.
// For each key it asks the other live members of the preference list for their version
// (HEAD /_/internal/blob/KEY), fetches the newest (GET), checks it against its MD5, and
// commits it to a healthy disk; a tombstone is rewritten locally. A key that no replica
// holds any more is counted as unrecoverable (a row on a failed disk is then dropped,
// so the disk can drain and come back). Rate-limited (keys/s, a few in flight).
// Thread: the loop thread only. Lifetime: owned by the Server; close() before the
// store closes (callbacks that arrive later do nothing).
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "blobstore/blob_file.h"
#include "common/clock.h"
#include "node/healing_limits.h"

namespace node {

class Server;

struct RepairConfig {
  std::uint32_t keys_per_s = limits::repair_keys_per_s_default;  // 0: no refetch
};

struct RepairCounters {
  std::uint64_t queued = 0;         // keys taken into the queue
  std::uint64_t fetched = 0;        // copies fetched from a replica and committed
  std::uint64_t rewritten = 0;      // tombstones rewritten locally
  std::uint64_t already_good = 0;   // repaired meanwhile (read repair, a newer write)
  std::uint64_t unrecoverable = 0;  // no replica holds the key
  std::uint64_t errors = 0;         // fetch attempts that failed (retried)
  std::uint64_t dropped = 0;        // damaged reports beyond repair_queue_max
};

class Repairer {
 public:
  // `clock` is the Server's: wall ms for the disks' checks, monotonic ms for the budget.
  Repairer(Server& server, const common::Clock& clock, RepairConfig config);
  ~Repairer();
  Repairer(const Repairer&) = delete;
  Repairer& operator=(const Repairer&) = delete;

  Status start();
  void close();  // stops the timer; fetches still in flight finish without effect

  // A copy of m.key at m.version is damaged (already dropped from the index).
  void on_damaged(const blobstore::BlobMeta& m);
  nlohmann::json status_json() const;
  const RepairCounters& counters() const { return counters_; }
  std::size_t pending() const { return queue_.size() + retry_.size() + in_flight_; }

 private:
  struct Item {
    blobstore::BlobMeta lost;  // the row as this node had it
    bool from_disk = false;    // a row on a failed disk (still in the index)
    std::uint32_t attempts = 0;
    std::uint64_t retry_at_ms = 0;
  };
  struct Fetch;
  static void on_timer(uv_timer_t* t);
  void tick();
  void enumerate_failed_disks(std::uint64_t now_ms);
  void enqueue(Item item);
  void pump();
  void start_one(Item item);
  void finish_item(Item& item, Status s);
  void on_versions(const std::shared_ptr<Fetch>& f);
  void fetch_from(const std::shared_ptr<Fetch>& f, std::size_t holder);
  void write_tombstone(const std::shared_ptr<Fetch>& f, const blobstore::BlobMeta& m);
  void finish(const std::shared_ptr<Fetch>& f, Status s);

  Server& server_;
  const common::Clock& clock_;
  RepairConfig config_;
  uv_timer_t* timer_ = nullptr;
  bool closed_ = false;
  bool pumping_ = false;
  std::deque<Item> queue_;
  std::vector<Item> retry_;
  std::unordered_set<std::string> queued_keys_;  // queue_, retry_ and in flight
  std::size_t in_flight_ = 0;
  double tokens_ = 0;
  std::uint64_t tokens_at_ms_ = 0;
  // Per disk: where its walk stands, and when it may start over (rows left behind
  // whose fetch failed are found again by the next walk).
  struct DiskWalk {
    bool failed = false;
    std::string after;
    bool done = false;
    std::uint64_t restart_at_ms = 0;
    std::uint64_t rows_left = 0;   // counted at each walk's start
    std::uint64_t failed_at_ms = 0;
    std::uint64_t drained_at_ms = 0;  // when the last row moved off
  };
  std::vector<DiskWalk> walks_;
  RepairCounters counters_;
};

}  // namespace node
