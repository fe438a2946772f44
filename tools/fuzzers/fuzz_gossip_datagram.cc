// Gossip datagrams from anyone: decode_datagram and Membership::on_datagram must drop
// and count whatever does not decode, and never crash, assert or hang.
// The first input byte picks a mode: odd = the rest is signed with the cluster key
// before it goes in, so the fuzzer reaches the body decoder and the state machine past
// the MAC; even = the bytes go in as they are (the MAC check itself).
#include <cstdint>
#include <vector>

#include "gossip/membership.h"
#include "gossip/wire.h"

namespace {

constexpr char secret[] = "fuzz-secret";

gossip::Membership& membership() {
  static gossip::Membership* m = [] {
    gossip::Config c;
    c.self[0] = 0x42;
    c.self_addr = "127.0.0.1:7000";
    c.generation = 1;
    c.seeds = {"127.0.0.1:7001"};
    c.secret = secret;
    gossip::AppState app;
    app.http_addr = "127.0.0.1:7000";
    app.vnodes = 16;
    return new gossip::Membership(c, app);
  }();
  return *m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  static gossip::MacKey key(secret);
  static std::uint64_t now_ms = 1;
  std::vector<std::uint8_t> bytes(data + 1, data + size);
  if (data[0] & 1) {
    auto mac = key.sign(bytes);
    bytes.insert(bytes.end(), mac.begin(), mac.end());
  }
  gossip::Message m;
  gossip::DropReason reason;
  (void)gossip::decode_datagram(bytes, key, &m, &reason);

  gossip::Membership& ms = membership();
  gossip::Outbox out;
  now_ms += 137;
  ms.on_datagram(now_ms, "127.0.0.1:7001", bytes, out);
  for (const auto& d : out) {
    if (d.bytes.size() > gossip::limits::datagram_bytes_max) __builtin_trap();
  }
  if (data[0] % 16 == 3) {  // now and then a round, so that state built up gets sent
    gossip::Rng rng(now_ms);
    out.clear();
    ms.on_tick(now_ms, rng, out);
    for (const auto& d : out) {
      if (d.bytes.size() > gossip::limits::datagram_bytes_max) __builtin_trap();
    }
  }
  (void)ms.members(now_ms);
  return 0;
}
