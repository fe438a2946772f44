#include "gossip/wire.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <algorithm>
#include <cstring>

#include "common/assert.h"

namespace gossip {
namespace {

// ---- HMAC ------------------------------------------------------------------------------

EVP_MAC* hmac_algorithm() {
  // Fetched once: fetching per datagram would cost more than the MAC itself.
  static EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  ASSERT(mac != nullptr);
  return mac;
}

// ---- Encoding --------------------------------------------------------------------------

class Writer {
 public:
  explicit Writer(std::vector<std::uint8_t>* out) : out_(out) {}
  void u8(std::uint8_t v) { out_->push_back(v); }
  void u16(std::uint16_t v) {
    out_->push_back(static_cast<std::uint8_t>(v));
    out_->push_back(static_cast<std::uint8_t>(v >> 8));
  }
  void varint(std::uint64_t v) {
    while (v >= 0x80) {
      out_->push_back(static_cast<std::uint8_t>(v | 0x80));
      v >>= 7;
    }
    out_->push_back(static_cast<std::uint8_t>(v));
  }
  void bytes(const std::uint8_t* p, std::size_t n) { out_->insert(out_->end(), p, p + n); }
  void id(const NodeId& id) { bytes(id.data(), id.size()); }
  void patch_u16(std::size_t at, std::uint16_t v) {
    (*out_)[at] = static_cast<std::uint8_t>(v);
    (*out_)[at + 1] = static_cast<std::uint8_t>(v >> 8);
  }
  void patch_id(std::size_t at, const NodeId& id) {
    std::memcpy(out_->data() + at, id.data(), id.size());
  }
  std::size_t size() const { return out_->size(); }
  void str(const std::string& s, std::size_t max) {
    ASSERT(is_wire_string(s, max));
    u8(static_cast<std::uint8_t>(s.size()));
    bytes(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
  }

 private:
  std::vector<std::uint8_t>* out_;
};

void write_value(Writer& w, const EndpointValues& v, Field f) {
  switch (f) {
    case Field::heartbeat: return;  // a version, no value
    case Field::gossip_addr: return w.str(v.gossip_addr, limits::addr_bytes_max);
    case Field::http_addr: return w.str(v.app.http_addr, limits::addr_bytes_max);
    case Field::status: return w.u8(static_cast<std::uint8_t>(v.app.status));
    case Field::vnodes: return w.varint(v.app.vnodes);
    case Field::zone: return w.str(v.app.zone, limits::zone_bytes_max);
    case Field::disk_used_bytes: return w.varint(v.app.disk_used_bytes);
    case Field::key_count: return w.varint(v.app.key_count);
  }
  UNREACHABLE();
}

// ---- Decoding --------------------------------------------------------------------------

// Reads a body. Every read checks the bytes left; the first failure sticks, so callers
// check ok() once per entry rather than after every field.
class Reader {
 public:
  explicit Reader(std::span<const std::uint8_t> b) : b_(b) {}
  bool ok() const { return ok_; }
  std::size_t left() const { return b_.size() - pos_; }
  const char* error() const { return error_; }

  bool fail(const char* why) {
    if (ok_) error_ = why;
    ok_ = false;
    return false;
  }
  std::uint8_t u8() {
    if (!need(1)) return 0;
    return b_[pos_++];
  }
  std::uint16_t u16() {
    if (!need(2)) return 0;
    std::uint16_t v = static_cast<std::uint16_t>(b_[pos_] | (b_[pos_ + 1] << 8));
    pos_ += 2;
    return v;
  }
  // LEB128, canonical only: at most 10 bytes, no bits beyond 64, no trailing zero byte.
  std::uint64_t varint() {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < limits::varint_bytes_max; i++) {
      if (!need(1)) return 0;
      std::uint8_t byte = b_[pos_++];
      if (i == limits::varint_bytes_max - 1 && byte > 1) return fail("varint overflows 64 bits"), 0;
      v |= static_cast<std::uint64_t>(byte & 0x7f) << (7 * i);
      if ((byte & 0x80) == 0) {
        if (byte == 0 && i > 0) return fail("varint not canonical"), 0;
        return v;
      }
    }
    return fail("varint longer than 10 bytes"), 0;
  }
  void id(NodeId* out) {
    if (!need(out->size())) return;
    std::memcpy(out->data(), b_.data() + pos_, out->size());
    pos_ += out->size();
  }
  // A length-prefixed string of printable ASCII, at most `max` bytes.
  void str(std::string* out, std::size_t max) {
    std::size_t n = u8();
    if (!ok_) return;
    if (n > max) return void(fail("string too long"));
    if (!need(n)) return;
    std::string_view s(reinterpret_cast<const char*>(b_.data() + pos_), n);
    if (!is_wire_string(s, max)) return void(fail("string not printable ASCII"));
    out->assign(s);
    pos_ += n;
  }

