// Listing answers the public `GET /{prefix}?list[&start=S&limit=L&r=R]` for the whole
// cluster, and serves the per-node part of it, `GET /_/internal/list`.
//
// A node lists only its own copies, so a listing asks every member that owns or is
// taking over tokens (itself locally, the others over /_/internal/list) for up to
// `limit` rows of the prefix from `start`, in key order, tombstones included, hints
// excluded. The answers are merged by key, the newest version of each key winning, and
// tombstoned keys dropped. Each answer that was cut short proves its node's rows only up
// to its `next`, so the page ends at the smallest such `next`: a page costs at most
// limit + 1 rows per member asked, whatever the key count. Rows a page did not use are
// listed again by the next one, which starts at the page's `next`.
//
// Coverage: keys no answering node holds cannot show up, so completeness is decided per
// ring arc, not per key: every arc of the current ring must have at least R of its N
// owners among the members that answered (R as for reads, so with W + R > N every
// acknowledged write and delete is seen). An arc short of that makes the page a 503
// naming the arc, never a short page.
// Thread: the loop thread only. Lifetime: owned by the Server, which outlives it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "blobstore/index.h"
#include "blobstore/limits.h"
#include "common/clock.h"
#include "common/status.h"
#include "node/connection.h"
#include "node/limits.h"
#include "ring/ring.h"

namespace node {

class Server;

namespace list_limits {
// A listing row on the wire: ["key","version",0,expires_ms]. Keys are valid UTF-8 without NUL, and
// JSON escapes a control character as \u00XX: six bytes for one.
inline constexpr std::size_t row_bytes_max =
    6 * limits::key_bytes_max + blobstore::version_text_bytes + 16 + 21;
// The largest answer a member may send to one /_/internal/list request: a full page of
// the longest keys plus its `next`. A longer answer is that member's failure.
inline constexpr std::size_t answer_bytes_max =
    (blobstore::limits::list_limit_max + 1) * row_bytes_max + 1024;
static_assert(blobstore::limits::list_limit_max * row_bytes_max < answer_bytes_max);
}  // namespace list_limits

// One member's rows of a listing, as /_/internal/list returns them.
struct ListAnswer {
  std::vector<blobstore::KeyVersion> rows;  // strictly increasing keys
  std::string next;  // the member's next row after `rows`; "" when it listed all it holds
};

// The JSON body of an answer: {"rows":[["key","version",0|1|2(,expires_ms)],...],
// "next":"..."}: 0 a value (with its expiry when it has one), 1 a tombstone, 2 an
// unlinked tombstone (UNLINK).
std::string encode_list_answer(const ListAnswer& a);
// Reads a peer's answer to a request for (prefix, start, limit) without throwing: keys
// must increase, start with prefix, be >= start, number at most limit, and `next` must
// follow them. Anything else is invalid (the peer's failure, not ours).
Status decode_list_answer(std::string_view body, std::string_view prefix, std::string_view start,
                          std::size_t limit, ListAnswer* out);

// Merges the answers of the members that answered into one page: live keys in byte
// order, each once, newest version winning, at most `limit`; *next is where the next
// page starts, or "" when every answer was complete and the page took all.
// A page may hold fewer than `limit` keys with a non-empty *next when tombstones used up
// rows of a member's answer.
// `?list` shows live keys (values not expired at now_ms); `?unlinked` the keys whose
// newest state is an UNLINK's tombstone, ripe for a DELETE.
enum class ListMode { live, unlinked };
void merge_list_answers(const std::vector<const ListAnswer*>& answers, std::size_t limit,
                        std::vector<std::string>* keys, std::string* next,
                        ListMode mode = ListMode::live, std::uint64_t now_ms = 0);

// An arc of the ring, (from, to] in ring positions (wrapping past 2^64 - 1 when
// from >= to), whose owners answered too few times.
struct UncoveredArc {
  std::uint64_t from = 0, to = 0;
  std::vector<std::uint32_t> owners;  // indices into Ring::members()
  std::size_t answered = 0;
};
// The first arc of `ring` where fewer than r of its n owners are in `answered`
// (indexed like Ring::members()); nullopt when every arc has r. REQUIRES:
// answered.size() == ring.members().size().
std::optional<UncoveredArc> find_uncovered_arc(const ring::Ring& ring, std::size_t n,
                                               std::size_t r, const std::vector<bool>& answered);

struct ListCounters {
  std::uint64_t pages = 0;
  std::uint64_t peer_requests = 0;  // /_/internal/list requests sent
  std::uint64_t peer_failures = 0;  // of those: no answer, an error, or a bad answer
  std::uint64_t unavailable = 0;    // pages answered 503: an arc without R owners
};

class Listing {
 public:
  // `clock` is the Server's: a listing drops the values expired by its wall clock.
  Listing(Server& server, const common::Clock& clock) : server_(server), clock_(clock) {}

  static bool handles(const std::string& path);
  Status check_headers(Connection& c);
  // GET /_/internal/list?prefix=P&start=S&limit=L: this node's own rows.
  void serve_internal(Connection& c);
  // The public listing; r is the read quorum the caller picked (Coordinator::pick).
  void list(Connection& c, std::string prefix, std::string start, std::size_t limit,
            std::uint32_t r, ListMode mode = ListMode::live);

  const ListCounters& counters() const { return counters_; }

  struct ListOp;

 private:
  void finish(const std::shared_ptr<ListOp>& op);
  Server& server_;
  const common::Clock& clock_;
  ListCounters counters_;
};

}  // namespace node
