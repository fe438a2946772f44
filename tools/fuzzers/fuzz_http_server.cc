// libFuzzer target for the whole request path: the input is the byte stream a client
// sends on one TCP connection to a real in-process node (llhttp parsing, header and URL
// limits, key decoding, Range and If-None-Match, uploads, chunked bodies, pipelining).
//
// One node serves the whole process. Its libuv loop runs on this thread: each input
// opens a non-blocking socket to it, writes the input (driving the loop whenever the
// socket is not writable), half-closes, and drives the loop while reading everything the
// node sends until it closes the connection. Findings, besides what ASan and UBSan
// catch:
//   - a hang: no byte in either direction for hang_ms after the client is done, or an
//     exchange longer than exchange_ms;
//   - a malformed response stream: each response must start "HTTP/1.1 " and a 3-digit
//     status, carry a Content-Length (except 1xx, 204 and 304), and be followed by the
//     next response or the end of the stream. A HEAD response has no body, so both
//     framings are tried. Only a connection reset may cut the last response short.
//
// Keys the inputs can hit are written at start and again every so often: "seed" (small
// text), "empty" (0 bytes), "big" (streamed in several chunks) and "dir/a b". The node's
// data lives in a temp dir under $RINGSTORE_FUZZ_DATA_ROOT, else /dev/shm, else /tmp; it
// is removed at exit (tools/fuzz also removes the root after a crash).
// RINGSTORE_FUZZ_TRACE=1 prints every exchange, which helps when replaying an input.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "node/log.h"
#include "node/server.h"

