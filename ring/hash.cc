#include "ring/hash.h"

#include <openssl/evp.h>

#include "common/assert.h"
#include "common/digest.h"

namespace ring {

Sha1Digest sha1(std::string_view bytes) {
  Sha1Digest out{};
  unsigned int len = 0;
  int ok = EVP_Digest(bytes.data(), bytes.size(), out.data(), &len, common::sha1_digest(), nullptr);
  ASSERT(ok == 1);
  ASSERT(len == out.size());
  return out;
}

std::uint64_t position_of(const Sha1Digest& digest) {
  std::uint64_t p = 0;
  for (int i = 0; i < 8; i++) p = (p << 8) | digest[i];
  return p;
}

std::uint64_t key_position(std::string_view key) { return position_of(sha1(key)); }

}  // namespace ring
