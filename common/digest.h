// Digest algorithms fetched once per process. Passing EVP_sha1() and friends to
// EVP_Digest or EVP_DigestInit_ex makes OpenSSL 3 look the algorithm up again on every
// call (the global method store's lock and a few allocations): for a short key that
// costs about three times the hashing itself, and every write hashes its key several
// times on two threads.
#pragma once

#include <openssl/evp.h>

#include "common/assert.h"

namespace common {

inline const EVP_MD* fetch_digest(const char* name) {
  EVP_MD* md = EVP_MD_fetch(nullptr, name, nullptr);
  ASSERT(md != nullptr);
  return md;
}

inline const EVP_MD* sha1_digest() {
  static const EVP_MD* md = fetch_digest("SHA1");
  return md;
}

inline const EVP_MD* md5_digest() {
  static const EVP_MD* md = fetch_digest("MD5");
  return md;
}

inline const EVP_MD* sha256_digest() {
  static const EVP_MD* md = fetch_digest("SHA256");
  return md;
}

}  // namespace common
