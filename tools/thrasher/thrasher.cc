// ringstore-thrash: a verifying load generator for a ringstore cluster, and for another
// HTTP blob store measured beside it (--peer), so that both are driven by one client.
//
// Each worker thread drives the targets over keep-alive connections of its own (W
// workers are W concurrent connections to each target). --op picks what it repeats for
// --duration seconds:
//
//   cycle   (default) one cycle per fresh key:
//               PUT  random value        expect 201 and ETag = MD5(value)
//               GET                      expect 200 with exactly that value
//               DELETE                   expect 204
//               GET                      expect 404 (not with --cycle mkv)
//   put     PUT fresh keys, values of --size random bytes
//   get     first (untimed) the workers PUT --keys values of --size bytes between them,
//           then GET random ones of those keys; every answer must carry the bytes written
//   delete  first (untimed) PUT fresh keys of --size bytes for --duration seconds, then
//           DELETE them, oldest first. Only the DELETEs are timed, so the rate is what a
//           DELETE costs, not a write and a delete. When one worker has deleted every key
//           it wrote, all stop at once (the rate is always measured with all of them
//           running), write more keys, untimed again, and go on deleting: in rounds until
//           --duration seconds of DELETEs were timed (rounds= in the result). A store that
//           deletes much faster than it writes takes longer than 2 x --duration; after
//           delete_rounds_max rounds the run stops short (exhausted=1) and duration_us is
//           the time actually measured.
//
// The requests of a worker go to the targets in turn (worker w sends request j of its run
// to target (w + j) mod N), so with several nodes every read is checked against a write
// coordinated elsewhere. After the timed part, the last keys each worker deleted are read
// again through every target and must be gone (nothing resurrected); with --op put the
// last keys it wrote must read back with their bytes.
//
// The cycle is that of minikeyvalue's tools/thrasher.go (PUT, GET and compare, DELETE)
// with one more GET that checks the delete. `--cycle mkv` drops that GET, which makes
// the cycle minikeyvalue's own, for a like-for-like rate; the deletes are then checked
// only after the timed part. It is written in C++ with blocking sockets, one thread per
// worker, so that the load generator takes little of the CPU it shares with the stores
// (a few tens of microseconds per request).
//
// Redirects: a store may answer with one (minikeyvalue answers every GET of a stored key
// with a 302 to the nginx volume that holds it). A GET follows 301, 302, 307 and 308, a
// PUT or DELETE only 307 and 308 (the two that keep the method and the body), to an
// absolute http://HOST[:PORT]/PATH Location or a /PATH on the same host, at most
// redirect_hops_max hops. A worker keeps a keep-alive connection per host:port. A request
// and its redirects count as one request with one latency; `redirects=` counts the hops
// of the timed requests. ringstore never redirects, so against it nothing changes.
//
// --peer: the targets are another store, held to what any blob store promises rather
// than to ringstore's extras: a PUT may answer 201 or 204, a DELETE 204 or 200, a GET of
// a deleted key 404 or 410, and the ETag is not checked (ringstore's is the MD5 of the
// value; minikeyvalue's PUT answers 201 without one, and the nginx volume its GET
// redirects to sends nginx's own, made of mtime and size). The bytes of every GET are
// checked all the same. minikeyvalue answers exactly 201, 204 and 404.
//
// Keys are thrash/[RUN-ID-]STAMP/..., STAMP made of the time in milliseconds and the pid,
// so two runs never share a key, even against a store that refuses to overwrite one
// (minikeyvalue answers a PUT to an existing key 403).
//
// Failures fall in two classes:
//   errors      the request did not get a usable answer: connection failures,
//               timeouts, 5xx and other unexpected statuses, redirect loops
//   mismatches  the store answered but broke its contract: a GET after an acknowledged
//               PUT returning 404 or other bytes, a GET after an acknowledged DELETE
//               returning 200, a wrong ETag
// After a failure the cycle is abandoned and the worker moves to a new key. A failure
// in the untimed prefill of get or delete skips the timed part.
//
// Prints one line "THRASHRESULT key=value ..." on stdout; the first failures go to
// stderr. Exit status 0 when nothing failed, 1 otherwise, 2 on bad usage.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <strings.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/assert.h"
#include "common/digest.h"
#include "llhttp.h"

