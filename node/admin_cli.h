// The membership commands of the `ringstore` binary: `leave` asks a node to stream its
// ranges to their next owners and waits until it is `left`; `remove` asks any live node
// to retire a dead member. Both talk to /_/internal with the cluster secret, over a
// plain blocking socket with a deadline per exchange. Each returns the process's exit
// code and prints one line per error on stderr. The HTTP exchange here is also what
// the client commands (client_cli.h) stream values through.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>

#include "common/status.h"

namespace node {

// One HTTP/1.1 request with `Connection: close` over a blocking socket, its response
// parsed by llhttp (Content-Length, chunked, or to EOF). Nothing is held whole unless
// asked: a request body streams from `body_fd`, a 2xx response body can stream to
// `body_sink`. Each connect, send and read may stall at most `stall_ms`, so a dead or
// wedged node ends the exchange instead of hanging it.
struct ClientRequest {
  std::string method = "GET";
  std::string target;   // already percent-encoded
  std::string headers;  // extra lines, each ending in \r\n
  int body_fd = -1;     // not owned; read until body_length bytes, or EOF when chunked
  std::optional<std::uint64_t> body_length;  // Content-Length; unset with a body_fd: chunked
  bool head = false;    // a HEAD: the response carries no body whatever its headers say
  // Receives a 2xx response's body as it arrives; a non-ok Status aborts the exchange.
  // Other statuses (and every body when unset) collect into Reply::body.
  std::function<Status(const char*, std::size_t)> body_sink;
  std::function<void(std::uint64_t bytes)> on_body_sent;  // request body progress
  std::uint32_t stall_ms = 5'000;
};

struct Reply {
  int status = 0;
  std::unordered_map<std::string, std::string> headers;  // lower-case names
  std::string body;  // collected bodies only; trailing newlines dropped
  std::uint64_t body_bytes = 0;  // every body byte received, streamed or collected
  std::optional<std::uint64_t> content_length;
  const std::string* header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? nullptr : &it->second;
  }
};

// Not ok (a one-line message) when there is no complete answer: a bad address, no
// connection, a stall, a body cut short or a sink error. An answer of any status is ok.
Status exchange(const std::string& addr, const ClientRequest& req, Reply* reply);

// The exchange above with an empty body and a 5 s stall limit. `auth` (the
// X-Ringstore-Auth value) may be empty. False with a one-line *error when there is no
// answer.
bool exchange(const std::string& addr, const std::string& method, const std::string& target,
              const std::string& auth, Reply* reply, std::string* error);

// The cluster secret as `serve` takes it: from `secret_file` when given (trailing
// whitespace dropped), else RINGSTORE_SECRET, else empty (nodes run with --insecure).
bool load_secret(const std::string& secret_file, std::string* secret, std::string* error);

// REQUIRES: nothing; a bad address or an unreachable node is an error (exit 1).
int leave_command(const std::string& node_addr, const std::string& secret,
                  unsigned timeout_s);
int remove_command(const std::string& node_id_hex, const std::string& via_addr,
                   const std::string& secret);

}  // namespace node
