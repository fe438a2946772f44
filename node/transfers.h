// Transfers moves copies of keys when the membership changes shape: a joining node
// streams the ranges it takes over before it serves them, a leaving node streams its
// ranges to their new owners before it goes, and after every change each node hands
// the keys it no longer owns to their owners (and re-replicates keys that lost a copy
// when a dead node was removed), dropping its own copy only once every owner holds it.
//
// All three are one kind of pass over the ring, window by window in position order:
//   1. list the (key, version) pairs of the window from every live member
//      (GET /_/internal/range) and from the local index;
//   2. decide, per key, which member lacks the newest version it should have, and have
//      the holder of the newest send it (this node's own copy through
//      Coordinator::push, another holder's through POST /_/internal/push?to=);
//   3. once every send of the window is acknowledged, drop the copies handed off and
//      save the cursor in a meta row, so that a pass resumes there after a crash.
// Every listing answer carries the ring signature its sender sees; a window proceeds
// only when every live member sees the same membership as this node, which is how a
// joining (or leaving) node knows that every coordinator sends it the writes of its
// future ranges (Cluster::pending) before it copies what is already stored.
//
// Owns: the pass state, its retry timer. Thread: the loop thread only.
// Lifetime: owned by the Server; stop() before the Server closes its peer client.
#pragma once

#include <uv.h>

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "blobstore/version.h"
#include "common/clock.h"
#include "gossip/types.h"
#include "node/cluster.h"
#include "node/connection.h"

namespace node {

class Server;

namespace transfer_limits {
// Progress is reported per range: the ring cut into this many equal slices.
inline constexpr std::uint32_t ranges_total = 64;
// Entries one member lists per request. A window with more is cut where the shortest
// answer ends; 1,000 entries of the longest key (3 KiB percent-encoded) stay under
// listing_bytes_max.
inline constexpr std::size_t listing_entries_max = 1'000;
inline constexpr std::size_t listing_bytes_max = 4u << 20;
// Keys being sent at once. Each costs one or two internal requests; 32 keeps the
// committer's batches full without crowding out client requests.
inline constexpr std::size_t keys_in_flight_max = 32;
// A window that failed (a member unreachable, a send refused) is tried again after
// this; one whose members disagree on the ring waits for gossip to converge (a new
// state reaches everyone in a few gossip rounds, 1 s each by default), asking again
// this often: a listing request costs well under a millisecond.
inline constexpr std::uint32_t retry_delay_ms = 250;
// A window whose sends keep failing is left behind after this many attempts (counted
// in keys_failed); the handoff pass after the change and anti-entropy cover it.
inline constexpr std::uint32_t window_attempts_max = 20;
// The membership must stay unchanged this long before a handoff pass starts, so that
// one pass follows a burst of changes (a cluster starting up), not one per change.
inline constexpr std::uint32_t handoff_settle_ms = 2'000;
static_assert(listing_entries_max * 3 * 1024 < listing_bytes_max);
}  // namespace transfer_limits

enum class PassKind : std::uint8_t { join, leave, handoff };

// One page of a member's range listing (GET /_/internal/range), checked field by field
// as peer input: false when the body is not a listing (then the window is retried).
// Entries that are not a well-formed [key, version, 0|1] are skipped.
struct RangeListing {
  struct Entry {
    std::string key;
    blobstore::Version version;
    bool tombstone = false;
  };
  std::uint64_t ring = 0;  // the lister's ring signature
  std::vector<Entry> entries;
  bool truncated = false;  // the page stopped at `last` (a ring position)
  std::uint64_t last = 0;
};
bool parse_range_listing(const std::string& body, RangeListing* out);

struct PassState {
  bool active = false;
  bool done = false;
  std::uint64_t cursor = 0;  // the next ring position to process
  std::uint64_t keys_sent = 0;      // copies sent from a holder to a member that lacked them
  std::uint64_t keys_received = 0;  // of those, the ones this node received
  std::uint64_t keys_dropped = 0;   // copies dropped here once their owners held them
  std::uint64_t keys_failed = 0;    // sends given up (window_attempts_max)
  std::uint64_t listed = 0;         // entries listed by members
  std::uint64_t waits = 0;          // windows retried: a member unreachable or of another view
  std::uint64_t started_ms = 0, finished_ms = 0;  // wall clock
  std::uint64_t signature = 0;      // handoff: the ring it ran for
  std::uint64_t deferred = 0;       // handoff: stray copies kept (another node sent them, or an owner was unseen)
  std::uint32_t round = 0;          // handoff: 1 in the round that drops the deferred ones
  std::uint32_t ranges_done() const;
  nlohmann::json to_json() const;
  static PassState from_json(const nlohmann::json& j);
};

class Transfers {
 public:
  // `clock` is the Server's: wall ms for the status, monotonic ms for the rate window.
  Transfers(Server& server, const common::Clock& clock);
  ~Transfers();