namespace {

// No byte sent or received for this long: the node is stuck.
constexpr std::uint64_t hang_ms = 2000;
// A whole exchange may not take longer than this (libFuzzer's -timeout is 10 s).
constexpr std::uint64_t exchange_ms = 8000;
// Responses beyond this many bytes are read and dropped, not checked.
constexpr std::size_t kept_bytes_max = 32u << 20;
constexpr std::size_t big_bytes = 300 * 1024;

// An input may write this where a node-to-node request carries the cluster credential
// (X-Ringstore-Auth); the real token replaces it, so the /_/internal/ endpoints are
// reached too. Not for /_/internal/push/, which makes the node connect to any address
// the input names.
constexpr std::string_view auth_placeholder = "@auth@";

struct Fixture {
  uv_loop_t loop;
  node::Server* server = nullptr;
  std::string dir;
  int port = 0;
  std::string auth_token;
  bool trace = false;  // RINGSTORE_FUZZ_TRACE=1: print each exchange (for reproducing)
  std::map<int, std::uint64_t> statuses;  // responses seen, by status
  std::uint64_t exchanges = 0;
};
Fixture* g = nullptr;

std::uint64_t now_ms() { return uv_hrtime() / 1'000'000; }

std::string printable(std::string_view s, std::size_t max) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < max; i++) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n\n    ";
    } else if (c >= 0x20 && c < 0x7F) {
      out += static_cast<char>(c);
    } else {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

[[noreturn]] void finding(const std::string& what, std::string_view received = {},
                          std::size_t at = 0) {
  std::fprintf(stderr, "fuzz_http_server: FINDING: %s\n", what.c_str());
  if (!received.empty()) {
    std::fprintf(stderr, "  received %zu bytes; from offset %zu:\n    %s\n", received.size(),
                 at, printable(received.substr(at), 600).c_str());
  }
  __builtin_trap();
}

[[noreturn]] void setup_failed(const std::string& what) {
  std::fprintf(stderr, "fuzz_http_server: setup failed: %s\n", what.c_str());
  std::abort();
}

// ---- one client connection ----

struct Exchange {
  std::string received;     // what the node sent, up to kept_bytes_max
  std::size_t received_total = 0;
  std::size_t sent = 0;
  bool reset = false;       // the node's side ended with RST rather than FIN
};

Exchange exchange(const std::uint8_t* data, std::size_t size) {
  Exchange ex;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) finding(std::string("client socket(): ") + std::strerror(errno));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(g->port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool connected = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  if (!connected && errno != EINPROGRESS) {
    finding(std::string("connect to the node: ") + std::strerror(errno));
  }

  bool writing = true;
  const std::uint64_t start = now_ms();
  std::uint64_t last_progress = start;
  static char buf[64 * 1024];
  for (;;) {
    uv_run(&g->loop, UV_RUN_NOWAIT);
    if (!connected) {
      pollfd p{fd, POLLOUT, 0};
      if (poll(&p, 1, 0) > 0) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) finding(std::string("connect to the node: ") + std::strerror(err));
        connected = true;
      }
    }
    if (connected && writing) {
      while (ex.sent < size) {
        ssize_t n = send(fd, data + ex.sent, size - ex.sent, MSG_NOSIGNAL);
        if (n > 0) {
          ex.sent += static_cast<std::size_t>(n);
          last_progress = now_ms();
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        writing = false;  // EPIPE, ECONNRESET: the node closed before reading it all
        break;
      }
      if (writing && ex.sent == size) {
        shutdown(fd, SHUT_WR);
        writing = false;
      }
    }
    bool ended = false;
    for (;;) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n > 0) {
        std::size_t got = static_cast<std::size_t>(n);
        ex.received_total += got;
        if (ex.received.size() < kept_bytes_max) ex.received.append(buf, got);
        last_progress = now_ms();
        continue;
      }
      if (n == 0) {
        ended = true;
        break;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK || (errno == ENOTCONN && !connected)) break;
      if (errno == ECONNRESET) {
        ex.reset = true;
        ended = true;
        break;
      }
      finding(std::string("client recv(): ") + std::strerror(errno), ex.received);
    }
    if (ended) break;
    std::uint64_t now = now_ms();
    if (now - last_progress > hang_ms) {
      finding("hang: the node neither answered nor closed the connection for " +
                  std::to_string(now - last_progress) + " ms (client sent " +
                  std::to_string(ex.sent) + " of " + std::to_string(size) + " bytes" +
                  (writing ? ", still writing)" : ", then half-closed)"),
              ex.received, ex.received.size() > 300 ? ex.received.size() - 300 : 0);
    }
    if (now - start > exchange_ms) {
      finding("slow: the exchange took over " + std::to_string(exchange_ms) + " ms",
              ex.received);
    }
    // Sleep until the socket or the loop has work, briefly.
    pollfd p[2] = {
        {fd, static_cast<short>(POLLIN | (writing || !connected ? POLLOUT : 0)), 0},
        {uv_backend_fd(&g->loop), POLLIN, 0},
    };
    int timeout = uv_backend_timeout(&g->loop);
    if (timeout < 0 || timeout > 5) timeout = 5;
    poll(p, 2, timeout);
  }
  close(fd);
  for (int i = 0; i < 3; i++) uv_run(&g->loop, UV_RUN_NOWAIT);  // the node's close callbacks
  g->exchanges++;
  return ex;
}

// ---- the credential placeholder ----

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Whether any request target in `in` could decode to the push endpoint: decodes every
// valid %XX of the whole stream once (as parse_target does for each target) and looks
// for the path, ignoring case.
bool may_push(std::string_view in) {
  std::string d;
  d.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); i++) {
    char c = in[i];
    if (c == '%' && i + 2 < in.size() && hex_digit(in[i + 1]) >= 0 && hex_digit(in[i + 2]) >= 0) {
      c = static_cast<char>(hex_digit(in[i + 1]) << 4 | hex_digit(in[i + 2]));
      i += 2;
    }
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    d += c;
  }
  return d.find("internal/push") != std::string::npos;
}

// The input with every placeholder replaced by the token, or empty when unchanged.
std::string with_credential(std::string_view in) {
  if (in.find(auth_placeholder) == std::string_view::npos || may_push(in)) return {};
  std::string out;
  std::size_t from = 0;
  for (std::size_t at; (at = in.find(auth_placeholder, from)) != std::string_view::npos;) {
    out.append(in.substr(from, at - from));
    out += g->auth_token;
    from = at + auth_placeholder.size();
  }
  out.append(in.substr(from));
  return out;
}

