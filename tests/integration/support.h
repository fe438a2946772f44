// Helpers for tests that run the real `ringstore` binary as a child process and talk to
// it over HTTP: the process itself (NodeProcess), a libcurl client (request / perform),
// a raw TCP client for byte-exact wire tests (RawSocket), and hashing and data
// generators. Every wait has a deadline: a misbehaving node fails a test, never hangs it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace itest {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

// Polls `cond` every `poll` until it holds or `deadline_s` passes; returns the seconds it
// took, or -1.
template <typename F>
double wait_for(F cond, double deadline_s, Millis poll = Millis(100)) {
  auto t0 = Clock::now();
  while (std::chrono::duration<double>(Clock::now() - t0).count() < deadline_s) {
    if (cond()) return std::chrono::duration<double>(Clock::now() - t0).count();
    std::this_thread::sleep_for(poll);
  }
  return -1;
}

// Absolute path of the built binary (RINGSTORE_BINARY).
const char* binary_path();

// The X-Ringstore-Auth header line that /_/internal requires under `secret`: HMAC-SHA256
// of a fixed label, in hex.
std::string internal_auth_header(const std::string& secret);

// NodeOptions::env that runs a node under libfaketime (Debian's faketime) with its wall
// clock moved by `offset` ("-30s", "+30s"); its monotonic clock is left alone.
std::vector<std::string> faketime_env(const std::string& offset);

// ---- the node process ----

struct NodeOptions {
  int disks = 1;                        // --disk ROOT/diskN for each
  std::vector<std::string> extra_args;  // e.g. {"--body-max-bytes", "1000"}
  std::vector<std::string> env;         // "NAME=value" added to the child's environment
  // A node root (NodeProcess::root()) whose data/ and disk*/ are copied into this one's
  // before the start: a copied data dir, as an operator might make one by mistake.
  std::string copy_from;
  Millis start_deadline = 10s;          // until the "listening" line
};

// One `ringstore serve` child on 127.0.0.1:0 with its own temp directory
// (/tmp/ringstore-it.XXXXXX holding data/ and disk0/...). The destructor SIGKILLs the
// child if it still runs and removes the directory.
class NodeProcess {
 public:
  explicit NodeProcess(NodeOptions options = {});
  ~NodeProcess();
  NodeProcess(const NodeProcess&) = delete;
  NodeProcess& operator=(const NodeProcess&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  std::string url() const;                      // "http://127.0.0.1:PORT"
  std::string url(const std::string& path) const;  // url() + "/" + path (path as given)
  const std::string& root() const { return root_; }
  const std::string& data_dir() const { return data_dir_; }
  const std::vector<std::string>& disks() const { return disks_; }
  // What the node wrote to stderr so far (its log), for failure messages.
  std::string log() const;

  // Sends SIGTERM and waits for the exit. Returns the exit code (0..255), 128+signal if
  // it died of a signal, or -1 if it had not exited by the deadline (then it is killed).
  int terminate(Millis deadline = 20s);
  void signal(int signo);          // just send it
  int wait_exit(Millis deadline);  // as terminate() after the signal
  void kill9();                    // SIGKILL and reap
  // Starts the binary again on the same directories (a new port). REQUIRES: not running.
  void restart();
  // VmRSS of the child in bytes from /proc/PID/status; -1 if unreadable.
  long long rss_bytes() const;

 private:
  void start();
  NodeOptions options_;
  std::string root_, data_dir_, log_path_;
  std::vector<std::string> disks_;
  pid_t pid_ = -1;
  int port_ = 0;
  int stdout_fd_ = -1;
};

// Runs `ringstore ARGS...` to completion (deadline-bound). stdout captured.
struct RunResult {
  int exit_code = -1;  // as NodeProcess::terminate
  std::string out;
  std::string err;
};
RunResult run_binary(const std::vector<std::string>& args, Millis deadline = 60s);
struct RunOptions {
  std::optional<std::string> input;  // the child's stdin, through a pipe; unset: /dev/null
  std::vector<std::string> env;      // "NAME=value" added to the child's environment
  Millis deadline = 60s;
};
RunResult run_binary(const std::vector<std::string>& args, const RunOptions& o);

// Names of the regular files under `dir` (recursively), relative to it.
std::vector<std::string> files_under(const std::string& dir);

// ---- HTTP with libcurl ----

struct Response {
  long status = 0;  // 0 when the transfer failed (see error)
  std::map<std::string, std::string> headers;  // lower-case names; the final response's
  std::vector<long> statuses;  // every status line seen, interim (100) ones included
  std::string body;
  std::string error;  // curl's message when the transfer failed
  double seconds = 0;
  std::string header(const std::string& lower_name) const;
};

struct Request {
  std::string method = "GET";
  std::string url;
  std::string body;                  // sent when non-empty (and no reader)
  std::vector<std::string> headers;  // "Name: value"
  // Streaming upload: called to fill `buf` (at most n bytes); returns bytes written,
  // 0 at the end. With upload_size unset, the body goes chunked.
  std::function<std::size_t(char* buf, std::size_t n)> reader;
  std::optional<std::uint64_t> upload_size;
  // Streaming download: the body goes here instead of Response::body.
  std::function<void(const char* data, std::size_t n)> writer;
  bool force_upload = false;  // PUT through curl's upload path even with an empty body
  long timeout_ms = 15'000;
};

Response perform(const Request& r);
Response request(const std::string& method, const std::string& url, const std::string& body = "",
                 const std::vector<std::string>& headers = {}, long timeout_ms = 15'000);

// Percent-encodes every byte outside [A-Za-z0-9-._~/].
std::string url_encode(const std::string& s, bool keep_slash = true);

// ---- raw TCP ----

struct RawResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

class RawSocket {
 public:
  explicit RawSocket(int port);  // connects (3 s deadline); see connected()
  ~RawSocket();
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;
  bool connected() const { return fd_ >= 0; }
  int connect_errno() const { return connect_errno_; }
  bool send_all(const std::string& bytes, Millis deadline = 5s);
  // One response (Content-Length or no body for 1xx/204/304 and HEAD); nullopt on EOF,
  // error or deadline. Bytes after it are kept for the next call.
  std::optional<RawResponse> read_response(Millis deadline = 5s, bool head = false);
  // Reads and drops until the peer closes (EOF or reset): true, or false at the deadline.
  bool wait_closed(Millis deadline);
  const std::string& buffered() const { return buf_; }
  void close();

 private:
  // Appends what arrives within `deadline` of now; 0 on EOF/reset, -1 on timeout.
  int read_some(Clock::time_point until);
  int fd_ = -1;
  int connect_errno_ = 0;
  std::string buf_;
};

// ---- data ----

std::string md5_hex(const std::string& data);
// The ETag of a value: its MD5 in hex, quoted.
inline std::string quoted_md5(const std::string& body) { return "\"" + md5_hex(body) + "\""; }
std::string sha256_hex_of(const std::string& data);

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, std::size_t n);
  std::string hex();  // finishes