  // The status this node starts with: the one it had (kept in the meta row
  // "member.status"); on first start `joining` when it has seeds other than itself
  // (it takes its share of a cluster that may hold data, as Cassandra's auto_bootstrap),
  // else `normal` (the first node of a cluster).
  gossip::NodeStatus initial_status(const std::vector<std::string>& seeds,
                                    const std::string& self_addr, bool first_start);
  gossip::NodeStatus status() const { return status_; }
  // True once nobody is joining or leaving, this node is normal and its handoff pass for
  // the ring as it now is has completed: until then, copies that look stray here may be
  // a joiner's future ranges or in the middle of a move, and are this class's to move.
  bool moves_done() const;
  // Called whenever the membership view was refreshed: starts, resumes or restarts passes.
  void on_membership();
  void stop();

  // /_/internal/range, /_/internal/leave, /_/internal/remove.
  static bool handles(const std::string& path);
  Status check_headers(Connection& c);
  void on_request(Connection& c);

  nlohmann::json status_json() const;
  // The membership as far as ownership goes: ids, states, vnodes and zones of the
  // members that are not gone, hashed. Equal on two nodes: they compute the same rings.
  std::uint64_t ring_signature() const;

 private:
  struct Source {
    ring::NodeId id{};
    std::string addr;
    bool self = false;
  };
  struct Holding {
    std::size_t source;
    blobstore::Version version;
    bool tombstone = false;
  };
  struct KeyWork {
    std::string key;
    // (holder source index, target address, target is self)
    struct Send {
      std::size_t holder;
      std::string to;
      bool to_self = false;
    };
    std::vector<Send> sends;
    bool drop = false;  // drop our copy (at drop_version) once every send is done
    blobstore::Version drop_version;
  };

  void set_status(gossip::NodeStatus s);
  void start_pass(PassKind kind);
  void load_pass(PassKind kind);
  void save_pass(PassKind kind);
  PassState& pass(PassKind kind);
  static const char* pass_name(PassKind kind);

  void run_window();
  void on_listing(std::uint64_t epoch, std::size_t source, Status s, const std::string& body);
  void plan_window();
  void plan_key(const std::string& key, const std::vector<Holding>& holdings,
                std::vector<KeyWork>* work);
  void pump();
  void run_key(std::size_t index);
  void send_one(std::size_t index, std::size_t send);
  void key_done(std::size_t index, bool ok);
  void window_done();
  void finish_pass();
  void retry_later();
  static void on_timer(uv_timer_t* t);
  static void on_pump_timer(uv_timer_t* t);

  void list_range(Connection& c);
  void start_leave(Connection& c);
  void remove_member(Connection& c);

  Server& server_;
  const common::Clock& clock_;
  gossip::NodeStatus status_ = gossip::NodeStatus::normal;
  PassState join_, leave_, handoff_;
  bool stopped_ = false;

  // The pass running now (at most one at a time: join or leave first, then handoff).
  bool running_ = false;
  PassKind kind_ = PassKind::handoff;
  std::uint64_t epoch_ = 0;  // bumped when a pass is abandoned: stale callbacks see it
  std::uint64_t window_lo_ = 0, window_hi_ = 0;
  std::uint32_t attempts_ = 0;
  std::vector<Source> sources_;
  std::size_t listings_pending_ = 0;
  bool listing_failed_ = false, disagreement_ = false;
  std::uint64_t cut_hi_ = 0;  // the window's end, lowered where a listing was cut
  std::map<std::string, std::vector<Holding>> listed_;
  std::vector<KeyWork> work_;
  std::size_t next_work_ = 0, work_in_flight_ = 0, work_left_ = 0;
  bool window_failed_ = false;
  std::uint64_t window_started_ms_ = 0;

  std::uint64_t last_signature_ = 0, signature_since_ms_ = 0;
  uv_timer_t* timer_ = nullptr;
  bool timer_armed_ = false;
};

}  // namespace node