namespace {

constexpr int timeout_s = 10;                          // per socket read or write
constexpr std::size_t final_check_per_worker = 20;     // keys re-read after the run
constexpr int max_reported = 20;                       // failure messages printed
constexpr int error_pause_ms = 10;                     // a worker's pause after a failed request
constexpr std::size_t response_bytes_max = 16u << 20;  // a longer answer is an error
constexpr int workers_max = 1024;
// minikeyvalue needs one hop (master to volume); a fourth is a loop or a misconfiguration.
constexpr int redirect_hops_max = 3;
// Connections a worker keeps besides its targets'. minikeyvalue with 3 volumes needs 3;
// past this the oldest is closed, so a store redirecting everywhere cannot exhaust fds.
constexpr std::size_t redirect_endpoints_max = 16;
// --op get holds every value in memory for the checks: at most 1 GiB of them.
constexpr std::size_t get_keys_max = 1'000'000;
constexpr std::uint64_t get_bytes_max = 1ull << 30;
static_assert(get_keys_max * 1024 <= get_bytes_max, "a million 1 KiB values fit");
// --op delete: each round's prefill is sized from the last round's PUT and DELETE rates
// with delete_prefill_margin to spare, so two or three rounds reach --duration; the bound
// ends a run against a store whose DELETEs keep getting faster than its PUTs.
constexpr int delete_rounds_max = 8;
constexpr double delete_prefill_margin = 1.5;
constexpr double delete_prefill_s_min = 0.1;  // below this a round is mostly its ramps
// A later prefill writes for at most this many times --duration: one round's rates can
// mislead on a loaded machine, and a wrong guess should cost a round, not minutes.
constexpr double delete_prefill_duration_max = 4;

using Clock = std::chrono::steady_clock;

// Where a request goes: `host` as written (sent as the Host header), `addr` the IPv4
// address connected to.
struct Endpoint {
  std::string host;
  std::string addr;
  int port = 0;
  bool same_socket(const Endpoint& o) const { return addr == o.addr && port == o.port; }
  std::string name() const { return host + ":" + std::to_string(port); }
};

class Reporter {
 public:
  void report(const std::string& msg) {
    std::lock_guard<std::mutex> l(mu_);
    ++reported_;
    if (reported_ <= max_reported) {
      std::fprintf(stderr, "thrasher: %s\n", msg.c_str());
    } else if (reported_ == max_reported + 1) {
      std::fprintf(stderr, "thrasher: (further failures not shown)\n");
    }
  }

 private:
  std::mutex mu_;
  int reported_ = 0;
};

std::string md5_hex(const std::string& data) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), d, &n, common::md5_digest(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n; ++i) {
    out += hex[d[i] >> 4];
    out += hex[d[i] & 15];
  }
  return out;
}

// HOST[:PORT] with an IPv4 HOST or localhost. localhost is the only name resolved (to
// 127.0.0.1, as minikeyvalue's redirects name its volumes), so no request waits on DNS.
bool parse_host_port(std::string_view s, Endpoint* out) {
  std::string_view host = s, port = "80";
  if (auto colon = s.rfind(':'); colon != std::string_view::npos) {
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  int p = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (host.empty() || ec != std::errc() || end != port.data() + port.size() || p < 1 || p > 65535) {
    return false;
  }
  out->host = std::string(host);
  out->addr = host == "localhost" ? "127.0.0.1" : out->host;
  out->port = p;
  in_addr a{};
  return inet_pton(AF_INET, out->addr.c_str(), &a) == 1;
}

// "http://HOST[:PORT][/PATH]"; PATH is "/" when absent.
bool parse_url(std::string_view url, Endpoint* out, std::string* path) {
  constexpr std::string_view scheme = "http://";
  if (url.substr(0, scheme.size()) != scheme) return false;
  url.remove_prefix(scheme.size());
  auto slash = url.find('/');
  *path = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
  return parse_host_port(url.substr(0, slash), out);
}

struct Response {
  int status = 0;
  std::string etag;
  std::string location;
  std::string body;
  bool keep_alive = false;
};

// One keep-alive HTTP/1.1 connection with blocking I/O and a timeout on every call.
class Connection {
 public:
  explicit Connection(const Endpoint& to) : to_(to) {
    llhttp_settings_init(&settings_);
    settings_.on_header_field = [](llhttp_t* p, const char* at, size_t n) {
      static_cast<Connection*>(p->data)->field_.append(at, n);
      return 0;
    };
    settings_.on_header_value = [](llhttp_t* p, const char* at, size_t n) {
      static_cast<Connection*>(p->data)->value_.append(at, n);
      return 0;
    };
    settings_.on_header_value_complete = [](llhttp_t* p) {
      auto* c = static_cast<Connection*>(p->data);
      if (strcasecmp(c->field_.c_str(), "etag") == 0) c->resp_.etag = c->value_;
      if (strcasecmp(c->field_.c_str(), "location") == 0) c->resp_.location = c->value_;
      c->field_.clear();
      c->value_.clear();
      return 0;
    };
    settings_.on_body = [](llhttp_t* p, const char* at, size_t n) {
      auto* c = static_cast<Connection*>(p->data);
      if (c->resp_.body.size() + n > response_bytes_max) return -1;
      c->resp_.body.append(at, n);
      return 0;
    };
    settings_.on_message_complete = [](llhttp_t* p) {
      auto* c = static_cast<Connection*>(p->data);
      c->done_ = true;
      return static_cast<int>(HPE_PAUSED);
    };
  }
  ~Connection() { close(); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  // Sends one request and reads its response. False with `error` set on failure (the
  // connection is then closed).
  bool call(const std::string& request, Response* out, std::string* error) {
    if (fd_ < 0 && !open(error)) return false;
    if (!send_all(request, error) || !read_response(out, error)) {
      close();
      return false;
    }
    if (!out->keep_alive) close();
    return true;
  }

 private:
  bool open(std::string* error) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return fail(error, "socket");
    timeval tv{timeout_s, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(to_.port));
    ASSERT(inet_pton(AF_INET, to_.addr.c_str(), &addr.sin_addr) == 1);  // parse_host_port
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      fail(error, "connect");
      close();
      return false;
    }
    return true;
  }

  static bool fail(std::string* error, const char* what) {
    *error = std::string(what) + ": " + std::strerror(errno);
    return false;
  }

  bool send_all(const std::string& data, std::string* error) {
    std::size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return fail(error, "send");
      off += static_cast<std::size_t>(n);
    }
    return true;
  }

  bool read_response(Response* out, std::string* error) {
    llhttp_init(&parser_, HTTP_RESPONSE, &settings_);
    parser_.data = this;
    resp_ = Response{};
    field_.clear();
    value_.clear();
    done_ = false;
    char buf[65536];
    while (!done_) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return fail(error, errno == EAGAIN ? "recv (timed out)" : "recv");
      if (n == 0) {
        *error = "connection closed by the server before a complete response";
        return false;
      }
      llhttp_errno_t e = llhttp_execute(&parser_, buf, static_cast<std::size_t>(n));
      if (e == HPE_PAUSED) {
        // A keep-alive answer to a request we sent alone: nothing may follow it.
        if (llhttp_get_error_pos(&parser_) != buf + n) {
          *error = "unexpected bytes after the response";
          return false;
        }
        break;
      }
      if (e != HPE_OK) {
        *error = std::string("bad response: ") + llhttp_errno_name(e);
        return false;
      }
    }
    resp_.status = parser_.status_code;
    resp_.keep_alive = llhttp_should_keep_alive(&parser_) != 0;
    *out = std::move(resp_);
    return true;
  }

  Endpoint to_;
  int fd_ = -1;
  llhttp_t parser_{};
  llhttp_settings_t settings_{};
  Response resp_;
  std::string field_, value_;
  bool done_ = false;
};

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  auto n = static_cast<double>(sorted.size());
  auto i = static_cast<std::int64_t>(std::ceil(p / 100.0 * n)) - 1;
  i = std::clamp<std::int64_t>(i, 0, static_cast<std::int64_t>(sorted.size()) - 1);
  return sorted[static_cast<std::size_t>(i)];
}

