#include "tests/sim/gossip_cluster.h"

#include <algorithm>
#include <cstdio>

#include "common/assert.h"

namespace sim {
namespace {

std::string node_addr(std::size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "10.%zu.%zu.%zu:7946", (i >> 16) & 0xff, (i >> 8) & 0xff,
                i & 0xff);
  return buf;
}

}  // namespace

GossipCluster::GossipCluster(std::uint64_t seed, GossipClusterOptions options)
    : options_(std::move(options)), rng_(seed), tick_rng_(seed ^ 0x5eed5eed5eed5eedull) {
  ASSERT(options_.node_count >= 1);
  ASSERT(options_.seed_count >= 1);
  ASSERT(options_.delay_ms_min <= options_.delay_ms_max);
  nodes_.resize(options_.node_count);
  group_of_.assign(options_.node_count, 0);
  for (std::size_t i = 0; i < nodes_.size(); i++) {
    for (auto& b : nodes_[i].id) b = static_cast<std::uint8_t>(rng_.next_u64());
    nodes_[i].addr = node_addr(i);
    by_addr_.emplace(nodes_[i].addr, static_cast<std::uint32_t>(i));
    if (i < options_.seed_count) seeds_.push_back(nodes_[i].addr);
  }
  for (std::size_t i = 0; i < nodes_.size(); i++) {
    nodes_[i].membership = make_membership(i);
    // Nodes tick out of step, as real ones do: each at its own phase in the interval.
    schedule_tick(static_cast<std::uint32_t>(i), rng_.uniform(options_.interval_ms));
  }
}

std::unique_ptr<gossip::Membership> GossipCluster::make_membership(std::size_t i) {
  gossip::Config config{
      .self = nodes_[i].id,
      .self_addr = nodes_[i].addr,
      .generation = nodes_[i].generation,
      .seeds = seeds_,
      .secret = options_.secret,
      .interval_ms = options_.interval_ms,
      .phi_convict = options_.phi_convict,
  };
  gossip::AppState app{
      .http_addr = "10.1.0.1:" + std::to_string(3000 + i % 60000),
      .status = gossip::NodeStatus::normal,
      .vnodes = 64,
      .zone = "zone-" + std::to_string(i % 3),
  };
  return std::make_unique<gossip::Membership>(std::move(config), std::move(app));
}

void GossipCluster::schedule_tick(std::uint32_t i, std::uint64_t at_ms) {
  // A tick carries its node's generation in `from`: ticks of an earlier life are skipped.
  events_.push(Event{at_ms, seq_++, i, static_cast<std::uint32_t>(nodes_[i].generation), true, {}});
}

void GossipCluster::run_for(std::uint64_t ms) {
  std::uint64_t end = now_ms_ + ms;
  while (!events_.empty() && events_.top().at_ms <= end) {
    // priority_queue::top is const: move the bytes out through a const_cast before pop.
    Event e = std::move(const_cast<Event&>(events_.top()));
    events_.pop();
    now_ms_ = e.at_ms;
    Node& n = nodes_[e.to];
    if (e.tick) {
      if (!n.up || e.from != static_cast<std::uint32_t>(n.generation)) continue;
      n.membership->on_tick(now_ms_, tick_rng_, outbox_);
      schedule_tick(e.to, now_ms_ + options_.interval_ms);
    } else {
      if (!n.up) {
        net_.to_dead++;
        continue;
      }
      net_.delivered++;
      n.membership->on_datagram(now_ms_, nodes_[e.from].addr, e.bytes, outbox_);
    }
    deliver_outbox(e.to);
  }
  now_ms_ = end;
}

