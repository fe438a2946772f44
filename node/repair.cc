#include "node/repair.h"

#include <algorithm>

#include "common/assert.h"
#include "node/log.h"
#include "node/server.h"

namespace node {

struct Repairer::Fetch {
  Item item;
  std::vector<Replica> peers;
  std::vector<blobstore::BlobMeta> answers;
  std::vector<bool> present;
  std::size_t waiting = 0;
  std::size_t answered = 0;
};

Repairer::Repairer(Server& server, const common::Clock& clock, RepairConfig config)
    : server_(server), clock_(clock), config_(config) {}

Repairer::~Repairer() { ASSERT(timer_ == nullptr); }

Status Repairer::start() {
  walks_.resize(server_.store().disk_count());
  timer_ = new uv_timer_t;
  ASSERT(uv_timer_init(server_.loop(), timer_) == 0);
  timer_->data = this;
  uv_timer_start(timer_, on_timer, limits::repair_tick_ms, limits::repair_tick_ms);
  tokens_at_ms_ = clock_.monotonic_ms();
  return Status::ok();
}

void Repairer::close() {
  closed_ = true;
  close_and_free(timer_);
}

void Repairer::on_timer(uv_timer_t* t) {
  auto* self = static_cast<Repairer*>(t->data);
  if (self == nullptr || self->closed_) return;
  self->tick();
}

void Repairer::on_damaged(const blobstore::BlobMeta& m) {
  if (closed_ || m.tombstone) return;
  if (queue_.size() >= limits::repair_queue_max) {
    counters_.dropped++;
    return;
  }
  Item item;
  item.lost = m;
  enqueue(std::move(item));
}

void Repairer::enqueue(Item item) {
  if (!queued_keys_.insert(item.lost.key).second) return;  // already on its way
  counters_.queued++;
  queue_.push_back(std::move(item));
}

void Repairer::tick() {
  std::uint64_t now = clock_.monotonic_ms();
  server_.store().check_disks(clock_.wall_ms());
  enumerate_failed_disks(now);
  for (auto it = retry_.begin(); it != retry_.end();) {
    if (it->retry_at_ms > now) {
      ++it;
      continue;
    }
    queue_.push_back(std::move(*it));
    it = retry_.erase(it);
  }
  pump();
}

// Starts fetches while the rate and repair_in_flight_max allow: from the timer, and
// again as each fetch finishes, so a fast peer is not held to one batch per tick.
void Repairer::pump() {
  if (config_.keys_per_s == 0 || closed_ || pumping_) return;
  pumping_ = true;  // start_one may finish synchronously and call back here
  std::uint64_t now = clock_.monotonic_ms();
  // Token bucket: keys_per_s on average, bursts of at most one tick's worth (or one key).
  double burst = std::max(1.0, config_.keys_per_s * limits::repair_tick_ms / 1000.0);
  tokens_ = std::min(burst, tokens_ + static_cast<double>(now - tokens_at_ms_) * config_.keys_per_s / 1000.0);
  tokens_at_ms_ = now;
  while (!queue_.empty() && in_flight_ < limits::repair_in_flight_max && tokens_ >= 1) {
    tokens_ -= 1;
    Item item = std::move(queue_.front());
    queue_.pop_front();
    start_one(std::move(item));
  }
  pumping_ = false;
}

// Rows on a failed disk join the queue a page at a time while it has room. A walk that
// reached the end starts over after repair_retry_ms while rows remain (their fetch
// failed, or they were queued already): the disk drains when no row points at it.
void Repairer::enumerate_failed_disks(std::uint64_t now) {
  blobstore::BlobStore& store = server_.store();
  for (std::size_t i = 0; i < walks_.size(); i++) {
    DiskWalk& w = walks_[i];
    int disk = static_cast<int>(i);
    bool failed = !store.disk_healthy(disk);
    if (failed && !w.failed) {
      w = DiskWalk{};
      w.failed = true;
      w.failed_at_ms = now;
      auto n = store.count_on_disk(disk);
      w.rows_left = n.is_ok() ? n.value() : 0;
      log::warn("disk " + store.disks_info(clock_.wall_ms())[i].path + " failed: fetching its " +
                std::to_string(w.rows_left) + " blobs from replicas");
    }
    if (!failed) {
      w.failed = false;
      continue;
    }
    if (w.done) {
      // The walk is over; its rows are counted once none is in flight any more (one
      // count scans the index: at most every repair_tick_ms, only while a disk drains).
      if (now < w.restart_at_ms || pending() > 0) continue;
      auto n = store.count_on_disk(disk);
      w.rows_left = n.is_ok() ? n.value() : w.rows_left;
      if (w.rows_left == 0) {
        if (w.drained_at_ms == 0) {
          w.drained_at_ms = now;
          log::info("disk " + std::to_string(i) + " drained in " +
                    std::to_string(now - w.failed_at_ms) + " ms");
        }
        w.restart_at_ms = now + limits::repair_retry_ms;
        continue;
      }
      w.done = false;  // rows left behind (fetches that gave up): walk again
      w.after.clear();
    }
    if (queue_.size() + limits::repair_page_rows > limits::repair_queue_max) continue;
    std::vector<blobstore::BlobMeta> rows;
    if (!store.rows_on_disk(disk, w.after, limits::repair_page_rows, &rows).is_ok()) continue;
    if (rows.empty()) {
      w.done = true;
      w.restart_at_ms = now;  // counted again at once: drained when nothing is left
      continue;
    }
    w.after = rows.back().key;
    for (blobstore::BlobMeta& m : rows) {
      Item item;
      item.lost = std::move(m);
      item.from_disk = true;
      enqueue(std::move(item));
    }
  }
}

void Repairer::start_one(Item item) {
  blobstore::BlobStore& store = server_.store();
  // Repaired meanwhile (read repair, a newer write): nothing to fetch.
  // (A damaged copy's row may not be dropped yet: only a strictly newer one counts.)
  auto here = store.lookup(item.lost.key);
  bool good = here.is_ok() && (item.from_disk ? !(here.value().version < item.lost.version)
                                              : item.lost.version < here.value().version);
  if (good) {
    counters_.already_good++;
    queued_keys_.erase(item.lost.key);
    return;
  }
  auto f = std::make_shared<Fetch>();
  f->item = std::move(item);
  if (f->item.lost.tombstone && f->item.from_disk) {  // nothing to fetch: the row says it all
    in_flight_++;
    return write_tombstone(f, f->item.lost);
  }
  Coordinator& coord = server_.coordinator();
  std::size_t others = 0;
  for (const Replica& r : server_.cluster().preference_list(f->item.lost.key, coord.effective_n())) {
    others += !r.self;
    if (!r.self && r.alive) f->peers.push_back(r);
  }
  in_flight_++;
  // Alone in the preference list (N=1, or a one-node ring): no other copy exists.
  if (others == 0) return finish(f, Status::not_found("no other replica holds the key"));
  if (f->peers.empty()) return finish(f, Status::unavailable("no other replica is alive"));
  f->answers.resize(f->peers.size());
  f->present.assign(f->peers.size(), false);
  f->waiting = f->peers.size();
  for (std::size_t i = 0; i < f->peers.size(); i++) {
    auto req = std::make_unique<PeerRequest>();
    req->method = "HEAD";
    req->target = "/_/internal/blob/" + encode_key(f->item.lost.key);
    req->timeout_ms = coord.config().replica_timeout_ms;
    req->done = [this, f, i](Status s, PeerResponse resp) {
      f->waiting--;
      if (s.is_ok() && resp.status == 200 && meta_from_response(f->item.lost.key, resp, &f->answers[i])) {
        f->present[i] = true;
        f->answered++;
      } else if (s.is_ok() && resp.status == 404) {
        f->answered++;
      }
      if (f->waiting == 0) on_versions(f);
    };
    server_.peers().send(f->peers[i].addr, std::move(req));
  }
}

void Repairer::on_versions(const std::shared_ptr<Fetch>& f) {
  if (closed_) return;
  std::size_t best = f->peers.size();
  for (std::size_t i = 0; i < f->peers.size(); i++) {
    if (!f->present[i]) continue;
    if (best == f->peers.size() || f->answers[best].version < f->answers[i].version) best = i;
  }
  if (best == f->peers.size()) {
    if (f->answered < f->peers.size()) return finish(f, Status::unavailable("replicas did not answer"));
    return finish(f, Status::not_found("no replica holds the key"));
  }
  if (f->answers[best].tombstone) return write_tombstone(f, f->answers[best]);
  fetch_from(f, best);
}

void Repairer::fetch_from(const std::shared_ptr<Fetch>& f, std::size_t holder) {
  const blobstore::BlobMeta want = f->answers[holder];
  auto spool = server_.store().begin_write(want.key, want.content_type, clock_.wall_ms());
  if (!spool.is_ok()) return finish(f, spool.take_status());
  auto writer = std::make_shared<std::unique_ptr<blobstore::BlobWriter>>(std::move(spool.value()));
  if (f->item.lost.is_hint) (*writer)->set_hint_for(f->item.lost.hint_for);
  (*writer)->set_attrs(want.attrs, want.expires_ms);  // as the holder's answer named them
  auto req = std::make_unique<PeerRequest>();
  req->method = "GET";
  req->target = "/_/internal/blob/" + encode_key(want.key);
  req->timeout_ms = transfer_timeout_ms(server_.coordinator().config().replica_timeout_ms, want.size);
  req->body_sink = [writer](const char* d, std::size_t n) { return (*writer)->append(d, n); };
  req->done = [this, f, writer, want](Status s, PeerResponse resp) {
    if (closed_) return;
    blobstore::BlobMeta got;
    if (s.is_ok() && (resp.status != 200 || !meta_from_response(want.key, resp, &got) ||
                      got.version != want.version || (*writer)->finish_md5() != got.md5)) {
      s = Status::io_error("the fetched copy changed or did not check out");
    }
    if (s.is_ok()) s = server_.accept_version(want.version);
    if (!s.is_ok()) return finish(f, s);
    (*writer)->set_background();
    Status c = server_.store().commit(std::move(*writer), want.version,
                                      [this, f, want](Status st, blobstore::CommitResult r) {
                                        if (closed_) return;
                                        // Not applied: an equal or newer copy is here, or
                                        // the damaged row was not dropped yet (try again).
                                        if (st.is_ok() && !r.applied) {
                                          auto here = server_.store().lookup(want.key);
                                          if (!here.is_ok() || here.value().version < want.version) {
                                            st = Status::unavailable("the damaged row was still indexed");
                                          }
                                        }
                                        if (st.is_ok()) counters_.fetched++;
                                        finish(f, st);
                                      });
    if (!c.is_ok()) finish(f, c);
  };
  server_.peers().send(f->peers[holder].addr, std::move(req));
}

void Repairer::write_tombstone(const std::shared_ptr<Fetch>& f, const blobstore::BlobMeta& m) {
  Status s = server_.store().remove(m.key, m.version, clock_.wall_ms(),
                                    [this, f](Status st, blobstore::CommitResult) {
                                      if (st.is_ok()) counters_.rewritten++;
                                      finish(f, st);
                                    },
                                    m.unlinked);
  if (!s.is_ok()) finish(f, s);
}

void Repairer::finish(const std::shared_ptr<Fetch>& f, Status s) {
  in_flight_--;
  if (closed_) return;
  finish_item(f->item, std::move(s));
  pump();
}

void Repairer::finish_item(Item& item, Status s) {
  if (s.is_ok()) {
    queued_keys_.erase(item.lost.key);
    std::size_t disk = static_cast<std::size_t>(item.lost.disk);
    if (item.from_disk && disk < walks_.size() && walks_[disk].rows_left > 0) walks_[disk].rows_left--;
    return;
  }
  if (s.code() == Code::not_found) {
    // Every other replica answered and none has it: this may be the last copy. Its row
    // stays (a row is dropped only once another replica holds that version or a newer
    // one): the disk may come back as it was, and a full one was never lost at all.
    // Dropping it here once turned every node's full disk into 41 lost keys of 41.
    counters_.unrecoverable++;
    log::error("no other replica holds a copy this node lost; its row is kept: " + s.message());
    queued_keys_.erase(item.lost.key);
    return;
  }
  counters_.errors++;
  if (++item.attempts >= limits::repair_attempts_max) {
    // A row on a failed disk is found again by the next walk; a damaged copy is left to
    // the next scrub pass and to anti-entropy.
    queued_keys_.erase(item.lost.key);
    return;
  }
  item.retry_at_ms = clock_.monotonic_ms() + limits::repair_retry_ms;
  retry_.push_back(std::move(item));
}

nlohmann::json Repairer::status_json() const {
  nlohmann::json disks = nlohmann::json::array();
  for (std::size_t i = 0; i < walks_.size(); i++) {
    const DiskWalk& w = walks_[i];
    if (!w.failed) continue;
    disks.push_back({{"disk", i}, {"rows_left", w.rows_left}, {"walk_done", w.done},
                     {"drained", w.drained_at_ms != 0},
                     {"drain_ms", w.drained_at_ms ? w.drained_at_ms - w.failed_at_ms : 0}});
  }
  return {{"keys_per_s", config_.keys_per_s}, {"queued", counters_.queued},
          {"pending", pending()}, {"in_flight", in_flight_}, {"fetched", counters_.fetched},
          {"rewritten", counters_.rewritten}, {"already_good", counters_.already_good},
          {"unrecoverable", counters_.unrecoverable}, {"errors", counters_.errors},
          {"dropped", counters_.dropped}, {"failed_disks", disks}};
}

}  // namespace node