enum Kind { put = 0, get = 1, del = 2 };
const char* const kind_name[] = {"PUT", "GET", "DELETE"};

enum class Op { cycle, put, get, del };

// What every worker of the run does; fixed before the first thread starts.
struct Plan {
  Op op = Op::cycle;
  bool check_delete = true;        // --cycle full
  bool peer = false;               // --peer: another store's status codes, no ETag check
  std::size_t max_size = 1024;     // --op cycle: values of 1..max_size bytes
  std::size_t value_bytes = 1024;  // --op put, get, delete: values of exactly this size
  std::size_t get_keys = 1000;     // --op get: keys written in the prefill
  int workers = 16;
  std::string prefix;  // [RUN-ID-]STAMP
  std::vector<Endpoint> targets;
};

// What the workers share besides the plan. `deadline` is set by the main thread before
// it starts a phase's threads (thread creation orders it); get_values[i] is written by
// the one worker that PUTs key i in the prefill and only read after that phase's join.
struct Shared {
  Clock::time_point deadline;
  std::vector<std::string> get_values;
  std::atomic<bool> out_of_keys{false};  // --op delete: a worker deleted all it wrote
};

class Worker {
 public:
  Worker(int index, const Plan& plan, Shared* shared, Reporter* reporter)
      : index_(index),
        plan_(plan),
        shared_(shared),
        reporter_(reporter),
        rng_(std::hash<std::string>{}(plan.prefix + "/" + std::to_string(index))),
        turn_(static_cast<std::size_t>(index)) {
    for (const Endpoint& t : plan_.targets) conns_.push_back(std::make_unique<Connection>(t));
  }

  // The untimed part before the run: --op get writes the values it will read, --op
  // delete the keys it will delete.
  void prefill() {
    if (plan_.op == Op::get) prefill_get();
    if (plan_.op == Op::del) prefill_delete();
  }

  void run() {
    switch (plan_.op) {
      case Op::cycle:
        for (std::uint64_t seq = 0; running(); ++seq) cycle(seq);
        break;
      case Op::put:
        for (std::uint64_t seq = 0; running(); ++seq) put_one(seq);
        break;
      case Op::get:
        while (running()) get_one();
        break;
      case Op::del:
        while (running()) delete_one();
        break;
    }
  }

