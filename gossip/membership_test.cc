// Membership driven by hand: exchanges delivered one datagram at a time, so that each
// rule of the protocol is seen on its own. (tests/sim/ runs whole clusters.)
#include "gossip/membership.h"

#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <string>

#include "gossip/limits.h"

namespace gossip {
namespace {

const std::string secret = "cluster secret";

NodeId make_id(std::uint8_t first, std::uint8_t second = 0) {
  NodeId id{};
  id[0] = first;
  id[1] = second;
  return id;
}

AppState app_for(int i) {
  return {.http_addr = "127.0.0.1:" + std::to_string(3000 + i), .vnodes = 16, .zone = "a"};
}

// Memberships addressed "n<i>:1", delivering every datagram at once, in order, unless
// `drop` says otherwise.
struct Net {
  std::map<std::string, std::unique_ptr<Membership>> nodes;
  std::uint64_t now_ms = 1'000;
  Rng rng{1};
  std::vector<std::pair<std::string, Datagram>> captured;  // (from, datagram) seen on the wire

  Membership& add(std::uint8_t id, std::vector<std::string> seeds, std::uint64_t generation = 1) {
    std::string addr = "n" + std::to_string(id) + ":1";
    Config c{.self = make_id(id),
             .self_addr = addr,
             .generation = generation,
             .seeds = std::move(seeds),
             .secret = secret};
    nodes[addr] = std::make_unique<Membership>(std::move(c), app_for(id));
    return *nodes[addr];
  }
  Membership& at(std::uint8_t id) { return *nodes.at("n" + std::to_string(id) + ":1"); }
  // A second process under node `id`'s id (a copied data dir), at its own address.
  Membership& add_twin(std::uint8_t id, const std::string& addr, std::vector<std::string> seeds,
                       std::uint64_t generation) {
    Config c{.self = make_id(id), .self_addr = addr, .generation = generation,
             .seeds = std::move(seeds), .secret = secret};
    nodes[addr] = std::make_unique<Membership>(std::move(c), app_for(id));
    return *nodes[addr];
  }

