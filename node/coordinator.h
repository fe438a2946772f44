// Coordinator runs one client request against the key's replicas: any node can
// coordinate any key. Writes get an HLC version here and go to the N replicas of the
// preference list (the local one through the BlobStore, remote ones through the
// /_/internal API); a replica that is down or fails is replaced by the next node on the
// ring, which keeps the value as a hint for the owner. 201 after W durable copies.
// Reads ask R replicas for their version (the local one first), serve the newest, and
// repair the asked replicas that were missing it or stale (read repair).
//
// The body of a PUT is spooled to a temp file on this node first (it becomes the local
// replica when this node is one); the remote copies are sent from that file, so a
// replica that fails can be replaced by another without asking the client again, and
// memory stays bounded by one chunk per replica.
// Thread: the loop thread only. Lifetime: owned by the Server.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "blobstore/blob_store.h"
#include "common/clock.h"
#include "common/latency_histogram.h"
#include "node/cluster.h"
#include "node/connection.h"
#include "node/peer_client.h"
#include "node/replica_scores.h"
#include "node/token_bucket.h"

namespace node {

class Server;

// A replica timeout with extra time for a large value: at least 16 MiB/s.
std::uint32_t transfer_timeout_ms(std::uint32_t base, std::uint64_t bytes);

// Reads a replica's answer to HEAD or GET /_/internal/blob (its X-Ringstore-* headers):
// the version it stores of `key`. False when the answer does not say one.
bool meta_from_response(const std::string& key, const PeerResponse& r, blobstore::BlobMeta* m);

// Whether the answer to a pushed copy (PUT /_/internal/blob, or POST /_/internal/push
// relaying one) says that the receiver held that version already and wrote nothing.
bool answered_already_held(const PeerResponse& r);

struct QuorumConfig {
  std::uint32_t n = 3, r = 2, w = 2;
  std::uint32_t replica_timeout_ms = 2'000;
  // Replicas a node's reads may repair per second. A replica that lost everything (a
  // wiped disk) would otherwise get a write for nearly every read while the node
  // refills, work the foreground pays for; a repair over the budget is left to
  // anti-entropy, which moves it at its own budget.
  std::uint32_t read_repairs_per_sec = 2'000;
};

struct CoordinatorCounters {
  std::uint64_t read_repairs = 0;
  std::uint64_t read_repairs_deferred = 0;  // over the budget: left to anti-entropy
  std::uint64_t read_repairs_skipped = 0;   // the version's own write may still reach it
  std::uint64_t hints_stored = 0;
  std::uint64_t replica_errors = 0;
  std::uint64_t writes_unavailable = 0;
  std::uint64_t speculative_reads = 0;  // reads that asked one more replica: one was late
  std::uint64_t writes_rewritten = 0;   // written again above a newer version a replica held
  std::uint64_t writes_superseded = 0;  // answered X-Ringstore-Superseded-By
};

// A write that lost to a newer version at a replica is written again above it at most
// this often: each rewrite costs a round trip, and only two writes racing each other's
// rewrites lose more than once (then the loser says so).
inline constexpr std::uint32_t write_rewrites_max = 2;

class Coordinator {
 public:
  // REQUIRES: `clock` (the server's) outlives the coordinator.
  Coordinator(Server& server, const common::Clock& clock, QuorumConfig config);

  // The body is in `writer` (a spool; tombstone set for a DELETE).
  void write(Connection& c, std::unique_ptr<blobstore::BlobWriter> writer, std::uint32_t w);
  void read(Connection& c, std::uint32_t r, bool head_only);
  // A write with a precondition (If-Match, If-None-Match, If-Unmodified-Since): the
  // current version is read from r replicas as a GET's is, the precondition checked
  // against the newest of them, and only then is the write made (412 and the body
  // dropped otherwise). Under last-writer-wins this is no compare-and-swap: two such
  // writes racing may both pass (docs/ARCHITECTURE.md).
  void write_checked(Connection& c, std::unique_ptr<blobstore::BlobWriter> writer, std::uint32_t w,
                     std::uint32_t r);
  void locate(Connection& c, const std::string& key);

  // Sends this node's copy of `key` to `addr` (as a hint for `hint_for` when given).
  // done(ok, applied) once the peer has it durably; applied is false when the peer held
  // that version or a newer one already (it wrote nothing).
  using PushDone = std::function<void(Status, bool applied)>;
  void push(const std::string& key, const std::string& addr, const ring::NodeId* hint_for, PushDone done);

  // n, r and w for a request: the defaults, a request's ?r= / ?w=, and never more than
  // the ring has members.
  std::uint32_t effective_n() const;
  Status pick(const Target& t, const char* name, std::uint32_t def, std::uint32_t* out) const;

  const QuorumConfig& config() const { return config_; }
  CoordinatorCounters& counters() { return counters_; }
  // Where a coordinated write's time goes here (see blobstore::CommitStages for the
  // local commit): receive (the request's first byte to its last), replica (an internal
  // write sent to another node until its answer), decide (the write's start here until
  // its answer to the client is decided: W acknowledgements or a failure).
  struct WriteStages {
    common::LatencyHistogram receive, replica, decide;
  };
  const WriteStages& write_stages() const { return stages_; }

  struct WriteOp;
  struct ReadOp;

 private:
  friend struct WriteOp;
  friend struct ReadOp;
  void send_write(const std::shared_ptr<WriteOp>& op, std::size_t target);
  void on_write_result(const std::shared_ptr<WriteOp>& op, std::size_t target, Status s,
                       std::optional<blobstore::Version> newer);
  bool rewrite(const std::shared_ptr<WriteOp>& op);
  void send_all(const std::shared_ptr<WriteOp>& op);
  void add_receipt(const WriteOp& op, std::string* headers, std::string* body) const;
  void replace_failed(const std::shared_ptr<WriteOp>& op, const ring::NodeId& owner);
  void add_pending_targets(const std::shared_ptr<WriteOp>& op);
  void remember_missed(const std::shared_ptr<WriteOp>& op);
  void finish_write_if_decided(const std::shared_ptr<WriteOp>& op);

  std::shared_ptr<ReadOp> start_read(Connection& c, std::uint32_t r, bool head_only);
  void ask(const std::shared_ptr<ReadOp>& op);
  void watch_late(const std::shared_ptr<ReadOp>& op);
  static void cancel_late(ReadOp& op);
  void on_answer(const std::shared_ptr<ReadOp>& op);
  // newest: the index of the answer with the newest version, answers.size() for none.
  void serve_newest(const std::shared_ptr<ReadOp>& op, Connection& conn, std::size_t newest);
  void serve_remote(const std::shared_ptr<ReadOp>& op, std::size_t holder);
  Status repair_local(const std::string& key, const blobstore::BlobMeta& want, const std::string& body,
                      std::unique_ptr<blobstore::BlobWriter> writer);
  void repair(const std::shared_ptr<ReadOp>& op);
  bool take_repair_token();
  bool write_may_be_in_flight(const blobstore::BlobMeta& newest) const;

  Server& server_;
  const common::Clock& clock_;
  QuorumConfig config_;
  CoordinatorCounters counters_;
  WriteStages stages_;
  ReplicaScores scores_;  // how fast replicas answered reads of late
  TokenBucket repair_budget_;  // read repairs allowed now
};

}  // namespace node
