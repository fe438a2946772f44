// The membership commands of the `ringstore` binary: `leave` asks a node to stream its
// ranges to their next owners and waits until it is `left`; `remove` asks any live node
// to retire a dead member. Both talk to /_/internal with the cluster secret, over a
// plain blocking socket with a deadline per exchange. Each returns the process's exit
// code and prints one line per error on stderr.
#pragma once

#include <string>

namespace node {

// One HTTP/1.1 exchange with `Connection: close` and an empty body, over a blocking
// socket with a 5 s deadline for each send and read. `auth` (the X-Ringstore-Auth
// value) may be empty. False with a one-line *error when there is no answer.
struct Reply {
  int status = 0;
  std::string body;  // trailing newlines dropped
};
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
