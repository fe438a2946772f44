// The client commands of the `ringstore` binary: put, get, rm, ls, ttl and locate, each
// one or a few HTTP exchanges (admin_cli.h) with one node of the cluster, which
// coordinates them. Values stream between the socket and the file, stdin or stdout in
// chunks, so a 5 GiB value takes no more memory than a small one. Each command returns
// the process's exit code (ClientExit) and prints at most one line per error on stderr,
// "ringstore CMD: reason".
// Thread: the main thread; everything blocks, each read or write at most
// client_stall_ms without progress.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace node {

// Exit codes for scripts. 2 is also what CLI11 returns for a usage error.
enum ClientExit : int {
  exit_ok = 0,
  exit_error = 1,         // node unreachable or stalled, bad or cut answer, 5xx, local I/O,
                          // a body whose length or MD5 does not match its headers
  exit_usage = 2,         // bad arguments, a malformed --node
  exit_not_found = 3,     // 404 (get, rm, ttl); locate: no replica holds a live version
  exit_client_error = 4,  // any other 4xx: 400 bad key, 413 too large, 416, ...
};

// A node that stops moving bytes for this long is given up on (exit 1). 30 s covers a
// node busy fsyncing a large value; a value of any size keeps moving well within it.
inline constexpr std::uint32_t client_stall_ms = 30'000;
// Values below this size finish too fast for a progress bar to mean anything.
inline constexpr std::uint64_t progress_bytes_min = 1u << 20;
// Keys asked for per listing page: the server's default; its maximum is 10,000.
inline constexpr std::uint32_t list_page_keys = 1'000;

struct ClientOptions {
  std::string node = "127.0.0.1:3000";  // HOST:PORT, IPv4 or localhost
};

struct PutOptions {
  std::optional<std::uint64_t> ttl_s;  // sent as X-Ringstore-TTL
  std::string content_type;            // empty: the node's default
  // Headers the node stores with the value (X-Ringstore-Meta-*, Cache-Control, ...; see
  // node/attrs.h), sent as they are: name, value.
  std::vector<std::pair<std::string, std::string>> stored_headers;
};

// `file` "-" is stdin. A regular file goes with Content-Length, anything else chunked.
int put_command(const ClientOptions& o, const std::string& key, const std::string& file,
                const PutOptions& p);
// `file` empty or "-" is stdout; otherwise a temp file beside it is renamed over it once
// the whole body arrived with the right length and MD5.
int get_command(const ClientOptions& o, const std::string& key, const std::string& file);
int rm_command(const ClientOptions& o, const std::string& key);
// Every key under `prefix`, one per line, following `next` until it is "".
// REQUIRES: 1 <= page_keys <= 10,000.
int ls_command(const ClientOptions& o, const std::string& prefix, std::uint32_t page_keys);
// Without `seconds`: prints X-Ringstore-Expires, or "no expiry". With it: rewrites the
// value with X-Ringstore-TTL and the Content-Type and stored headers it had (a GET and a
// PUT, so a new version).
int ttl_command(const ClientOptions& o, const std::string& key, std::optional<std::uint64_t> seconds);
int locate_command(const ClientOptions& o, const std::string& key);

}  // namespace node