// ---- response stream checks ----

struct Head {
  int status = 0;
  bool has_length = false;
  std::uint64_t length = 0;
  std::size_t body_start = 0;
};

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Whether `s` from `pos` could start a status line, as far as the bytes go.
bool status_prefix_ok(std::string_view s, std::size_t pos) {
  static constexpr std::string_view proto = "HTTP/1.1 ";
  for (std::size_t i = 0; i < 13 && pos + i < s.size(); i++) {
    char c = s[pos + i];
    if (i < proto.size() ? c != proto[i] : (i < 12 ? !is_digit(c) : c != ' ')) return false;
  }
  return true;
}

bool name_is(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); i++) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// Parses the head at `pos`. Returns 0 when it is complete and well formed, 1 when the
// stream ends inside it, and -1 (with *why) when it is malformed.
int parse_head(std::string_view s, std::size_t pos, Head* h, std::string* why) {
  if (!status_prefix_ok(s, pos)) {
    *why = "response does not start with \"HTTP/1.1 \" and a 3-digit status";
    return -1;
  }
  std::size_t end = s.find("\r\n\r\n", pos);
  if (end == std::string_view::npos) return 1;
  std::string_view head = s.substr(pos, end + 2 - pos);
  if (head.size() < 14) {
    *why = "status line too short";
    return -1;
  }
  h->status = (head[9] - '0') * 100 + (head[10] - '0') * 10 + (head[11] - '0');
  if (h->status < 100 || h->status > 599) {
    *why = "status " + std::to_string(h->status) + " outside 100..599";
    return -1;
  }
  h->body_start = end + 4;
  std::size_t line = head.find("\r\n") + 2;
  while (line < head.size()) {
    std::size_t eol = head.find("\r\n", line);
    std::string_view l = head.substr(line, eol - line);
    line = eol + 2;
    std::size_t colon = l.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      *why = "header line without a name: \"" + std::string(l.substr(0, 80)) + "\"";
      return -1;
    }
    if (!name_is(l.substr(0, colon), "content-length")) continue;
    std::string_view v = l.substr(colon + 1);
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    if (h->has_length) {
      *why = "two Content-Length headers";
      return -1;
    }
    if (v.empty() || v.size() > 19) {
      *why = "bad Content-Length";
      return -1;
    }
    std::uint64_t n = 0;
    for (char c : v) {
      if (!is_digit(c)) {
        *why = "bad Content-Length";
        return -1;
      }
      n = n * 10 + static_cast<std::uint64_t>(c - '0');
    }
    h->has_length = true;
    h->length = n;
  }
  bool bodyless = h->status < 200 || h->status == 204 || h->status == 304;
  if (bodyless && h->has_length && (h->status < 200 || h->status == 204)) {
    *why = "Content-Length on a " + std::to_string(h->status) + " response";
    return -1;
  }
  if (!bodyless && !h->has_length) {
    *why = "no Content-Length on a " + std::to_string(h->status) + " response";
    return -1;
  }
  return 0;
}