  // Deleted keys must still be gone, and (--op put) written keys still there, seen
  // through every target.
  void final_check() {
    // Failures are counted and reported where they are found.
    for (std::size_t k = tail(deleted_.size()); k < deleted_.size(); ++k) {
      for (std::size_t n = 0; n < plan_.targets.size(); ++n) {
        gone_checked(deleted_[k], nullptr, n, false,
                     " after the run (its DELETE was acknowledged)");
      }
    }
    for (std::size_t k = tail(written_.size()); k < written_.size(); ++k) {
      const auto& [key, value] = written_[k];
      for (std::size_t n = 0; n < plan_.targets.size(); ++n) {
        get_checked(key, value, n, false, " after the run (its PUT was acknowledged)");
      }
    }
    for (auto& c : conns_) c->close();
    others_.clear();
  }

  std::size_t checked() const {
    return std::min(deleted_.size(), final_check_per_worker) +
           std::min(written_.size(), final_check_per_worker);
  }

  std::vector<double> lat_us, cycle_us, kind_us[3];
  std::uint64_t errors_ = 0, mismatches_ = 0, redirects_ = 0, prefilled_ = 0;

 private:
  static std::size_t tail(std::size_t n) {
    return n > final_check_per_worker ? n - final_check_per_worker : 0;
  }

  bool running() const {
    return Clock::now() < shared_->deadline &&
           !shared_->out_of_keys.load(std::memory_order_relaxed);
  }

  // What the store must answer; --peer widens it to what another store may answer.
  bool put_ok(int status) const { return status == 201 || (plan_.peer && status == 204); }
  bool delete_ok(int status) const { return status == 204 || (plan_.peer && status == 200); }
  bool gone(int status) const { return status == 404 || (plan_.peer && status == 410); }

  static bool follows(Kind kind, int status) {
    if (status == 307 || status == 308) return true;  // method and body kept
    return kind == get && (status == 301 || status == 302);
  }

  std::string random_value(std::size_t n) {
    std::string v(n, '\0');
    for (std::size_t i = 0; i < n; i += 8) {
      std::uint64_t x = rng_();
      std::memcpy(v.data() + i, &x, std::min<std::size_t>(8, n - i));
    }
    return v;
  }

  std::string key_name(std::uint64_t seq) const {
    char name[96];
    std::snprintf(name, sizeof name, "thrash/%s/w%02d/%08llu", plan_.prefix.c_str(), index_,
                  static_cast<unsigned long long>(seq));
    return name;
  }

  std::string get_key(std::size_t i) const {
    char name[96];
    std::snprintf(name, sizeof name, "thrash/%s/get/%07zu", plan_.prefix.c_str(), i);
    return name;
  }

  static std::string request_text(Kind kind, const Endpoint& to, const std::string& path,
                                  const std::string* body) {
    std::string req =
        std::string(kind_name[kind]) + " " + path + " HTTP/1.1\r\nHost: " + to.name() + "\r\n";
    if (body == nullptr) return req + "\r\n";
    req += "Content-Type: application/octet-stream\r\nContent-Length: " +
           std::to_string(body->size()) + "\r\n\r\n";
    return req + *body;
  }

  // The keep-alive connection to `to`: a target's, or one of the others a redirect led to.
  Connection* connection_to(const Endpoint& to) {
    for (std::size_t i = 0; i < plan_.targets.size(); ++i) {
      if (plan_.targets[i].same_socket(to)) return conns_[i].get();
    }
    for (auto& [e, c] : others_) {
      if (e.same_socket(to)) return c.get();
    }
    if (others_.size() == redirect_endpoints_max) others_.erase(others_.begin());  // oldest
    others_.emplace_back(to, std::make_unique<Connection>(to));
    return others_.back().second.get();
  }

  // Sends one request through target `node` and follows the redirects it is answered
  // with. False with `error` set when no usable answer came; `hops` counts redirects.
  bool exchange(Kind kind, const std::string& key, const std::string* body, std::size_t node,
                Response* r, std::string* error, int* hops) {
    Endpoint to = plan_.targets[node];
    std::string path = "/" + key;
    for (*hops = 0;; ++*hops) {
      if (!connection_to(to)->call(request_text(kind, to, path, body), r, error)) {
        if (*hops > 0) *error = "redirected to http://" + to.name() + path + ": " + *error;
        return false;
      }
      if (!follows(kind, r->status)) return true;
      const std::string location = r->location;
      if (*hops == redirect_hops_max) {
        *error = "more than " + std::to_string(redirect_hops_max) + " redirects, the last to " +
                 location.substr(0, 200);
        return false;
      }
      bool usable = true;
      if (!location.empty() && location[0] == '/') {
        path = location;  // the same host
      } else {
        usable = parse_url(location, &to, &path);
      }
      if (!usable) {
        *error = "a " + std::to_string(r->status) + " redirect to an unusable Location '" +
                 location.substr(0, 200) + "'";
        return false;
      }
    }
  }