 private:
  void* ctx_;
};

// A deterministic byte stream (splitmix64), fast enough to feed hundreds of MiB.
class Prng {
 public:
  explicit Prng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next();
  void fill(char* out, std::size_t n);
  std::string bytes(std::size_t n);

 private:
  std::uint64_t state_;
  std::uint64_t spare_ = 0;
  int spare_bytes_ = 0;
};

// Nodes of one cluster on free ports; every node after the first has the first as seed.
struct NodeGroup {
  std::vector<std::unique_ptr<NodeProcess>> nodes;

  NodeGroup(int n, const NodeOptions& o);
  // Starts one more node with `o` (plus --seeds of the first node, if there is one).
  NodeProcess& add(NodeOptions o);
  // Node i's /_/status; null when it does not answer 200 within 3 s.
  nlohmann::json status(std::size_t i);
  // Every running node sees `alive` members alive and `dead` down, the live ones normal
  // (a member that joins owns nothing yet: a test's keys must land on normal ones).
  bool agrees(std::size_t alive, std::size_t dead);
  // Every running node sees exactly `normal` members alive and normal (others may be
  // left, removed or down), and none is running a transfer: a join or leave is over.
  bool settled(std::size_t normal);
  // Every replica of `key` reports `version` (null: none holds it), tombstone as given,
  // and there are `copies` of them. Asked through the first running node's /_/locate,
  // which asks each replica for its version and repairs nothing.
  bool replicas_hold(const std::string& key, const nlohmann::json& version, bool tombstone,
                     std::size_t copies);
  // The sum over the running nodes that answer of status[field], or status[section][field].
  std::uint64_t sum(const char* field, const char* section = nullptr);
  // Waits (up to `timeout_s`) until every running node has written out its pending small
  // files (a sync round every --sync-period-ms does it), so that a test can find or damage
  // them on disk. False at the deadline.
  bool written_out(double timeout_s = 10);
};

}  // namespace itest