  void deliver(const std::string& from, Outbox& out) {
    for (Datagram& d : out) {
      captured.push_back({from, d});
      auto it = nodes.find(d.addr);
      if (it == nodes.end()) continue;
      Outbox replies;
      it->second->on_datagram(now_ms, from, d.bytes, replies);
      deliver(d.addr, replies);
    }
    out.clear();
  }
  void tick(std::uint8_t id) {
    Outbox out;
    at(id).on_tick(now_ms, rng, out);
    deliver("n" + std::to_string(id) + ":1", out);
  }
  void round() {
    now_ms += 1000;
    for (auto& [addr, m] : nodes) {
      Outbox out;
      m->on_tick(now_ms, rng, out);
      deliver(addr, out);
    }
  }
};

std::vector<Message> decoded(const std::vector<std::pair<std::string, Datagram>>& captured,
                             MessageType type) {
  std::vector<Message> out;
  for (const auto& [from, d] : captured) {
    Message m;
    DropReason reason;
    REQUIRE(decode_datagram(d.bytes, secret, &m, &reason).is_ok());
    if (m.type == type) out.push_back(m);
  }
  return out;
}

}  // namespace

TEST_CASE("one SYN, ACK, ACK2 exchange introduces two nodes", "[gossip][membership]") {
  Net net;
  Membership& a = net.add(1, {"n2:1"});
  Membership& b = net.add(2, {});
  const std::uint64_t ring_a = a.ring_version(), ring_b = b.ring_version();
  net.tick(1);  // a knows only the seed's address: SYN to it
  CHECK(decoded(net.captured, MessageType::syn).size() == 1);
  auto acks = decoded(net.captured, MessageType::ack);
  REQUIRE(acks.size() == 1);
  // b asks for a (in a's digest, unknown to b) and sends itself (in the SYN's id range,
  // absent from a's digest: unknown to a).
  REQUIRE(acks[0].digests.size() == 1);
  CHECK(acks[0].digests[0].id == make_id(1));
  CHECK(acks[0].digests[0].generation == 0);
  REQUIRE(acks[0].deltas.size() == 1);
  CHECK(acks[0].deltas[0].id == make_id(2));
  CHECK(acks[0].deltas[0].full());
  auto ack2s = decoded(net.captured, MessageType::ack2);
  REQUIRE(ack2s.size() == 1);
  CHECK(ack2s[0].deltas.at(0).id == make_id(1));
  REQUIRE(a.member_count() == 2);
  REQUIRE(b.member_count() == 2);
  CHECK(a.ring_version() == ring_a + 1);
  CHECK(b.ring_version() == ring_b + 1);

  auto view = a.member(make_id(2), net.now_ms);
  REQUIRE(view.has_value());
  CHECK(view->gossip_addr == "n2:1");
  CHECK(view->app == app_for(2));
  CHECK(view->alive);
  CHECK_FALSE(view->self);
  auto members = a.members(net.now_ms);
  REQUIRE(members.size() == 2);
  CHECK(members[0].self);  // id order: 01.. before 02..
  CHECK(members[0].alive);
}

TEST_CASE("an app state change sends only the fields that changed", "[gossip][membership]") {
  Net net;
  net.add(1, {"n2:1"});
  Membership& b = net.add(2, {"n1:1"});
  for (int i = 0; i < 3; i++) net.round();
  REQUIRE(b.member_count() == 2);

  const std::uint64_t ring = b.ring_version();
  AppState s = app_for(1);
  s.key_count = 42;
  s.disk_used_bytes = 1 << 20;
  net.at(1).set_app_state(s);
  net.captured.clear();
  net.tick(2);  // b's SYN: a answers with what is newer than b holds: the two counts
  auto acks = decoded(net.captured, MessageType::ack);
  REQUIRE(acks.size() == 1);
  REQUIRE(acks[0].deltas.size() == 1);
  const Delta& d = acks[0].deltas[0];
  CHECK(d.id == make_id(1));
  CHECK(d.field_mask == (field_bit(Field::disk_used_bytes) | field_bit(Field::key_count)));
  CHECK(b.member(make_id(1), net.now_ms)->app == s);
  CHECK(b.ring_version() == ring);  // counts do not move the ring

  s.status = NodeStatus::leaving;
  net.at(1).set_app_state(s);
  net.tick(2);
  CHECK(b.member(make_id(1), net.now_ms)->app.status == NodeStatus::leaving);
  CHECK(b.ring_version() == ring + 1);
  net.at(1).set_app_state(s);  // no change, no new version
  net.captured.clear();
  net.tick(2);
  acks = decoded(net.captured, MessageType::ack);
  REQUIRE(acks.size() == 1);
  CHECK(acks[0].deltas.empty());  // a has nothing newer; it only asks for b's heartbeat
  CHECK(acks[0].digests.size() == 1);
  net.tick(1);
  acks = decoded(net.captured, MessageType::ack);
  REQUIRE(acks.size() == 2);
  REQUIRE(acks[1].deltas.size() == 0);
  REQUIRE(acks[1].digests.size() == 1);  // b asks for a's new heartbeat, and only that
  auto ack2s = decoded(net.captured, MessageType::ack2);
  CHECK(ack2s.back().deltas.at(0).field_mask == field_bit(Field::heartbeat));
}

TEST_CASE("heartbeats and liveness never bump the ring version", "[gossip][membership]") {
  Net net;
  Membership& a = net.add(1, {"n2:1"});
  net.add(2, {"n1:1"});
  for (int i = 0; i < 3; i++) net.round();
  const std::uint64_t ring = a.ring_version();
  for (int i = 0; i < 5; i++) net.round();
  CHECK(a.ring_version() == ring);
  net.now_ms += 60'000;  // b goes quiet: dead to a, still a member
  CHECK_FALSE(a.is_alive(make_id(2), net.now_ms));
  CHECK(a.generation_of(make_id(2)) == 1);
  CHECK(a.ring_version() == ring);
  CHECK(a.member(make_id(2), net.now_ms)->phi > 8);
}

TEST_CASE("a higher generation replaces the whole state, a lower one is ignored",
          "[gossip][membership]") {
  Net net;
  Membership& a = net.add(1, {"n2:1"});
  net.add(2, {"n1:1"});
  for (int i = 0; i < 3; i++) net.round();
  AppState s = app_for(2);
  s.zone = "old-zone";
  net.at(2).set_app_state(s);
  for (int i = 0; i < 20; i++) net.round();  // versions of the first life climb past 20
  REQUIRE(a.member(make_id(2), net.now_ms)->app.zone == "old-zone");
  const std::uint64_t ring = a.ring_version();

  // Restart: generation 2, fresh versions starting at 1, zone back to "a".
  net.nodes.erase("n2:1");
  net.add(2, {"n1:1"}, 2);
  net.round();
  auto view = a.member(make_id(2), net.now_ms);
  REQUIRE(view->generation == 2);
  CHECK(view->app.zone == "a");
  CHECK(view->heartbeat < 20);  // versions of the new life start over
  CHECK(view->alive);
  CHECK(a.ring_version() > ring);

  // A stale full state of generation 1 arrives late: ignored.
  MacKey key(secret);
  Message late{.type = MessageType::ack2, .sender = make_id(3)};
  Delta d{.id = make_id(2), .generation = 1, .field_mask = field_mask_all};
  d.versions.fill(1000);
  d.values = {.gossip_addr = "n2:1", .app = s};
  late.deltas = {d};
  std::vector<std::uint8_t> bytes;
  encode_datagram(late, key, &bytes);
  Outbox out;
  a.on_datagram(net.now_ms, "n3:1", bytes, out);
  CHECK(a.member(make_id(2), net.now_ms)->generation == 2);
  CHECK(a.member(make_id(2), net.now_ms)->app.zone == "a");

  // A partial state of a newer generation cannot replace it (it would leave fields of
  // the old life behind): ignored until the whole state comes.
  d.generation = 3;
  d.field_mask = field_bit(Field::heartbeat);
  late.deltas = {d};
  encode_datagram(late, key, &bytes);
  a.on_datagram(net.now_ms, "n3:1", bytes, out);
  CHECK(a.member(make_id(2), net.now_ms)->generation == 2);
}

TEST_CASE("nobody else's word changes our own state", "[gossip][membership]") {
  Net net;
  Membership& a = net.add(1, {});
  MacKey key(secret);
  Message m{.type = MessageType::ack2, .sender = make_id(3)};
  Delta d{.id = make_id(1), .generation = 99, .field_mask = field_mask_all};
  d.versions.fill(5);
  d.values = {.gossip_addr = "evil:1", .app = {.status = NodeStatus::removed}};
  m.deltas = {d};
  std::vector<std::uint8_t> bytes;
  encode_datagram(m, key, &bytes);
  Outbox out;
  a.on_datagram(net.now_ms, "n3:1", bytes, out);
  auto self = a.member(make_id(1), net.now_ms);
  CHECK(self->generation == 1);
  CHECK(self->app.status == NodeStatus::normal);
  CHECK(self->gossip_addr == "n1:1");

  // A datagram that claims to come from us is dropped.
  m.sender = make_id(1);
  encode_datagram(m, key, &bytes);
  a.on_datagram(net.now_ms, "n3:1", bytes, out);
  CHECK(a.counters().dropped_from_self == 1);
}

TEST_CASE("a restored peer is gossiped to and learned", "[gossip][membership]") {
  Net net;
  Membership& a = net.add(1, {});  // no seeds at all
  net.add(2, {});
  CHECK(a.add_known(make_id(2), "n2:1"));
  CHECK_FALSE(a.add_known(make_id(2), "elsewhere:1"));  // already known
  CHECK_FALSE(a.add_known(make_id(1), "self:1"));       // ourselves
  CHECK_FALSE(a.add_known(make_id(3), ""));             // read back from disk: checked
  CHECK_FALSE(a.add_known(make_id(3), std::string(limits::addr_bytes_max + 1, '1')));
  CHECK_FALSE(a.add_known(make_id(3), "n3\n:1"));
  auto view = a.member(make_id(2), net.now_ms);
  REQUIRE(view.has_value());
  CHECK(view->generation == 0);
  CHECK_FALSE(view->alive);
  CHECK(view->gossip_addr == "n2:1");
  CHECK(a.member_count() == 1);  // heard of: only ourselves
  const std::uint64_t ring = a.ring_version();

  net.tick(1);  // no live peer, no seed: the known-but-unheard peer gets the SYN
  net.tick(2);
  view = a.member(make_id(2), net.now_ms);
  CHECK(view->generation == 1);
  CHECK(view->alive);
  CHECK(view->app == app_for(2));
  CHECK(a.member_count() == 2);
  CHECK(a.ring_version() == ring + 1);
}

TEST_CASE("left and removed members are not gossiped to", "[gossip][membership]") {
  Net net;
  Membership& a = net.add(1, {});
  net.add(2, {"n1:1"});
  for (int i = 0; i < 3; i++) net.round();
  AppState s = app_for(2);
  s.status = NodeStatus::left;
  net.at(2).set_app_state(s);
  net.round();
  REQUIRE(a.member(make_id(2), net.now_ms)->app.status == NodeStatus::left);
  net.captured.clear();
  Outbox out;
  a.on_tick(net.now_ms, net.rng, out);
  for (const Datagram& d : out) CHECK(d.addr != "n2:1");
}

TEST_CASE("a large membership is split across datagrams by id range", "[gossip][membership]") {
  // Node a learns 300 members from ACK2s (as if from a peer), then sends its digest.
  Net net;
  Membership& a = net.add(1, {"n2:1"});
  MacKey key(secret);
  Message m{.type = MessageType::ack2, .sender = make_id(9, 9)};
  const int count = 300;
  for (int i = 0; i < count; i++) {
    Delta d{.id = make_id(static_cast<std::uint8_t>(10 + i % 200), static_cast<std::uint8_t>(i)),
            .generation = 1700000000,
            .field_mask = field_mask_all};
    for (std::size_t f = 0; f < field_count; f++) d.versions[f] = 1 + f;
    d.values = {.gossip_addr = "10.9.9." + std::to_string(i % 250) + ":7946", .app = app_for(i)};
    m.deltas.push_back(d);
    if (m.deltas.size() == 10) {
      std::vector<std::uint8_t> bytes;
      encode_datagram(m, key, &bytes);
      REQUIRE(bytes.size() <= limits::datagram_bytes_max);
      Outbox out;
      a.on_datagram(net.now_ms, "n9:1", bytes, out);
      m.deltas.clear();
    }
  }
  REQUIRE(a.member_count() == count + 1);

  Outbox out;
  a.on_tick(net.now_ms, net.rng, out);
  std::map<std::string, std::vector<Message>> syns;
  for (const Datagram& d : out) {
    REQUIRE(d.bytes.size() <= limits::datagram_bytes_max);
    Message msg;
    DropReason reason;
    REQUIRE(decode_datagram(d.bytes, secret, &msg, &reason).is_ok());
    syns[d.addr].push_back(msg);
  }
  REQUIRE_FALSE(syns.empty());
  for (const auto& [addr, list] : syns) {
    REQUIRE(list.size() > 1);
    // The ranges tile the id space, in order, and hold every member once.
    NodeId lo{};
    std::size_t digests = 0;
    for (std::size_t i = 0; i < list.size(); i++) {
      CHECK(list[i].range_lo == lo);
      digests += list[i].digests.size();
      if (i + 1 < list.size()) {
        CHECK(list[i].range_hi == list[i].digests.back().id);
        lo = list[i].range_hi;
        for (std::size_t k = lo.size(); k-- > 0;) {
          if (++lo[k] != 0) break;
        }
      } else {
        NodeId top;
        top.fill(0xff);
        CHECK(list[i].range_hi == top);
      }
    }
    CHECK(digests == static_cast<std::size_t>(count + 1));
  }

  // A newcomer answers each SYN with at most reply_datagrams_max ACKs; together they
  // carry full states it can use at once.
  Membership& b = net.add(2, {});
  std::size_t acks = 0;
  for (const Message& syn : syns.begin()->second) {
    std::vector<std::uint8_t> bytes;
    encode_datagram(syn, key, &bytes);
    Outbox replies;
    b.on_datagram(net.now_ms, "n1:1", bytes, replies);
    CHECK(replies.size() <= limits::reply_datagrams_max);
    acks += replies.size();
    Outbox ack2s;
    for (const Datagram& r : replies) {
      REQUIRE(r.bytes.size() <= limits::datagram_bytes_max);
      a.on_datagram(net.now_ms, "n2:1", r.bytes, ack2s);
    }
    for (const Datagram& r : ack2s) {
      REQUIRE(r.bytes.size() <= limits::datagram_bytes_max);
      Outbox none;
      b.on_datagram(net.now_ms, "n1:1", r.bytes, none);
      CHECK(none.empty());
    }
  }
  CHECK(acks >= syns.begin()->second.size());
  CHECK(b.member_count() == count + 2);
}

TEST_CASE("settings outside their limits are refused, naming the limit", "[gossip][membership]") {
  Config good{.self = make_id(1), .self_addr = "10.0.0.1:7946", .generation = 1};
  AppState app = app_for(1);
  CHECK(check_config(good, app).is_ok());
  auto refused = [&](Config c, AppState a, const char* names) {
    Status s = check_config(c, a);
    INFO(s.message());
    CHECK_FALSE(s.is_ok());
    CHECK(s.message().find(names) != std::string::npos);
  };
  refused({.self_addr = "10.0.0.1:7946", .generation = 0}, app, "generation");
  refused({.self_addr = "", .generation = 1}, app, "address");
  refused({.self_addr = "10.0.0.1:7946", .interval_ms = 5}, app, "interval");
  refused({.self_addr = "10.0.0.1:7946", .interval_ms = 60'000}, app, "interval");
  refused({.self_addr = "10.0.0.1:7946", .phi_convict = 0}, app, "phi_convict");
  refused({.self_addr = "10.0.0.1:7946", .phi_convict = 1e9}, app, "phi_convict");
  AppState long_zone = app;
  long_zone.zone = std::string(limits::zone_bytes_max + 1, 'z');
  refused(good, long_zone, "zone");
  AppState odd_zone = app;
  odd_zone.zone = "eu\twest";
  refused(good, odd_zone, "zone");
  AppState long_http = app;
  long_http.http_addr = std::string(limits::addr_bytes_max + 1, '1');
  refused(good, long_http, "http");
}

TEST_CASE("members beyond members_max are refused and counted", "[gossip][membership]") {
  Net net;
  Membership& a = net.add(1, {});
  for (std::size_t i = 0; i < limits::members_max - 1 + 10; i++) {  // we are one of the max
    NodeId id = make_id(static_cast<std::uint8_t>(100 + (i >> 8)), static_cast<std::uint8_t>(i));
    id[2] = 7;
    a.add_known(id, "10.0.0.1:1");
  }
  CHECK(a.members(net.now_ms).size() == limits::members_max);
  CHECK(a.counters().members_refused == 10);
  Outbox out;
  a.on_tick(net.now_ms, net.rng, out);
  for (const Datagram& d : out) CHECK(d.bytes.size() <= limits::datagram_bytes_max);
}

TEST_CASE("a dead member is retired by another node's word, and stays retired",
          "[gossip][membership]") {
  Net net;
  Membership& a = net.add(1, {"n2:1"});
  Membership& b = net.add(2, {"n1:1"});
  net.add(3, {"n1:1"});
  for (int i = 0; i < 5; i++) net.round();
  REQUIRE(b.member_count() == 3);
  REQUIRE(a.generation_of(make_id(3)) == 1);

  // Node 3 dies; node 1 announces its removal.
  net.nodes.erase("n3:1");
  CHECK(a.announce_removed(make_id(1)).code() == Code::invalid_argument);  // not ourselves
  CHECK(a.announce_removed(make_id(9)).code() == Code::not_found);         // unknown
  const std::uint64_t ring = a.ring_version();
  REQUIRE(a.announce_removed(make_id(3)).is_ok());
  CHECK(a.ring_version() == ring + 1);
  CHECK(a.member(make_id(3), net.now_ms)->app.status == NodeStatus::removed);
  CHECK(a.generation_of(make_id(3)) == 1 + limits::removal_generation_step);

  // The others take the whole state: a higher generation replaces what they held.
  for (int i = 0; i < 3; i++) net.round();
  auto seen = b.member(make_id(3), net.now_ms);
  REQUIRE(seen.has_value());
  CHECK(seen->app.status == NodeStatus::removed);
  CHECK(seen->generation == 1 + limits::removal_generation_step);
  CHECK(seen->app.http_addr == app_for(3).http_addr);  // the rest of its state is kept

  // The retired node restarts (generation 2): its own word is an earlier life now, and
  // it learns that it was removed.
  Membership& c = net.add(3, {"n1:1"}, 2);
  for (int i = 0; i < 3; i++) net.round();
  CHECK(a.member(make_id(3), net.now_ms)->app.status == NodeStatus::removed);
  CHECK(b.member(make_id(3), net.now_ms)->app.status == NodeStatus::removed);
  CHECK(c.removed_by_peer());
  CHECK_FALSE(a.removed_by_peer());
}

TEST_CASE("two live processes under one id: the peers name both addresses, the twins hear of it",
          "[gossip][membership]") {
  // Same generation (a data dir copied while its node was stopped, both started): the one
  // that started later has the lower counter and sees a state of its own it never made.
  Net net;
  Membership& a = net.add(1, {});
  Membership& b = net.add(2, {"n1:1"});
  for (int i = 0; i < 5; i++) net.round();
  Membership& old_b = b;
  Membership& twin = net.add_twin(2, "copy:1", {"n1:1"}, 1);
  CHECK_FALSE(twin.self_claim().has_value());
  for (int i = 0; i < 6; i++) net.round();
  REQUIRE(twin.self_claim().has_value());
  CHECK(twin.self_claim()->generation == 1);
  CHECK(twin.self_claim()->addr == "n2:1");  // asked whole, the state names the other
  CHECK_FALSE(old_b.self_claim().has_value());
  auto twins = a.twins(net.now_ms);
  REQUIRE(twins.size() == 1);
  CHECK(twins[0].id == make_id(2));
  CHECK(((twins[0].addr == "n2:1" && twins[0].other_addr == "copy:1") ||
         (twins[0].addr == "copy:1" && twins[0].other_addr == "n2:1")));

  // The copy goes away: after the window the peer names no twin any more.
  net.nodes.erase("copy:1");
  for (int i = 0; i < 12; i++) net.round();
  CHECK(a.twins(net.now_ms).empty());
}

TEST_CASE("a higher generation under our id is a claim, and taking a higher one answers it",
          "[gossip][membership]") {
  // A data dir copied while its node ran: the copy starts one generation up, the peers
  // take its state, and the original hears of a generation of its own it never had.
  Net net;
  Membership& a = net.add(1, {});
  Membership& b = net.add(2, {"n1:1"}, 4);
  for (int i = 0; i < 5; i++) net.round();
  Membership& copy = net.add_twin(2, "copy:1", {"n1:1"}, 5);
  for (int i = 0; i < 4; i++) net.round();
  REQUIRE(b.self_claim().has_value());
  CHECK(b.self_claim()->generation == 5);
  CHECK(b.self_claim()->addr == "copy:1");
  // The original keeps its id under a generation above the copy's: the copy hears of it.
  b.take_generation(6);
  CHECK_FALSE(b.self_claim().has_value());
  for (int i = 0; i < 4; i++) net.round();
  CHECK(a.generation_of(make_id(2)) == 6);
  REQUIRE(copy.self_claim().has_value());
  CHECK(copy.self_claim()->generation == 6);
  CHECK(copy.self_claim()->addr == "n2:1");

  // A plain restart (the old process gone, a higher generation) is no claim anywhere.
  Net restart;
  restart.add(1, {});
  Membership& r = restart.add(2, {"n1:1"}, 1);
  for (int i = 0; i < 5; i++) restart.round();
  restart.nodes.erase("n2:1");
  Membership& again = restart.add(2, {"n1:1"}, 2);
  for (int i = 0; i < 6; i++) restart.round();
  (void)r;
  CHECK_FALSE(again.self_claim().has_value());
  CHECK(restart.at(1).twins(restart.now_ms).empty());
}

}  // namespace gossip