  // One request and its redirects; false (counted and reported) when it got no usable
  // answer. A timed request adds one latency sample, whatever its number of hops.
  bool call(Kind kind, const std::string& key, const std::string* body, std::size_t node,
            bool timed, Response* r) {
    auto t0 = Clock::now();
    std::string error;
    int hops = 0;
    if (!exchange(kind, key, body, node, r, &error, &hops)) {
      ++errors_;
      reporter_->report(std::string(kind_name[kind]) + " /" + key + via(node) + ": " + error);
      // Do not spin on a store that refuses connections.
      std::this_thread::sleep_for(std::chrono::milliseconds(error_pause_ms));
      return false;
    }
    if (timed) {
      double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
      lat_us.push_back(us);
      kind_us[kind].push_back(us);
      redirects_ += static_cast<std::uint64_t>(hops);
    }
    return true;
  }

  std::size_t next_node() { return turn_++ % plan_.targets.size(); }

  bool unexpected(const char* what, const std::string& key, std::size_t node, const Response& r) {
    ++errors_;
    reporter_->report(std::string(what) + " /" + key + via(node) + ": unexpected status " +
                      std::to_string(r.status) + ": " + r.body.substr(0, 200));
    return false;
  }

  bool mismatch(const std::string& msg) {
    ++mismatches_;
    reporter_->report("MISMATCH " + msg);
    return false;
  }

  static std::string via(std::size_t node) { return " via node " + std::to_string(node + 1); }

  // PUT through the next target; true when acknowledged as the store promises.
  bool put_checked(const std::string& key, const std::string& value, bool timed,
                   std::size_t* node) {
    Response r;
    *node = next_node();
    if (!call(put, key, &value, *node, timed, &r)) return false;
    if (!put_ok(r.status)) return unexpected("PUT", key, *node, r);
    if (plan_.peer) return true;  // another store's ETag is its own business
    const std::string etag = "\"" + md5_hex(value) + "\"";
    if (r.etag != etag) {
      return mismatch("PUT /" + key + via(*node) + ": ETag " + r.etag + ", expected " + etag);
    }
    return true;
  }

  // GET through `node`; true when it answers 200 with exactly `value`. `after` names
  // the write it must see, for the message.
  bool get_checked(const std::string& key, const std::string& value, std::size_t node, bool timed,
                   const std::string& after) {
    Response r;
    if (!call(get, key, nullptr, node, timed, &r)) return false;
    if (r.status == 200 && r.body == value) return true;
    if (r.status == 200) {
      return mismatch("GET /" + key + via(node) + after + ": " + std::to_string(r.body.size()) +
                      " bytes that differ from the " + std::to_string(value.size()) + " written");
    }
    if (gone(r.status)) {
      return mismatch("GET /" + key + via(node) + after + " answered " + std::to_string(r.status));
    }
    return unexpected("GET", key, node, r);
  }

  // GET through `node`; true when the key is gone. `value`, when known, names what came
  // back.
  bool gone_checked(const std::string& key, const std::string* value, std::size_t node, bool timed,
                    const std::string& after) {
    Response r;
    if (!call(get, key, nullptr, node, timed, &r)) return false;
    if (gone(r.status)) return true;
    if (r.status == 200) {
      bool same = value != nullptr && r.body == *value;
      return mismatch(
          "GET /" + key + via(node) + after + " answered 200 with " +
          (same ? std::string("the deleted value") : std::to_string(r.body.size()) + " bytes"));
    }
    return unexpected("GET", key, node, r);
  }

  bool delete_checked(const std::string& key, std::size_t node, bool timed) {
    Response r;
    if (!call(del, key, nullptr, node, timed, &r)) return false;
    if (!delete_ok(r.status)) return unexpected("DELETE", key, node, r);
    return true;
  }

  void cycle(std::uint64_t seq) {
    const std::string key = key_name(seq);
    std::uniform_int_distribution<std::size_t> len(1, plan_.max_size);
    const std::string value = random_value(len(rng_));
    auto t0 = Clock::now();
    std::size_t put_node = 0;
    if (!put_checked(key, value, true, &put_node)) return;
    if (!get_checked(key, value, next_node(), true, " after PUT" + via(put_node))) return;
    const std::size_t del_node = next_node();
    if (!delete_checked(key, del_node, true)) return;
    if (plan_.check_delete &&
        !gone_checked(key, &value, next_node(), true, " after DELETE" + via(del_node))) {
      return;
    }
    cycle_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    deleted_.push_back(key);
  }