// Splits the stream into responses; traps when no framing fits.
void check_responses(const Exchange& ex) {
  std::string_view s = ex.received;
  // The tail may be cut short only by a reset, or by our own cap.
  bool cut_ok = ex.reset || ex.received_total > ex.received.size();
  std::vector<std::size_t> todo{0};
  std::vector<bool> seen(s.size() + 1, false);
  std::size_t furthest = 0;
  std::string why = "no framing fits";
  std::map<int, std::uint64_t> statuses;
  auto accept = [&] {
    for (auto& [k, v] : statuses) g->statuses[k] += v;
  };
  while (!todo.empty()) {
    std::size_t pos = todo.back();
    todo.pop_back();
    if (seen[pos]) continue;
    seen[pos] = true;
    if (pos > furthest) furthest = pos;
    if (pos == s.size()) return accept();
    Head h;
    std::string err;
    int rc = parse_head(s, pos, &h, &err);
    if (rc == 1) {
      if (cut_ok) return accept();
      err = "the connection closed inside a response head";
    }
    if (rc != 0) {
      if (pos == furthest) why = err;
      continue;
    }
    statuses[h.status]++;
    std::vector<std::size_t> next;
    next.push_back(h.body_start);  // no body: HEAD, 1xx, 204, 304
    if (h.has_length && h.length > 0) {
      if (h.length > s.size() - h.body_start) {
        if (cut_ok) return accept();
        if (pos == furthest) why = "the connection closed inside a body (Content-Length " +
                                   std::to_string(h.length) + ")";
      } else {
        next.push_back(h.body_start + h.length);  // tried first
      }
    }
    for (std::size_t n : next) {
      if (!seen[n]) todo.push_back(n);
    }
  }
  finding("malformed response stream: " + why, s, furthest);
}

// ---- the node ----

std::string request(std::string_view method, std::string_view key, std::string_view body,
                    std::string_view extra = {}) {
  std::string r(method);
  r += " /";
  r += key;
  r += " HTTP/1.1\r\nHost: fuzz\r\n";
  r += extra;
  if (method == "PUT") r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  r += "\r\n";
  r += body;
  return r;
}

int status_of(const Exchange& ex) {
  if (ex.received.size() < 12 || ex.received.compare(0, 9, "HTTP/1.1 ") != 0) return -1;
  return std::atoi(ex.received.c_str() + 9);
}

void seed_failed(const std::string& what) {
  if (g->exchanges < 16) setup_failed(what);
  // The node served earlier inputs but can no longer store and read back a key.
  finding("writing the seed keys again after " + std::to_string(g->exchanges) +
          " exchanges failed: " + what);
}

void seed(std::string_view key, const std::string& body, std::string_view content_type) {
  std::string extra = "Content-Type: " + std::string(content_type) + "\r\nConnection: close\r\n";
  std::string r = request("PUT", key, body, extra);
  Exchange ex = exchange(reinterpret_cast<const std::uint8_t*>(r.data()), r.size());
  if (status_of(ex) != 201) {
    seed_failed("PUT /" + std::string(key) + ": " + printable(ex.received, 300));
  }
  std::string get = request("GET", key, "", "Connection: close\r\n");
  ex = exchange(reinterpret_cast<const std::uint8_t*>(get.data()), get.size());
  if (status_of(ex) != 200 || ex.received.size() < body.size() ||
      ex.received.compare(ex.received.size() - body.size(), body.size(), body) != 0) {
    seed_failed("GET /" + std::string(key) + " after PUT: " + printable(ex.received, 300));
  }
}

// The keys inputs are likely to hit. Inputs may delete or overwrite them, so they are
// written again every refresh_every exchanges.
constexpr std::uint64_t refresh_every = 2000;

