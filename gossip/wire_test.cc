// The gossip wire format: round trips, and every way a datagram can be wrong.
#include "gossip/wire.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "common/rng.h"
#include "gossip/limits.h"
#include "gossip/membership.h"

namespace gossip {
namespace {

const std::string secret = "cluster secret";

NodeId make_id(std::uint8_t first, std::uint8_t last = 0) {
  NodeId id{};
  id[0] = first;
  id[15] = last;
  return id;
}

Delta full_delta(const NodeId& id, std::uint64_t generation) {
  Delta d{.id = id, .generation = generation, .field_mask = field_mask_all};
  for (std::size_t i = 0; i < field_count; i++) d.versions[i] = 100 + i;
  d.values = {.gossip_addr = "10.0.0.7:7946",
              .app = {.http_addr = "10.0.0.7:3000",
                      .status = NodeStatus::leaving,
                      .vnodes = 256,
                      .zone = "eu-west-1a",
                      .disk_used_bytes = 1ull << 40,
                      .key_count = 123456789}};
  return d;
}

Delta heartbeat_delta(const NodeId& id) {
  Delta d{.id = id, .generation = 5, .field_mask = field_bit(Field::heartbeat)};
  d.versions[0] = 900;
  return d;
}

Message sample_syn() {
  Message m{.type = MessageType::syn, .sender = make_id(9)};
  m.range_lo = make_id(0x10);
  m.range_hi = make_id(0x80);
  m.digests = {
      {make_id(0x10), 1, 5}, {make_id(0x20, 1), 1700000000, 1ull << 40}, {make_id(0x7f), 0, 0}};
  return m;
}

Message sample_ack() {
  Message m{.type = MessageType::ack, .sender = make_id(3)};
  m.digests = {{make_id(1), 2, 3}, {make_id(4), 0, 0}};
  m.deltas = {full_delta(make_id(5), 7), heartbeat_delta(make_id(6))};
  return m;
}

Message sample_ack2() {
  Message m{.type = MessageType::ack2, .sender = make_id(4)};
  m.deltas = {heartbeat_delta(make_id(8)), full_delta(make_id(2), UINT64_MAX)};
  return m;
}

std::vector<std::uint8_t> encode(const Message& m, std::string_view key_secret = secret) {
  MacKey key(key_secret);
  std::vector<std::uint8_t> out;
  encode_datagram(m, key, &out);
  return out;
}

DropReason decode_reason(std::span<const std::uint8_t> bytes,
                         std::string_view key_secret = secret) {
  Message out;
  DropReason reason = DropReason::none;
  Status s = decode_datagram(bytes, key_secret, &out, &reason);
  CHECK(s.is_ok() == (reason == DropReason::none));
  return reason;
}

// A datagram with a valid MAC around whatever header and body bytes the test wants.
std::vector<std::uint8_t> signed_raw(std::vector<std::uint8_t> bytes) {
  MacKey key(secret);
  auto mac = key.sign(bytes);
  bytes.insert(bytes.end(), mac.begin(), mac.end());
  return bytes;
}

std::vector<std::uint8_t> header(MessageType type, std::uint8_t version = wire_version) {
  std::vector<std::uint8_t> h = {wire_magic[0], wire_magic[1], version,
                                 static_cast<std::uint8_t>(type)};
  NodeId sender = make_id(0x42);
  h.insert(h.end(), sender.begin(), sender.end());
  return h;
}

void append(std::vector<std::uint8_t>& to, std::initializer_list<std::uint8_t> bytes) {
  to.insert(to.end(), bytes.begin(), bytes.end());
}
void append_id(std::vector<std::uint8_t>& to, const NodeId& id) {
  to.insert(to.end(), id.begin(), id.end());
}

// An ACK2 body holding one delta whose entry bytes (after id) the test writes.
std::vector<std::uint8_t> ack2_with_entry(std::initializer_list<std::uint8_t> after_id) {
  auto b = header(MessageType::ack2);
  append(b, {1, 0});  // one delta
  append_id(b, make_id(1));
  append(b, after_id);
  return signed_raw(b);
}

Config config_for(std::uint8_t id_byte, std::string addr) {
  return Config{
      .self = make_id(id_byte), .self_addr = std::move(addr), .generation = 1, .secret = secret};
}

}  // namespace

TEST_CASE("HMAC-SHA256 matches RFC 4231 test case 2", "[gossip][wire]") {
  MacKey key("Jefe");
  std::string data = "what do ya want for nothing?";
  auto mac = key.sign(std::span(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()));
  const std::uint8_t expected[] = {0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24,
                                   0x26, 0x08, 0x95, 0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27,
                                   0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43};
  REQUIRE(std::equal(mac.begin(), mac.end(), std::begin(expected)));
  // The context is reused: a second MAC of the same bytes is the same.
  REQUIRE(key.sign(std::span(reinterpret_cast<const std::uint8_t*>(data.data()), data.size())) ==
          mac);
}

TEST_CASE("datagrams round-trip", "[gossip][wire]") {
  for (const Message& m : {sample_syn(), sample_ack(), sample_ack2()}) {
    auto bytes = encode(m);
    REQUIRE(bytes.size() <= limits::datagram_bytes_max);
    Message out;
    DropReason reason = DropReason::none;
    REQUIRE(decode_datagram(bytes, secret, &out, &reason).is_ok());
    REQUIRE(reason == DropReason::none);
    REQUIRE(out == m);
  }
  // An empty ACK and an empty SYN are valid.
  Message empty_ack{.type = MessageType::ack, .sender = make_id(1)};
  REQUIRE(decode_reason(encode(empty_ack)) == DropReason::none);
  Message empty_syn{.type = MessageType::syn, .sender = make_id(1)};
  empty_syn.range_hi.fill(0xff);
  REQUIRE(decode_reason(encode(empty_syn)) == DropReason::none);
  // An empty secret (insecure mode) still checksums.
  REQUIRE(decode_reason(encode(sample_ack(), ""), "") == DropReason::none);
  REQUIRE(decode_reason(encode(sample_ack(), ""), secret) == DropReason::bad_mac);
}

TEST_CASE("the largest possible endpoint state fits one datagram", "[gossip][wire]") {
  Delta d = full_delta(make_id(0xff, 0xff), UINT64_MAX);
  d.versions.fill(UINT64_MAX);
  d.values.gossip_addr = std::string(limits::addr_bytes_max, 'g');
  d.values.app.http_addr = std::string(limits::addr_bytes_max, 'h');
  d.values.app.zone = std::string(limits::zone_bytes_max, 'z');
  d.values.app.vnodes = UINT32_MAX;
  d.values.app.disk_used_bytes = UINT64_MAX;
  d.values.app.key_count = UINT64_MAX;
  for (MessageType type : {MessageType::ack, MessageType::ack2}) {
    Message m{.type = type, .sender = make_id(1)};
    m.deltas = {d};
    auto bytes = encode(m);
    CHECK(bytes.size() == limits::header_bytes + (type == MessageType::ack ? 4 : 2) +
                              limits::delta_bytes_max + limits::mac_bytes);
    Message out;
    DropReason reason;
    REQUIRE(decode_datagram(bytes, secret, &out, &reason).is_ok());
    REQUIRE(out == m);
  }
}

TEST_CASE("DatagramBuilder fills a datagram and refuses what does not fit", "[gossip][wire]") {
  MacKey key(secret);
  std::vector<std::uint8_t> out;
  DatagramBuilder b(MessageType::ack, make_id(1), &out);
  std::size_t requests = 0, deltas = 0;
  for (std::uint8_t i = 0; b.add_digest({make_id(i), 1, 1}); i++) requests++;
  CHECK(requests >= 30);
  // The ACK is full of requests: not even a heartbeat delta fits.
  Delta hb = heartbeat_delta(make_id(200));
  while (b.add_delta(hb)) deltas++;
  b.finish(key);
  REQUIRE(out.size() <= limits::datagram_bytes_max);
  CHECK(out.size() > limits::datagram_bytes_max - 40);
  Message m;
  DropReason reason;
  REQUIRE(decode_datagram(out, key, &m, &reason).is_ok());
  CHECK(m.digests.size() == requests);
  CHECK(m.deltas.size() == deltas);
}

TEST_CASE("every truncation of a valid datagram is dropped and counted", "[gossip][wire]") {
  for (const Message& m : {sample_syn(), sample_ack(), sample_ack2()}) {
    auto bytes = encode(m);
    Membership node(config_for(0x55, "10.0.0.1:7946"), {});
    Outbox out;
    for (std::size_t len = 0; len < bytes.size(); len++) {
      node.on_datagram(0, "10.0.0.2:7946", std::span(bytes.data(), len), out);
      DropReason r = decode_reason(std::span(bytes.data(), len));
      CHECK(r == (len < limits::header_bytes + limits::mac_bytes ? DropReason::malformed
                                                                 : DropReason::bad_mac));
    }
    const auto& c = node.counters();
    CHECK(c.datagrams_in == bytes.size());
    CHECK(c.dropped_malformed + c.dropped_bad_mac == bytes.size());
    CHECK(out.empty());
    CHECK(node.member_count() == 1);
  }
}

TEST_CASE("a flipped bit anywhere fails the MAC", "[gossip][wire]") {
  for (const Message& m : {sample_syn(), sample_ack(), sample_ack2()}) {
    auto bytes = encode(m);
    Membership node(config_for(0x55, "10.0.0.1:7946"), {});
    Outbox out;
    for (std::size_t bit = 0; bit < 8 * bytes.size(); bit++) {
      auto flipped = bytes;
      flipped[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
      REQUIRE(decode_reason(flipped) == DropReason::bad_mac);
      node.on_datagram(0, "10.0.0.2:7946", flipped, out);
    }
    CHECK(node.counters().dropped_bad_mac == 8 * bytes.size());
    CHECK(out.empty());
  }
}

TEST_CASE("a datagram signed with another secret fails the MAC", "[gossip][wire]") {
  auto bytes = encode(sample_ack(), "another cluster");
  CHECK(decode_reason(bytes) == DropReason::bad_mac);
  Membership node(config_for(0x55, "10.0.0.1:7946"), {});
  Outbox out;
  node.on_datagram(0, "10.0.0.2:7946", bytes, out);
  CHECK(node.counters().dropped_bad_mac == 1);
  CHECK(node.member_count() == 1);
}

TEST_CASE("an oversized datagram is dropped before anything else", "[gossip][wire]") {
  auto bytes = encode(sample_ack());
  bytes.resize(limits::datagram_bytes_max + 1, 0);
  CHECK(decode_reason(bytes) == DropReason::oversize);
  std::vector<std::uint8_t> huge(65'000, 0xab);
  CHECK(decode_reason(huge) == DropReason::oversize);
  Membership node(config_for(0x55, "10.0.0.1:7946"), {});
  Outbox out;
  node.on_datagram(0, "10.0.0.2:7946", bytes, out);
  node.on_datagram(0, "10.0.0.2:7946", huge, out);
  CHECK(node.counters().dropped_oversize == 2);
  // Exactly the limit is fine as far as size goes (the MAC then fails).
  bytes.resize(limits::datagram_bytes_max);
  CHECK(decode_reason(bytes) == DropReason::bad_mac);
}

TEST_CASE("an authenticated datagram of another version is dropped and counted", "[gossip][wire]") {
  auto b = header(MessageType::ack2, wire_version + 1);
  append(b, {0, 0});
  auto bytes = signed_raw(b);
  CHECK(decode_reason(bytes) == DropReason::bad_version);
  Membership node(config_for(0x55, "10.0.0.1:7946"), {});
  Outbox out;
  node.on_datagram(0, "10.0.0.2:7946", bytes, out);
  CHECK(node.counters().dropped_bad_version == 1);
}

TEST_CASE("authenticated but malformed datagrams are dropped", "[gossip][wire]") {
  std::vector<std::pair<const char*, std::vector<std::uint8_t>>> cases;
  {
    auto b = header(MessageType::ack2);
    b[0] = 'X';
    append(b, {0, 0});
    cases.push_back({"bad magic", signed_raw(b)});
  }
  {
    auto b = header(static_cast<MessageType>(7));
    append(b, {0, 0});
    cases.push_back({"unknown type", signed_raw(b)});
  }
  {
    auto b = header(MessageType::ack2);
    append(b, {0, 0, 0xee});
    cases.push_back({"trailing byte", signed_raw(b)});
  }
  {
    auto b = header(MessageType::ack2);
    cases.push_back({"no body", signed_raw(b)});
  }
  {
    auto b = header(MessageType::ack2);
    append(b, {0xff, 0xff});
    cases.push_back({"count beyond the datagram", signed_raw(b)});
  }
  {
    auto b = header(MessageType::ack);
    append(b, {1, 0});
    append_id(b, make_id(1));
    append(b, {0x80, 0x00, 1});  // generation as a non-canonical varint
    append(b, {0, 0});
    cases.push_back({"overlong varint", signed_raw(b)});
  }
  {
    auto b = header(MessageType::ack);
    append(b, {1, 0});
    append_id(b, make_id(1));
    append(b, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 1});  // 2^64 and up
    append(b, {0, 0});
    cases.push_back({"varint beyond 64 bits", signed_raw(b)});
  }
  {
    auto b = header(MessageType::ack);
    append(b, {1, 0});
    append_id(b, make_id(1));
    append(b, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01});  // 11 bytes
    append(b, {0, 0});
    cases.push_back({"varint longer than 10 bytes", signed_raw(b)});
  }
  cases.push_back({"delta of generation 0", ack2_with_entry({0, 0x01, 1, 1})});
  cases.push_back({"delta with no field", ack2_with_entry({1, 0x00})});
  cases.push_back({"field version 0", ack2_with_entry({1, 0x01, 0, 1})});
  cases.push_back({"unknown status", ack2_with_entry({1, 0x08, 1, 5})});
  cases.push_back(
      {"vnodes beyond u32", ack2_with_entry({1, 0x10, 1, 0x80, 0x80, 0x80, 0x80, 0x10})});
  cases.push_back({"address too long", ack2_with_entry({1, 0x02, 1, 65})});
  cases.push_back({"address not printable", ack2_with_entry({1, 0x02, 1, 2, 'a', 0x00})});
  cases.push_back({"string past the end", ack2_with_entry({1, 0x02, 1, 9, 'a'})});
  cases.push_back({"entry cut short", ack2_with_entry({1, 0xff, 1, 2})});
  {
    auto b = header(MessageType::syn);
    append_id(b, make_id(0x80));
    append_id(b, make_id(0x10));
    append(b, {0, 0});
    cases.push_back({"range with hi < lo", signed_raw(b)});
  }
  {
    auto b = header(MessageType::syn);
    append_id(b, make_id(0x10));
    append_id(b, make_id(0x20));
    append(b, {1, 0});
    append_id(b, make_id(0x30));
    append(b, {1, 1});
    cases.push_back({"digest outside its range", signed_raw(b)});
  }
  {
    auto b = header(MessageType::syn);
    append_id(b, make_id(0x00));
    append_id(b, make_id(0xff));
    append(b, {2, 0});
    append_id(b, make_id(0x30));
    append(b, {1, 1});
    append_id(b, make_id(0x30));
    append(b, {1, 1});
    cases.push_back({"digests not ascending", signed_raw(b)});
  }
  Membership node(config_for(0x55, "10.0.0.1:7946"), {});
  Outbox out;
  for (const auto& [what, bytes] : cases) {
    INFO(what);
    REQUIRE(bytes.size() <= limits::datagram_bytes_max);
    CHECK(decode_reason(bytes) == DropReason::malformed);
    node.on_datagram(0, "10.0.0.2:7946", bytes, out);
  }
  CHECK(node.counters().dropped_malformed == cases.size());
  CHECK(out.empty());
  CHECK(node.member_count() == 1);
}

TEST_CASE("random bytes change nothing", "[gossip][wire]") {
  Rng rng(12345);
  Membership node(config_for(0x55, "10.0.0.1:7946"), {.http_addr = "10.0.0.1:3000"});
  const std::uint64_t ring = node.ring_version();
  Outbox out;
  const int count = 20'000;
  for (int i = 0; i < count; i++) {
    std::vector<std::uint8_t> bytes(rng.uniform(1600));
    for (auto& b : bytes) b = static_cast<std::uint8_t>(rng.next_u64());
    if (i % 2 == 0 && bytes.size() >= 4) {  // a plausible header, to get past the first check
      bytes[0] = wire_magic[0];
      bytes[1] = wire_magic[1];
      bytes[2] = wire_version;
      bytes[3] = static_cast<std::uint8_t>(1 + rng.uniform(3));
    }
    node.on_datagram(i, "10.0.0.2:7946", bytes, out);
  }
  const auto& c = node.counters();
  CHECK(c.datagrams_in == count);
  CHECK(c.dropped_bad_mac + c.dropped_malformed + c.dropped_oversize == count);
  CHECK(out.empty());
  CHECK(node.member_count() == 1);
  CHECK(node.ring_version() == ring);
}

// A structure-aware fuzz: valid datagrams with random bytes changed, then signed again
// so that the body parser (not the MAC) sees them. Nothing may crash or assert.
TEST_CASE("mutated authenticated datagrams never crash the decoder", "[gossip][wire]") {
  Rng rng(777);
  Membership node(config_for(0x55, "10.0.0.1:7946"), {});
  Outbox out;
  std::vector<std::vector<std::uint8_t>> originals = {encode(sample_syn()), encode(sample_ack()),
                                                      encode(sample_ack2())};
  int accepted = 0;
  for (int i = 0; i < 30'000; i++) {
    auto bytes = originals[rng.uniform(originals.size())];
    bytes.resize(bytes.size() - limits::mac_bytes);
    int edits = 1 + static_cast<int>(rng.uniform(4));
    for (int e = 0; e < edits; e++) {
      std::size_t at = limits::header_bytes + rng.uniform(bytes.size() - limits::header_bytes);
      switch (rng.uniform(3)) {
        case 0: bytes[at] = static_cast<std::uint8_t>(rng.next_u64()); break;
        case 1: bytes.erase(bytes.begin() + static_cast<std::ptrdiff_t>(at)); break;
        default:
          bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(at),
                       static_cast<std::uint8_t>(rng.next_u64()));
      }
      if (bytes.size() <= limits::header_bytes) break;
    }
    bytes = signed_raw(bytes);
    if (decode_reason(bytes) == DropReason::none) accepted++;
    node.on_datagram(i, "10.0.0.2:7946", bytes, out);
    out.clear();
  }
  CHECK(node.counters().dropped_bad_mac == 0);
  CHECK(accepted > 0);
  CHECK(node.counters().dropped_malformed > 0);
}

}  // namespace gossip