  void put_one(std::uint64_t seq) {
    std::string key = key_name(seq);
    std::string value = random_value(plan_.value_bytes);
    auto t0 = Clock::now();
    std::size_t node = 0;
    if (!put_checked(key, value, true, &node)) return;
    cycle_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    // Only the last few are read back after the run; keep no more than those.
    if (written_.size() == 2 * final_check_per_worker) {
      written_.erase(written_.begin(), written_.begin() + final_check_per_worker);
    }
    written_.emplace_back(std::move(key), std::move(value));
  }

  // Worker w writes keys w, w + W, w + 2W, ...
  void prefill_get() {
    for (std::size_t i = static_cast<std::size_t>(index_); i < plan_.get_keys;
         i += static_cast<std::size_t>(plan_.workers)) {
      shared_->get_values[i] = random_value(plan_.value_bytes);
      std::size_t node = 0;
      if (!put_checked(get_key(i), shared_->get_values[i], false, &node)) return;
      ++prefilled_;
    }
  }

  void get_one() {
    std::uniform_int_distribution<std::size_t> pick(0, plan_.get_keys - 1);
    const std::size_t i = pick(rng_);
    auto t0 = Clock::now();
    if (!get_checked(get_key(i), shared_->get_values[i], next_node(), true,
                     " after its PUT in the prefill")) {
      return;
    }
    cycle_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }

  // Runs once a round: the key numbers go on from the last round's.
  void prefill_delete() {
    while (Clock::now() < shared_->deadline) {
      std::string key = key_name(delete_seq_++);
      std::size_t node = 0;
      if (!put_checked(key, random_value(plan_.value_bytes), false, &node)) return;
      to_delete_.push_back(std::move(key));
      ++prefilled_;
    }
  }

  void delete_one() {
    if (next_delete_ == to_delete_.size()) {
      shared_->out_of_keys.store(true, std::memory_order_relaxed);
      return;
    }
    const std::string& key = to_delete_[next_delete_++];
    auto t0 = Clock::now();
    if (!delete_checked(key, next_node(), true)) return;
    cycle_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    deleted_.push_back(key);
  }

  int index_;
  const Plan& plan_;
  Shared* shared_;
  Reporter* reporter_;
  std::mt19937_64 rng_;
  std::size_t turn_;
  std::vector<std::unique_ptr<Connection>> conns_;  // one per target, in plan_.targets order
  std::vector<std::pair<Endpoint, std::unique_ptr<Connection>>> others_;  // redirect targets
  std::vector<std::string> deleted_;  // keys whose DELETE was acknowledged and checked
  std::vector<std::pair<std::string, std::string>> written_;  // --op put: last keys, values
  std::vector<std::string> to_delete_;                        // --op delete: keys the prefill wrote
  std::size_t next_delete_ = 0;
  std::uint64_t delete_seq_ = 0;
};

// The samples of every worker picked by `of`, sorted.
template <typename Of>
std::vector<double> merged(const std::vector<std::unique_ptr<Worker>>& workers, Of of) {
  std::vector<double> all;
  for (const auto& w : workers) {
    const std::vector<double>& xs = of(*w);
    all.insert(all.end(), xs.begin(), xs.end());
  }
  std::sort(all.begin(), all.end());
  return all;
}

// Runs `phase` on every worker, one thread each, and waits for all of them.
void run_phase(const std::vector<std::unique_ptr<Worker>>& workers, void (Worker::*phase)()) {
  std::vector<std::thread> threads;
  for (const auto& w : workers) threads.emplace_back([&w, phase] { (w.get()->*phase)(); });
  for (auto& t : threads) t.join();
}

Clock::time_point after_seconds(double s) {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// The time in milliseconds and the pid: no two runs share it.
std::string run_stamp() {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::system_clock::now().time_since_epoch())
                .count();
  char buf[48];
  std::snprintf(buf, sizeof buf, "%llx-%d", static_cast<unsigned long long>(ms),
                static_cast<int>(getpid()));
  return buf;
}

// Blocking workers hold a socket per worker and endpoint: 1,024 workers against a
// store redirecting to three volumes need 4,096 descriptors, more than a default limit.
void raise_fd_limit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur >= r.rlim_max) return;
  r.rlim_cur = r.rlim_max;
  setrlimit(RLIMIT_NOFILE, &r);
}

// The timed part: its length (the sum of the rounds' with --op delete), the rounds it
// took, whether it ended short of --duration, and whether a prefill failed.
struct Timing {
  double elapsed_us = 0;
  int rounds = 0;
  bool exhausted = false;
  bool prefill_failed = false;
};

struct Totals {
  std::uint64_t errors = 0, mismatches = 0, redirects = 0, prefilled = 0, checked = 0;
  std::uint64_t completed = 0;  // timed operations (cycles) that passed their checks
};

Totals totals(const std::vector<std::unique_ptr<Worker>>& workers) {
  Totals t;
  for (const auto& w : workers) {
    t.errors += w->errors_;
    t.mismatches += w->mismatches_;
    t.redirects += w->redirects_;
    t.prefilled += w->prefilled_;
    t.checked += w->checked();
    t.completed += w->cycle_us.size();
  }
  return t;
}

