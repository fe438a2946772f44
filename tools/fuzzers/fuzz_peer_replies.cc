// libFuzzer target for the parsers of other nodes' replies: a member's listing page
// (decode_list_answer, node/listing.h, and the merge of pages), a member's range listing
// during a transfer (parse_range_listing, node/transfers.h) and the three answers of an
// anti-entropy comparison (node/anti_entropy.h: the summary page, one group's arcs, the
// key list). A peer's reply is
// input like any other: no reply may crash the node, and what a parser accepts must hold
// the invariants its callers rely on.
//
// Input: byte 0 modulo 5 picks the parser.
//   0, listing page: then fields separated by '\n': prefix, start, limit (decimal; taken
//                    modulo 1,001), and the rest is the body.
//   1, range listing: the rest is the body.
//   2, key list: 16 bytes, the range's ends (from, to; little-endian u64, swapped when
//                from > to), then the body.
//   3, summary page: 4 bytes shared arcs (little-endian, modulo 100,000), 4 bytes the
//                first group asked for (modulo the group count + 1), then the body.
//   4, one group's arcs: 1 byte n (modulo 65), 1 byte the gap between the arcs asked for
//                (plus 1), then the body.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "node/anti_entropy.h"
#include "node/listing.h"
#include "node/request.h"
#include "node/transfers.h"
#include "tools/fuzzers/fuzz_support.h"

namespace {

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// Splits off the text before the next '\n' (all of it when there is none).
std::string_view take_field(std::string_view* in) {
  std::size_t nl = in->find('\n');
  std::string_view f = in->substr(0, nl);
  *in = nl == std::string_view::npos ? std::string_view() : in->substr(nl + 1);
  return f;
}

void listing_page(std::string_view in) {
  std::string_view prefix = take_field(&in);
  std::string_view start = take_field(&in);
  std::string_view limit_text = take_field(&in);
  std::size_t limit = 0;
  for (char c : limit_text) limit = (limit * 10 + static_cast<unsigned char>(c)) % 1001;
  node::ListAnswer a;
  if (!node::decode_list_answer(in, prefix, start, limit, &a).is_ok()) return;
  // What the merge and the pager rely on.
  CHECK(a.rows.size() <= limit);
  std::string_view from = start > prefix ? start : prefix;
  for (std::size_t i = 0; i < a.rows.size(); i++) {
    CHECK(starts_with(a.rows[i].key, prefix));
    CHECK(a.rows[i].key >= from);
    if (i > 0) CHECK(a.rows[i - 1].key < a.rows[i].key);
  }
  if (!a.next.empty()) {
    CHECK(starts_with(a.next, prefix));
    CHECK(a.rows.empty() ? a.next >= from : a.next > a.rows.back().key);
  }
  // What a node sends, it reads back as it was.
  node::ListAnswer back;
  CHECK(node::decode_list_answer(node::encode_list_answer(a), prefix, start, limit, &back).is_ok());
  CHECK(back.rows.size() == a.rows.size() && back.next == a.next);
  for (std::size_t i = 0; i < a.rows.size(); i++) {
    CHECK(back.rows[i].key == a.rows[i].key);
    CHECK(back.rows[i].version == a.rows[i].version);
    CHECK(back.rows[i].tombstone == a.rows[i].tombstone);
  }
  // Two members with the same page: each key once, in order, within the limit, and a
  // next page that starts after this one.
  for (node::ListMode mode : {node::ListMode::live, node::ListMode::unlinked}) {
    std::vector<std::string> keys;
    std::string next;
    node::merge_list_answers({&a, &back}, limit, &keys, &next, mode, 0);
    CHECK(keys.size() <= limit);
    for (std::size_t i = 1; i < keys.size(); i++) CHECK(keys[i - 1] < keys[i]);
    if (!next.empty() && !keys.empty()) CHECK(next > keys.back());
  }
}

void range_listing(std::string_view in) {
  node::RangeListing r;
  if (!node::parse_range_listing(std::string(in), &r)) return;
  // Every entry kept names a key the node could store.
  for (const auto& e : r.entries) CHECK(node::validate_key(e.key).is_ok());
}

void key_list(std::string_view in) {
  if (in.size() < 16) return;
  std::uint64_t from = fuzz::get_le(in.data(), 8), to = fuzz::get_le(in.data() + 8, 8);
  if (from > to) std::swap(from, to);
  std::vector<node::AeEntry> entries;
  std::uint64_t covered = 0;
  if (!node::parse_keys_page(in.substr(16), from, to, &entries, &covered)) return;
  // The merge compares [from, covered] and goes on from covered + 1.
  CHECK(covered >= from && covered <= to);
  for (const auto& e : entries) {
    CHECK(node::validate_key(e.key).is_ok());
    CHECK(e.position >= from && e.position <= covered);
  }
}

void summary_page(std::string_view in) {
  if (in.size() < 8) return;
  const std::size_t shared = fuzz::get_le(in.data(), 4) % 100'000;
  const std::size_t groups_total = node::limits::ae_groups_of(shared);
  const std::size_t start = fuzz::get_le(in.data() + 4, 4) % (groups_total + 1);
  std::vector<blobstore::Leaf> groups;
  std::size_t next = 0;
  if (!node::parse_summary_answer(in.substr(8), shared, start, &groups, &next)) return;
  // The caller indexes its own groups start .. start + size - 1, then pages from next.
  CHECK(start + groups.size() <= groups_total);
  CHECK(next == 0 || (next > start && next < groups_total));
}

void group_arcs(std::string_view in) {
  if (in.size() < 2) return;
  const std::size_t n = static_cast<unsigned char>(in[0]) % 65;
  const std::size_t gap = static_cast<unsigned char>(in[1]) + 1u;
  std::vector<std::size_t> arcs;
  for (std::size_t i = 0; i < n; i++) arcs.push_back(i * gap);
  std::vector<blobstore::Leaf> leaves;
  if (!node::parse_arcs_answer(in.substr(2), arcs.data(), n, &leaves)) return;
  CHECK(leaves.size() == n);  // one leaf per arc asked for, in that order
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 5) {
    case 0: listing_page(in); break;
    case 1: range_listing(in); break;
    case 2: key_list(in); break;
    case 3: summary_page(in); break;
    default: group_arcs(in); break;
  }
  return 0;
}