 private:
  bool need(std::size_t n) {
    if (!ok_) return false;
    if (left() < n) return fail("truncated");
    return true;
  }

  std::span<const std::uint8_t> b_;
  std::size_t pos_ = 0;
  bool ok_ = true;
  const char* error_ = "";
};

bool read_digest(Reader& r, Digest* d) {
  r.id(&d->id);
  d->generation = r.varint();
  d->max_version = r.varint();
  return r.ok();
}

bool read_value(Reader& r, Field f, EndpointValues* v) {
  switch (f) {
    case Field::heartbeat: break;  // a version, no value
    case Field::gossip_addr: r.str(&v->gossip_addr, limits::addr_bytes_max); break;
    case Field::http_addr: r.str(&v->app.http_addr, limits::addr_bytes_max); break;
    case Field::status: {
      std::uint8_t s = r.u8();
      if (r.ok() && s > node_status_max) return r.fail("unknown status");
      v->app.status = static_cast<NodeStatus>(s);
      break;
    }
    case Field::vnodes: {
      std::uint64_t n = r.varint();
      if (r.ok() && n > UINT32_MAX) return r.fail("vnodes beyond u32");
      v->app.vnodes = static_cast<std::uint32_t>(n);
      break;
    }
    case Field::zone: r.str(&v->app.zone, limits::zone_bytes_max); break;
    case Field::disk_used_bytes: v->app.disk_used_bytes = r.varint(); break;
    case Field::key_count: v->app.key_count = r.varint(); break;
  }
  return r.ok();
}

// Values of fields absent from the mask keep whatever the reused Delta held.
bool read_delta(Reader& r, Delta* d) {
  d->versions = {};
  r.id(&d->id);
  d->generation = r.varint();
  d->field_mask = r.u8();
  if (!r.ok()) return false;
  if (d->generation == 0) return r.fail("delta with generation 0");
  if (d->field_mask == 0) return r.fail("delta with no field");
  for (std::size_t i = 0; i < field_count; i++) {
    auto f = static_cast<Field>(i);
    if (!d->has(f)) continue;
    d->versions[i] = r.varint();
    if (r.ok() && d->versions[i] == 0) return r.fail("field version 0");
    if (!read_value(r, f, &d->values)) return false;
  }
  return r.ok();
}

// A count is checked against the bytes left before anything is reserved for it.
bool read_count(Reader& r, std::size_t entry_bytes_min, std::size_t* count) {
  *count = r.u16();
  if (!r.ok()) return false;
  if (*count > r.left() / entry_bytes_min) return r.fail("count larger than the datagram");
  return true;
}

bool read_syn(Reader& r, Message* m) {
  r.id(&m->range_lo);
  r.id(&m->range_hi);
  std::size_t count = 0;
  if (!read_count(r, limits::digest_bytes_min, &count)) return false;
  if (id_less(m->range_hi, m->range_lo)) return r.fail("range with hi < lo");
  m->digests.resize(count);
  for (std::size_t i = 0; i < count; i++) {
    if (!read_digest(r, &m->digests[i])) return false;
    const NodeId& id = m->digests[i].id;
    if (id_less(id, m->range_lo) || id_less(m->range_hi, id))
      return r.fail("digest outside its range");
    if (i > 0 && !id_less(m->digests[i - 1].id, id)) return r.fail("digests not ascending");
  }
  return true;
}

bool read_deltas(Reader& r, Message* m) {
  std::size_t count = 0;
  if (!read_count(r, limits::delta_bytes_min, &count)) return false;
  m->deltas.resize(count);
  for (std::size_t i = 0; i < count; i++) {
    if (!read_delta(r, &m->deltas[i])) return false;
  }
  return true;
}

bool read_ack(Reader& r, Message* m) {
  std::size_t count = 0;
  if (!read_count(r, limits::digest_bytes_min, &count)) return false;
  m->digests.resize(count);
  for (std::size_t i = 0; i < count; i++) {
    if (!read_digest(r, &m->digests[i])) return false;
  }
  return read_deltas(r, m);
}

Status drop(DropReason why, DropReason* reason, std::string msg) {
  *reason = why;
  if (why == DropReason::oversize) return {Code::body_too_large, std::move(msg)};
  return Status::invalid(std::move(msg));
}

}  // namespace

bool is_wire_string(std::string_view s, std::size_t max) {
  if (s.size() > max) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c <= 0x7e; });
}