const char* op_name(Op op) {
  switch (op) {
    case Op::cycle:
      return "cycle";
    case Op::put:
      return "put";
    case Op::get:
      return "get";
    case Op::del:
      return "delete";
  }
  UNREACHABLE();
}

void print_result(const Plan& plan, const std::vector<std::unique_ptr<Worker>>& workers,
                  const Timing& timing, const Totals& timed, const Totals& all) {
  const double elapsed_us = timing.elapsed_us;
  auto lat = merged(
      workers, [](const Worker& w) -> const auto& { return w.lat_us; });
  auto clat = merged(
      workers, [](const Worker& w) -> const auto& { return w.cycle_us; });
  std::string kinds;
  const char* const kind_key[] = {"put", "get", "delete"};
  for (int k = 0; k < 3; ++k) {
    auto xs = merged(
        workers, [k](const Worker& w) -> const auto& { return w.kind_us[k]; });
    char buf[96];
    std::snprintf(buf, sizeof buf, " %s_p50_us=%.0f %s_p99_us=%.0f", kind_key[k],
                  percentile(xs, 50), kind_key[k], percentile(xs, 99));
    kinds += buf;
  }
  const double elapsed_s = elapsed_us / 1e6;
  auto per_s = [&](std::size_t n) {
    return elapsed_s > 0 ? static_cast<double>(n) / elapsed_s : 0;
  };
  auto ull = [](std::uint64_t x) { return static_cast<unsigned long long>(x); };
  std::printf(
      "THRASHRESULT op=%s peer=%d requests=%zu cycles=%zu duration_us=%.0f rps=%.1f "
      "cycles_per_s=%.1f workers=%d nodes=%zu p50_us=%.0f p90_us=%.0f p99_us=%.0f "
      "max_us=%.0f cycle_p50_us=%.0f cycle_p99_us=%.0f errors=%llu mismatches=%llu "
      "final_errors=%llu final_mismatches=%llu final_checked=%llu redirects=%llu "
      "prefilled=%llu rounds=%d exhausted=%d%s\n",
      op_name(plan.op), plan.peer ? 1 : 0, lat.size(), clat.size(), elapsed_us, per_s(lat.size()),
      per_s(clat.size()), plan.workers, plan.targets.size(), percentile(lat, 50),
      percentile(lat, 90), percentile(lat, 99), lat.empty() ? 0.0 : lat.back(),
      percentile(clat, 50), percentile(clat, 99), ull(all.errors), ull(all.mismatches),
      ull(all.errors - timed.errors), ull(all.mismatches - timed.mismatches), ull(all.checked),
      ull(all.redirects), ull(all.prefilled), timing.rounds, timing.exhausted ? 1 : 0,
      kinds.c_str());
  std::fflush(stdout);
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The prefill and the timed part; with --op delete in rounds until `duration_s` seconds of
// DELETEs were timed. A failed prefill ends it (the keys to read or delete are missing).
Timing run_timed(const std::vector<std::unique_ptr<Worker>>& workers, Shared* shared, Op op,
                 double duration_s) {
  Timing t;
  double prefill_s = duration_s;  // --op delete: how long the next prefill writes
  while (t.rounds < delete_rounds_max) {
    ++t.rounds;
    const Totals before = totals(workers);
    shared->out_of_keys.store(false);
    shared->deadline = after_seconds(prefill_s);
    const auto p0 = Clock::now();
    run_phase(workers, &Worker::prefill);
    const double put_s = seconds_since(p0);
    const Totals after = totals(workers);
    if (after.errors != before.errors || after.mismatches != before.mismatches) {
      t.prefill_failed = true;
      break;
    }
    const auto t0 = Clock::now();
    shared->deadline = after_seconds(duration_s - t.elapsed_us / 1e6);
    run_phase(workers, &Worker::run);
    const double round_s = std::max(seconds_since(t0), 1e-3);
    t.elapsed_us += round_s * 1e6;
    const double left_s = duration_s - t.elapsed_us / 1e6;
    if (op != Op::del || !shared->out_of_keys.load() || left_s <= 0) break;
    // Keys for the DELETE seconds still to time at this round's rate, less those left over
    // (the round stopped when the first worker ran out), at this round's PUT rate.
    const Totals done = totals(workers);
    const double put_rate = static_cast<double>(after.prefilled - before.prefilled) / put_s;
    const double delete_rate = static_cast<double>(done.completed - after.completed) / round_s;
    const double left_over =
        static_cast<double>(done.prefilled) - static_cast<double>(done.completed);
    if (put_rate <= 0) break;  // nothing was written: a store that takes no keys
    prefill_s = std::clamp((left_s * delete_rate * delete_prefill_margin - left_over) / put_rate,
                           delete_prefill_s_min, delete_prefill_duration_max * duration_s);
  }
  t.exhausted = op == Op::del && !t.prefill_failed && t.elapsed_us / 1e6 < 0.99 * duration_s;
  return t;
}

// Fills `plan` from the command line; an empty string when it is usable, else why not.
std::string check_plan(Plan* plan, const std::string& op, const std::string& cycle,
                       const std::string& run_id, const std::vector<std::string>& urls) {
  const std::pair<const char*, Op> ops[] = {
      {"cycle", Op::cycle}, {"put", Op::put}, {"get", Op::get}, {"delete", Op::del}};
  auto found = std::find_if(std::begin(ops), std::end(ops), [&](auto& o) { return op == o.first; });
  if (found == std::end(ops)) return "--op must be cycle, put, get or delete";
  plan->op = found->second;
  if (cycle != "full" && cycle != "mkv") return "--cycle must be full or mkv";
  plan->check_delete = cycle == "full";
  if (plan->workers < 1 || plan->workers > workers_max || plan->max_size < 1 ||
      plan->max_size > response_bytes_max || plan->value_bytes < 1 ||
      plan->value_bytes > response_bytes_max) {
    return "--workers must be 1..1024, --max-size and --size 1..16777216";
  }
  if (plan->get_keys < 1 || plan->get_keys > get_keys_max ||
      plan->get_keys * plan->value_bytes > get_bytes_max) {
    return "--keys must be 1..1000000 and --keys x --size at most 1 GiB";
  }
  if (run_id.size() > 32 || !std::all_of(run_id.begin(), run_id.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
      })) {
    return "--run-id must be at most 32 of [A-Za-z0-9_-]";
  }
  plan->prefix = run_id.empty() ? run_stamp() : run_id + "-" + run_stamp();
  for (const std::string& arg : urls) {
    for (std::size_t from = 0; from <= arg.size();) {
      std::size_t comma = std::min(arg.find(',', from), arg.size());
      std::string url = arg.substr(from, comma - from), path;
      Endpoint e;
      if (!parse_url(url, &e, &path) || path != "/") {
        return "not an http://HOST:PORT URL (HOST an IPv4 address or localhost): " + url;
      }
      plan->targets.push_back(e);
      from = comma + 1;
    }
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Verifying PUT/GET/DELETE load on ringstore nodes or another HTTP blob store."};
  Plan plan;
  double duration = 10;
  std::string run_id, op = "cycle", cycle = "full";
  std::vector<std::string> urls;
  app.add_option("--duration", duration, "seconds of the timed part (default 10)");
  app.add_option("--workers", plan.workers,
                 "concurrent workers, each with its own connections (default 16)");
  app.add_option("--op", op,
                 "cycle: PUT, GET, DELETE on fresh keys (default); put: PUT fresh keys; "
                 "get: PUT --keys values untimed, then GET random ones; delete: PUT fresh "
                 "keys for --duration untimed, then time their DELETEs");
  app.add_option("--max-size", plan.max_size,
                 "--op cycle: values are 1..B random bytes (default 1024)");
  app.add_option("--size", plan.value_bytes,
                 "--op put, get, delete: values of B random bytes (default 1024)");
  app.add_option("--keys", plan.get_keys, "--op get: keys written and read (default 1000)");
  app.add_option("--run-id", run_id, "label in the key names, before the time and pid");
  app.add_option("--cycle", cycle,
                 "full: PUT, GET, DELETE, GET that must answer 404 (default); "
                 "mkv: PUT, GET, DELETE, minikeyvalue's thrasher cycle");
  app.add_flag("--peer", plan.peer,
               "another store: PUT 201/204, DELETE 204/200, deleted GET 404/410 are fine "
               "and the ETag is not checked; bytes are");
  app.add_option("urls", urls,
                 "base URLs, e.g. http://127.0.0.1:3000 (several, or one comma-separated)")
      ->required();
  CLI11_PARSE(app, argc, argv);

  if (!(duration > 0)) {
    std::fprintf(stderr, "ringstore-thrash: --duration must be positive\n");
    return 2;
  }
  if (std::string why = check_plan(&plan, op, cycle, run_id, urls); !why.empty()) {
    std::fprintf(stderr, "ringstore-thrash: %s\n", why.c_str());
    return 2;
  }
  raise_fd_limit();

  Reporter reporter;
  Shared shared;
  if (plan.op == Op::get) shared.get_values.resize(plan.get_keys);
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < plan.workers; ++i) {
    workers.push_back(std::make_unique<Worker>(i, plan, &shared, &reporter));
  }
  const Timing timing = run_timed(workers, &shared, plan.op, duration);
  const Totals timed = totals(workers);
  run_phase(workers, &Worker::final_check);
  const Totals all = totals(workers);

  print_result(plan, workers, timing, timed, all);
  std::size_t completed = 0;
  for (const auto& w : workers) completed += w->cycle_us.size();
  return all.errors != 0 || all.mismatches != 0 || completed == 0 ? 1 : 0;
}