void seed_keys() {
  seed("seed", "Hello from the seed key.\nLine two.\n", "text/plain");
  seed("empty", "", "application/octet-stream");
  static const std::string big = [] {
    std::string b(big_bytes, '\0');
    for (std::size_t i = 0; i < b.size(); i++) b[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
    return b;
  }();
  seed("big", big, "application/octet-stream");
  seed("dir/a%20b", "spaced key\n", "text/plain");
}

void stop_node() {
  if (g == nullptr) return;
  Fixture* f = g;
  std::fprintf(stderr, "fuzz_http_server: %llu exchanges; responses by status:",
               static_cast<unsigned long long>(f->exchanges));
  for (auto& [k, v] : f->statuses) {
    std::fprintf(stderr, " %d:%llu", k, static_cast<unsigned long long>(v));
  }
  std::fprintf(stderr, "\n");
  bool done = false;
  f->server->stop([&done] { done = true; });
  std::uint64_t t0 = now_ms();
  while (!done && now_ms() - t0 < 10'000) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    pollfd p{uv_backend_fd(&f->loop), POLLIN, 0};
    poll(&p, 1, 10);
  }
  if (done) {
    // Every handle is closing; let their callbacks run, then free everything.
    while (uv_loop_alive(&f->loop) && now_ms() - t0 < 10'000) uv_run(&f->loop, UV_RUN_NOWAIT);
    delete f->server;
    f->server = nullptr;
    if (uv_loop_close(&f->loop) != 0) {
      std::fprintf(stderr, "fuzz_http_server: the loop still had handles at exit\n");
    }
  } else {
    std::fprintf(stderr, "fuzz_http_server: the node did not stop within 10 s\n");
  }
  std::error_code ec;
  std::filesystem::remove_all(f->dir, ec);
  if (done) {
    g = nullptr;
    delete f;
  }
}

std::string data_root() {
  if (const char* r = std::getenv("RINGSTORE_FUZZ_DATA_ROOT"); r != nullptr && *r != '\0') return r;
  if (access("/dev/shm", W_OK | X_OK) == 0) return "/dev/shm";
  return "/tmp";
}

void start_node() {
  signal(SIGPIPE, SIG_IGN);
  node::log::set_level(node::log::Level::warn);
  g = new Fixture;
  const char* trace = std::getenv("RINGSTORE_FUZZ_TRACE");
  g->trace = trace != nullptr && *trace != '\0' && *trace != '0';
  std::string tmpl = data_root() + "/ringstore-fuzz.XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) setup_failed("mkdtemp " + tmpl + ": " + std::strerror(errno));
  g->dir = tmpl;
  if (uv_loop_init(&g->loop) != 0) setup_failed("uv_loop_init");

  node::ServerConfig config;
  config.host = "127.0.0.1";
  config.port = 0;
  config.data_dir = g->dir + "/data";
  config.disks = {g->dir + "/d1", g->dir + "/d2"};
  // Uploads from inputs are bounded by -max_len anyway; the limit has to admit "big".
  config.limits.body_bytes_max = 1 << 20;
  // Lower than the default so that -max_len inputs can reach 431 (and 414 before it).
  config.limits.header_bytes_max = 6144;
  config.limits.connections_max = 64;
  // Timeouts longer than hang_ms: a connection that only a timeout would end is a
  // finding (after the half-close the node must answer or close on its own).
  config.limits.idle_timeout_ms = 5000;
  config.limits.header_timeout_ms = 3000;
  config.limits.body_timeout_ms = 3000;
  config.limits.send_timeout_ms = 3000;
  config.limits.drain_timeout_ms = 1000;
  // A one-node cluster: no seeds, and no secret (the token is derived from none).
  config.insecure = true;
  config.quorum.replica_timeout_ms = 500;
  g->server = new node::Server(&g->loop, config);
  Status s = g->server->start();
  if (!s.is_ok()) setup_failed("start the node: " + s.message());
  g->port = g->server->port();
  g->auth_token = node::Server::auth_token_for(config.secret);
  std::atexit(stop_node);

  seed_keys();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  start_node();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string credentialed = with_credential(
      std::string_view(reinterpret_cast<const char*>(data), size));
  if (!credentialed.empty()) {
    data = reinterpret_cast<const std::uint8_t*>(credentialed.data());
    size = credentialed.size();
  }
  Exchange ex = exchange(data, size);
  if (g->trace) {
    std::fprintf(stderr, "---- sent %zu of %zu bytes:\n    %s\n---- received %zu bytes%s:\n    %s\n",
                 ex.sent, size,
                 printable(std::string_view(reinterpret_cast<const char*>(data), size), 4000).c_str(),
                 ex.received_total, ex.reset ? " (then a reset)" : "",
                 printable(ex.received, 4000).c_str());
  }
  check_responses(ex);
  if (g->exchanges % refresh_every == 0) seed_keys();
  return 0;
}