void GossipCluster::deliver_outbox(std::uint32_t from) {
  for (gossip::Datagram& d : outbox_) {
    net_.sent++;
    auto it = by_addr_.find(d.addr);
    if (it == by_addr_.end()) continue;
    std::uint32_t to = it->second;
    if (!nodes_[to].up) {
      net_.to_dead++;
      continue;
    }
    if (!same_group(from, to)) {
      net_.partitioned++;
      continue;
    }
    if (rng_.chance(options_.loss_percent / 100.0)) {
      net_.lost++;
      continue;
    }
    std::uint64_t delay =
        options_.delay_ms_min + rng_.uniform(options_.delay_ms_max - options_.delay_ms_min + 1);
    events_.push(Event{now_ms_ + delay, seq_++, to, from, false, std::move(d.bytes)});
  }
  outbox_.clear();
}

bool GossipCluster::run_until(const std::function<bool()>& done, std::uint64_t sim_ms_max,
                              std::uint64_t check_every_ms) {
  std::uint64_t end = now_ms_ + sim_ms_max;
  while (!done()) {
    if (now_ms_ >= end) return false;
    run_for(std::min(check_every_ms, end - now_ms_));
  }
  return true;
}

void GossipCluster::kill(std::size_t i) { nodes_[i].up = false; }

void GossipCluster::restart(std::size_t i) {
  Node& n = nodes_[i];
  n.up = true;
  n.generation++;
  n.membership = make_membership(i);
  schedule_tick(static_cast<std::uint32_t>(i), now_ms_ + 1 + rng_.uniform(options_.interval_ms));
}

void GossipCluster::set_app_state(std::size_t i, const gossip::AppState& s) {
  nodes_[i].membership->set_app_state(s);
}

void GossipCluster::partition(std::vector<int> group_of) {
  ASSERT(group_of.size() == nodes_.size());
  group_of_ = std::move(group_of);
}

void GossipCluster::heal() { group_of_.assign(nodes_.size(), 0); }

bool GossipCluster::same_group(std::size_t a, std::size_t b) const {
  return group_of_[a] == group_of_[b];
}

bool GossipCluster::all_know_all() const {
  std::size_t up = 0;
  for (const Node& n : nodes_) up += n.up;
  for (const Node& n : nodes_) {
    if (n.up && n.membership->member_count() < up) return false;  // cheap first look
  }
  return pairs_known() == up * up;
}

std::size_t GossipCluster::pairs_known() const {
  std::size_t known = 0;
  for (const Node& a : nodes_) {
    if (!a.up) continue;
    for (const Node& b : nodes_) {
      if (b.up && a.membership->generation_of(b.id) == b.generation) known++;
    }
  }
  return known;
}

std::size_t GossipCluster::pairs_wrongly_down() const {
  std::size_t wrong = 0;
  for (std::size_t a = 0; a < nodes_.size(); a++) {
    if (!nodes_[a].up) continue;
    for (std::size_t b = 0; b < nodes_.size(); b++) {
      if (a == b || !nodes_[b].up || !same_group(a, b)) continue;
      if (nodes_[a].membership->generation_of(nodes_[b].id) != nodes_[b].generation) continue;
      if (!nodes_[a].membership->is_alive(nodes_[b].id, now_ms_)) wrong++;
    }
  }
  return wrong;
}

bool GossipCluster::all_see(std::size_t i, bool alive) const {
  for (std::size_t a = 0; a < nodes_.size(); a++) {
    if (a == i || !nodes_[a].up) continue;
    const gossip::Membership& m = *nodes_[a].membership;
    if (m.is_alive(nodes_[i].id, now_ms_) != alive) return false;
    if (alive && m.generation_of(nodes_[i].id) != nodes_[i].generation) return false;
  }
  return true;
}

std::size_t GossipCluster::count_seeing_dead(std::size_t i) const {
  std::size_t n = 0;
  for (std::size_t a = 0; a < nodes_.size(); a++) {
    if (a == i || !nodes_[a].up) continue;
    if (!nodes_[a].membership->is_alive(nodes_[i].id, now_ms_)) n++;
  }
  return n;
}

}  // namespace sim