MacKey::MacKey(std::string_view secret) {
  ctx_ = EVP_MAC_CTX_new(hmac_algorithm());
  ASSERT(ctx_ != nullptr);
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end(),
  };
  // A non-null pointer even for an empty secret: a null key would mean "keep the old one".
  static const unsigned char empty = 0;
  const auto* key = secret.empty() ? &empty : reinterpret_cast<const unsigned char*>(secret.data());
  int ok = EVP_MAC_init(ctx_, key, secret.size(), params);
  ASSERT(ok == 1);
}

MacKey::~MacKey() { EVP_MAC_CTX_free(ctx_); }

MacKey::Mac MacKey::sign(std::span<const std::uint8_t> bytes) const {
  Mac mac{};
  // A null key re-initialises the context with the key it already holds.
  int ok = EVP_MAC_init(ctx_, nullptr, 0, nullptr);
  ASSERT(ok == 1);
  ok = EVP_MAC_update(ctx_, bytes.data(), bytes.size());
  ASSERT(ok == 1);
  std::size_t len = 0;
  ok = EVP_MAC_final(ctx_, mac.data(), &len, mac.size());
  ASSERT(ok == 1);
  ASSERT(len == mac.size());
  return mac;
}

bool MacKey::verify(std::span<const std::uint8_t> bytes, std::span<const std::uint8_t> mac) const {
  if (mac.size() != limits::mac_bytes) return false;
  Mac expected = sign(bytes);
  return CRYPTO_memcmp(expected.data(), mac.data(), mac.size()) == 0;
}

// ---- DatagramBuilder ---------------------------------------------------------------------

namespace {
// Offsets in the frame and in the bodies (see WIRE_FORMAT.md).
constexpr std::size_t syn_range_at = limits::header_bytes;
constexpr std::size_t syn_count_at = syn_range_at + 2 * limits::node_id_bytes;
constexpr std::size_t ack_requests_count_at = limits::header_bytes;
constexpr std::size_t ack2_deltas_count_at = limits::header_bytes;
}  // namespace

DatagramBuilder::DatagramBuilder(MessageType type, const NodeId& sender,
                                 std::vector<std::uint8_t>* out)
    : type_(type), out_(out) {
  out_->clear();
  out_->reserve(limits::datagram_bytes_max);
  Writer w(out_);
  w.bytes(wire_magic, sizeof wire_magic);
  w.u8(wire_version);
  w.u8(static_cast<std::uint8_t>(type));
  w.id(sender);
  switch (type) {
    case MessageType::syn:
      w.id(NodeId{});  // range lo and hi, patched by finish()
      w.id(NodeId{});
      w.u16(0);
      break;
    case MessageType::ack: w.u16(0); break;  // requests; the delta count follows them
    case MessageType::ack2:
      w.u16(0);
      deltas_count_at_ = ack2_deltas_count_at;
      break;
  }
}

bool DatagramBuilder::fits(std::size_t mark) {
  // An ACK without deltas yet still needs its 2-byte delta count.
  std::size_t pending =
      type_ == MessageType::ack && deltas_count_at_ == 0 ? limits::count_bytes : 0;
  if (out_->size() + pending + limits::mac_bytes <= limits::datagram_bytes_max) return true;
  out_->resize(mark);
  return false;
}

bool DatagramBuilder::add_digest(const Digest& d) {
  ASSERT(type_ == MessageType::syn || type_ == MessageType::ack);
  ASSERT(deltas_count_at_ == 0);
  if (type_ == MessageType::syn && digests_ > 0) ASSERT(id_less(last_digest_, d.id));
  std::size_t mark = out_->size();
  Writer w(out_);
  w.id(d.id);
  w.varint(d.generation);
  w.varint(d.max_version);
  if (!fits(mark)) return false;
  digests_++;
  last_digest_ = d.id;
  return true;
}

bool DatagramBuilder::add_delta(const NodeId& id, std::uint64_t generation, std::uint8_t mask,
                                const std::array<std::uint64_t, field_count>& versions,
                                const EndpointValues& values) {
  ASSERT(type_ == MessageType::ack || type_ == MessageType::ack2);
  ASSERT(mask != 0);
  ASSERT(generation >= 1);
  std::size_t mark = out_->size();
  Writer w(out_);
  if (deltas_count_at_ == 0) {  // the first delta of an ACK: its count goes here
    deltas_count_at_ = out_->size();
    w.u16(0);
  }
  w.id(id);
  w.varint(generation);
  w.u8(mask);
  for (std::size_t i = 0; i < field_count; i++) {
    auto f = static_cast<Field>(i);
    if ((mask & field_bit(f)) == 0) continue;
    ASSERT(versions[i] >= 1);
    w.varint(versions[i]);
    write_value(w, values, f);
  }
  if (!fits(mark)) {
    if (mark <= deltas_count_at_) deltas_count_at_ = 0;
    return false;
  }
  deltas_++;
  return true;
}

