// GossipCluster runs many real gossip::Membership objects in one thread against a fake
// clock and a seeded network that loses, delays (and so reorders) and partitions
// datagrams. Everything follows from the seed, so a failure replays with SIM_SEED.
//
// Owns: the Memberships, the clock, the datagrams in flight.
// Thread: one; nothing here is shared.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

#include "gossip/membership.h"

namespace sim {

struct GossipClusterOptions {
  std::size_t node_count = 5;
  std::size_t seed_count = 3;  // nodes 0..seed_count-1 are everyone's --seeds
  double loss_percent = 0;     // each datagram is lost with this probability
  std::uint32_t delay_ms_min = 1, delay_ms_max = 20;  // uniform, so datagrams reorder
  std::uint32_t interval_ms = 1000;
  double phi_convict = 8.0;
  std::string secret = "sim-secret";
};

class GossipCluster {
 public:
  GossipCluster(std::uint64_t seed, GossipClusterOptions options);

  std::size_t size() const { return nodes_.size(); }
  gossip::Membership& node(std::size_t i) { return *nodes_[i].membership; }
  const gossip::NodeId& id(std::size_t i) const { return nodes_[i].id; }
  std::uint64_t generation(std::size_t i) const { return nodes_[i].generation; }
  bool is_up(std::size_t i) const { return nodes_[i].up; }
  std::uint64_t now_ms() const { return now_ms_; }
  const GossipClusterOptions& options() const { return options_; }

  // Runs the events due in the next `ms` milliseconds.
  void run_for(std::uint64_t ms);
  // Runs until `done()` holds, checked every `check_every_ms`; false after sim_ms_max.
  bool run_until(const std::function<bool()>& done, std::uint64_t sim_ms_max,
                 std::uint64_t check_every_ms = 100);

  // A killed node stops ticking and every datagram to or from it is lost.
  void kill(std::size_t i);
  // The node starts again with the same id and a new generation, knowing only the seeds.
  void restart(std::size_t i);
  void set_app_state(std::size_t i, const gossip::AppState& s);
  // Datagrams between nodes of different groups are lost. group_of[i] for node i.
  void partition(std::vector<int> group_of);
  void heal();
  void set_loss_percent(double p) { options_.loss_percent = p; }

  // Every up node holds every up node at its current generation.
  bool all_know_all() const;
  // How many (observer, member) pairs of up nodes hold the member's current generation.
  std::size_t pairs_known() const;
  // How many (observer, member) pairs of up nodes, in the same group, see the member dead.
  std::size_t pairs_wrongly_down() const;
  // Every up node sees node `i` as `alive` (and, if alive, at its current generation).
  bool all_see(std::size_t i, bool alive) const;
  // How many up nodes other than `i` see node `i` dead.
  std::size_t count_seeing_dead(std::size_t i) const;

  struct NetStats {
    std::uint64_t sent = 0, delivered = 0, lost = 0, partitioned = 0, to_dead = 0;
  };
  const NetStats& net_stats() const { return net_; }

 private:
  struct Node {
    gossip::NodeId id{};
    std::string addr;
    std::uint64_t generation = 1;
    std::unique_ptr<gossip::Membership> membership;
    bool up = true;
  };
  struct Event {
    std::uint64_t at_ms;
    std::uint64_t seq;  // ties run in the order they were scheduled
    std::uint32_t to;
    std::uint32_t from;  // == to for a tick
    bool tick;
    std::vector<std::uint8_t> bytes;
    bool operator>(const Event& o) const {
      return at_ms != o.at_ms ? at_ms > o.at_ms : seq > o.seq;
    }
  };

  std::unique_ptr<gossip::Membership> make_membership(std::size_t i);
  void schedule_tick(std::uint32_t i, std::uint64_t at_ms);
  void deliver_outbox(std::uint32_t from);
  bool same_group(std::size_t a, std::size_t b) const;

  GossipClusterOptions options_;
  gossip::Rng rng_;       // the network: loss and delay
  gossip::Rng tick_rng_;  // passed to on_tick
  std::vector<Node> nodes_;
  std::vector<std::string> seeds_;
  std::unordered_map<std::string, std::uint32_t> by_addr_;
  std::vector<int> group_of_;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events_;
  std::uint64_t now_ms_ = 0;
  std::uint64_t seq_ = 0;
  gossip::Outbox outbox_;
  NetStats net_;
};

}  // namespace sim