void DatagramBuilder::finish(const MacKey& key, const NodeId& range_lo, const NodeId& range_hi) {
  Writer w(out_);
  switch (type_) {
    case MessageType::syn:
      ASSERT(!id_less(range_hi, range_lo));
      if (digests_ > 0) ASSERT(!id_less(range_hi, last_digest_));
      w.patch_id(syn_range_at, range_lo);
      w.patch_id(syn_range_at + limits::node_id_bytes, range_hi);
      w.patch_u16(syn_count_at, static_cast<std::uint16_t>(digests_));
      break;
    case MessageType::ack:
      w.patch_u16(ack_requests_count_at, static_cast<std::uint16_t>(digests_));
      if (deltas_count_at_ == 0) {
        w.u16(0);
      } else {
        w.patch_u16(deltas_count_at_, static_cast<std::uint16_t>(deltas_));
      }
      break;
    case MessageType::ack2:
      w.patch_u16(deltas_count_at_, static_cast<std::uint16_t>(deltas_));
      break;
  }
  ASSERT(out_->size() + limits::mac_bytes <= limits::datagram_bytes_max);
  MacKey::Mac mac = key.sign(*out_);
  w.bytes(mac.data(), mac.size());
}

void encode_datagram(const Message& m, const MacKey& key, std::vector<std::uint8_t>* out) {
  DatagramBuilder b(m.type, m.sender, out);
  if (m.type == MessageType::syn) ASSERT(m.deltas.empty());
  if (m.type == MessageType::ack2) ASSERT(m.digests.empty());
  for (const Digest& d : m.digests) {
    bool ok = b.add_digest(d);
    ASSERT(ok);
  }
  for (const Delta& d : m.deltas) {
    bool ok = b.add_delta(d);
    ASSERT(ok);
  }
  b.finish(key, m.range_lo, m.range_hi);
}

Status decode_datagram(std::span<const std::uint8_t> bytes, const MacKey& key, Message* out,
                       DropReason* reason) {
  *reason = DropReason::none;
  if (bytes.size() > limits::datagram_bytes_max) {
    return drop(DropReason::oversize, reason, "datagram longer than datagram_bytes_max");
  }
  if (bytes.size() < limits::header_bytes + limits::mac_bytes) {
    return drop(DropReason::malformed, reason, "datagram shorter than its frame");
  }
  // The MAC comes first: nothing about an unauthenticated datagram is looked at.
  std::size_t signed_bytes = bytes.size() - limits::mac_bytes;
  if (!key.verify(bytes.first(signed_bytes), bytes.subspan(signed_bytes))) {
    return drop(DropReason::bad_mac, reason, "bad MAC");
  }
  if (std::memcmp(bytes.data(), wire_magic, sizeof wire_magic) != 0) {
    return drop(DropReason::malformed, reason, "bad magic");
  }
  if (bytes[limits::magic_bytes] != wire_version) {
    return drop(DropReason::bad_version, reason, "unknown wire version");
  }
  std::uint8_t type = bytes[limits::magic_bytes + limits::version_bytes];
  if (type < static_cast<std::uint8_t>(MessageType::syn) ||
      type > static_cast<std::uint8_t>(MessageType::ack2)) {
    return drop(DropReason::malformed, reason, "unknown message type");
  }
  out->type = static_cast<MessageType>(type);
  std::memcpy(out->sender.data(), bytes.data() + limits::header_bytes - limits::node_id_bytes,
              limits::node_id_bytes);
  out->range_lo = {};
  out->range_hi = {};
  out->digests.clear();
  out->deltas.clear();

  Reader r(bytes.subspan(limits::header_bytes, signed_bytes - limits::header_bytes));
  bool ok = false;
  switch (out->type) {
    case MessageType::syn: ok = read_syn(r, out); break;
    case MessageType::ack: ok = read_ack(r, out); break;
    case MessageType::ack2: ok = read_deltas(r, out); break;
  }
  if (ok && r.left() != 0) r.fail("trailing bytes after the body");
  if (!r.ok()) return drop(DropReason::malformed, reason, std::string("malformed: ") + r.error());
  return Status::ok();
}

Status decode_datagram(std::span<const std::uint8_t> bytes, std::string_view secret, Message* out,
                       DropReason* reason) {
  MacKey key(secret);
  return decode_datagram(bytes, key, out, reason);
}

}  // namespace gossip
