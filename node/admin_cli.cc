#include "node/admin_cli.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include <llhttp.h>

#include <algorithm>

#include "node/header_pair.h"
#include "node/json_util.h"
#include "node/request.h"
#include "node/server.h"

namespace node {

namespace {

bool split_addr(const std::string& addr, sockaddr_in* to) {
  std::size_t colon = addr.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  auto port = parse_u64(std::string_view(addr).substr(colon + 1));
  if (!port || *port == 0 || *port > 65535) return false;
  std::string host = addr.substr(0, colon);
  if (host == "localhost") host = "127.0.0.1";
  *to = sockaddr_in{};
  to->sin_family = AF_INET;
  to->sin_port = htons(static_cast<std::uint16_t>(*port));
  return inet_pton(AF_INET, host.c_str(), &to->sin_addr) == 1;
}

// The body's "error" (and "detail") for a message, else the body itself.
std::string reason(const Reply& r) {
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_string()) {
    std::string s = j["error"].get<std::string>();
    if (j.contains("detail") && j["detail"].is_string()) s += " (" + j["detail"].get<std::string>() + ")";
    return s;
  }
  return r.body;
}

}  // namespace

namespace {

// A read or write of this size keeps a syscall's cost small against the bytes it moves,
// and is all the memory a streamed body takes.
constexpr std::size_t io_chunk_bytes = 256 * 1024;
// A body collected in memory (an error, a listing page of 10,000 keys of 1 KiB, a status
// document): anything longer is not an answer these commands expect.
constexpr std::size_t collected_body_bytes_max = 64u << 20;

Result<int> connect_to(const std::string& addr, std::uint32_t stall_ms) {
  sockaddr_in to{};
  if (!split_addr(addr, &to)) return Status::invalid("not an IPv4 HOST:PORT: '" + addr + "'");
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::from_errno("socket", errno);
  // On Linux SO_SNDTIMEO also bounds connect(): one limit covers every blocking call.
  timeval tv{static_cast<time_t>(stall_ms / 1000), static_cast<suseconds_t>(stall_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    int err = errno;
    close(fd);
    return Status::io_error("cannot connect to " + addr + ": " +
                            (err == EINPROGRESS ? "timed out" : std::strerror(err)));
  }
  return fd;
}

Status send_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Status::io_error("send stalled");
    if (w <= 0) return Status::from_errno("send", errno);
    data += w;
    n -= static_cast<std::size_t>(w);
  }
  return Status::ok();
}

// Reads up to n bytes of the body; 0 at EOF.
Result<std::size_t> read_body(int fd, char* buf, std::size_t n) {
  for (;;) {
    ssize_t r = read(fd, buf, n);
    if (r >= 0) return static_cast<std::size_t>(r);
    if (errno != EINTR) return Status::from_errno("reading the value", errno);
  }
}

// The request body from req.body_fd: exactly body_length bytes, or chunks until EOF.
// *local tells a failure to read the value (no answer is coming: the node still waits
// for the rest) from a failure to send it.
Status send_body(int sock, const ClientRequest& req, bool* local) {
  std::string buf(io_chunk_bytes + 32, '\0');
  const bool chunked = !req.body_length;
  std::uint64_t sent = 0;
  for (;;) {
    std::size_t want = io_chunk_bytes;
    if (!chunked) want = static_cast<std::size_t>(std::min<std::uint64_t>(want, *req.body_length - sent));
    if (!chunked && want == 0) return Status::ok();
    // Chunked framing goes around the data in the same buffer: one send per chunk.
    constexpr std::size_t frame = 10;  // up to 8 hex digits and \r\n
    auto n = read_body(req.body_fd, buf.data() + frame, want);
    *local = true;
    if (!n.is_ok()) return n.take_status();
    if (n.value() == 0 && !chunked) return Status::io_error("the value ended early (file shrank?)");
    *local = false;
    char* out = buf.data() + frame;
    std::size_t len = n.value();
    if (chunked) {
      char size[frame + 1];
      int h = std::snprintf(size, sizeof size, "%zx\r\n", len);
      out -= h;
      std::memcpy(out, size, static_cast<std::size_t>(h));
      std::memcpy(buf.data() + frame + len, "\r\n", 2);
      len += static_cast<std::size_t>(h) + 2;  // the last one is "0\r\n\r\n": no trailers
    }
    if (Status s = send_all(sock, out, len); !s.is_ok()) return s;
    sent += n.value();
    if (req.on_body_sent) req.on_body_sent(sent);
    if (chunked && n.value() == 0) return Status::ok();
  }
}

// llhttp callbacks filling a Reply, streaming a 2xx body to the request's sink.
struct ResponseParser {
  llhttp_t parser;
  const ClientRequest* req;
  Reply* reply;
  std::string field, value;
  bool streaming = false;
  bool complete = false;
  Status error;

  static ResponseParser* self(llhttp_t* p) { return static_cast<ResponseParser*>(p->data); }
  static int on_header_field(llhttp_t* p, const char* at, std::size_t n) {
    self(p)->field.append(at, n);
    return 0;
  }
  static int on_header_value(llhttp_t* p, const char* at, std::size_t n) {
    self(p)->value.append(at, n);
    return 0;
  }
  static int on_header_value_complete(llhttp_t* p) {
    ResponseParser* r = self(p);
    for (char& ch : r->field) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    r->reply->headers[r->field] = r->value;
    r->field.clear();
    r->value.clear();
    return 0;
  }
  static int on_headers_complete(llhttp_t* p) {
    ResponseParser* r = self(p);
    r->reply->status = p->status_code;
    if (const std::string* cl = r->reply->header("content-length")) r->reply->content_length = parse_u64(*cl);
    r->streaming = r->req->body_sink && p->status_code >= 200 && p->status_code < 300;
    return r->req->head ? 1 : 0;  // 1: no body follows
  }
  static int on_body(llhttp_t* p, const char* at, std::size_t n) {
    ResponseParser* r = self(p);
    r->reply->body_bytes += n;
    if (r->streaming) {
      r->error = r->req->body_sink(at, n);
      return r->error.is_ok() ? 0 : -1;
    }
    if (r->reply->body.size() + n > collected_body_bytes_max) {
      r->error = Status::io_error("answer longer than " + std::to_string(collected_body_bytes_max) + " bytes");
      return -1;
    }
    r->reply->body.append(at, n);
    return 0;
  }
  static int on_message_complete(llhttp_t* p) {
    self(p)->complete = true;
    return HPE_PAUSED;  // bytes after the answer are not ours to read
  }
  static const llhttp_settings_t* settings() { return response_parser_settings<ResponseParser>(); }
};

// What a cut answer lacked, for the error message.
std::string shortfall(const Reply& r) {
  if (r.status == 0) return "no answer";
  std::string s = "answer cut short (" + std::to_string(r.body_bytes);
  if (r.content_length) s += " of " + std::to_string(*r.content_length);
  return s + " body bytes)";
}

Status read_response(int fd, const std::string& addr, const ClientRequest& req, Reply* reply) {
  ResponseParser rp;
  llhttp_init(&rp.parser, HTTP_RESPONSE, ResponseParser::settings());
  rp.parser.data = &rp;
  rp.req = &req;
  rp.reply = reply;
  std::string buf(io_chunk_bytes, '\0');
  while (!rp.complete) {
    ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return Status(Code::timeout, addr + " stalled for " + std::to_string(req.stall_ms) + " ms: " +
                                       shortfall(*reply));
    }
    if (n < 0) return Status::io_error("reading from " + addr + ": " + std::strerror(errno) + ": " + shortfall(*reply));
    llhttp_errno_t err = n == 0 ? llhttp_finish(&rp.parser)
                                : llhttp_execute(&rp.parser, buf.data(), static_cast<std::size_t>(n));
    if (rp.complete) break;
    if (!rp.error.is_ok()) return rp.error;
    if (err != HPE_OK) {
      return Status::io_error("bad answer from " + addr + ": " + llhttp_errno_name(err) + ": " + shortfall(*reply));
    }
    if (n == 0) return Status::io_error(addr + " closed the connection: " + shortfall(*reply));
  }
  while (!reply->body.empty() && reply->body.back() == '\n') reply->body.pop_back();
  return Status::ok();
}

}  // namespace

Status exchange(const std::string& addr, const ClientRequest& req, Reply* reply) {
  auto fd = connect_to(addr, req.stall_ms);
  if (!fd.is_ok()) return fd.take_status();
  int sock = fd.value();
  std::string head = req.method + " " + req.target + " HTTP/1.1\r\nHost: " + addr + "\r\n" + req.headers;
  if (req.body_fd < 0) {
    head += "Content-Length: 0\r\n";
  } else if (req.body_length) {
    head += "Content-Length: " + std::to_string(*req.body_length) + "\r\n";
  } else {
    head += "Transfer-Encoding: chunked\r\n";
  }
  head += "Connection: close\r\n\r\n";
  Status sent = send_all(sock, head.data(), head.size());
  bool local = false;
  if (sent.is_ok() && req.body_fd >= 0) sent = send_body(sock, req, &local);
  if (local) {
    close(sock);
    return sent;
  }
  // A node may refuse a body before reading it (413 from Content-Length) and close: its
  // answer is the better error, so read it even after a failed send.
  *reply = Reply();
  Status got = read_response(sock, addr, req, reply);
  close(sock);
  if (!sent.is_ok() && reply->status == 0) return Status(sent.code(), "sending to " + addr + ": " + sent.message());
  return got;
}

bool exchange(const std::string& addr, const std::string& method, const std::string& target,
              const std::string& auth, Reply* reply, std::string* error) {
  ClientRequest req;
  req.method = method;
  req.target = target;
  if (!auth.empty()) req.headers = "X-Ringstore-Auth: " + auth + "\r\n";
  if (Status s = exchange(addr, req, reply); !s.is_ok()) {
    *error = s.message();
    return false;
  }
  return true;
}

bool load_secret(const std::string& secret_file, std::string* secret, std::string* error) {
  secret->clear();
  if (secret_file.empty()) {
    if (const char* env = std::getenv("RINGSTORE_SECRET")) *secret = env;
    return true;
  }
  std::FILE* f = std::fopen(secret_file.c_str(), "r");
  if (f == nullptr) {
    *error = "cannot read --secret-file " + secret_file;
    return false;
  }
  char buf[4096];
  std::size_t n = std::fread(buf, 1, sizeof buf, f);
  std::fclose(f);
  secret->assign(buf, n);
  while (!secret->empty() && std::isspace(static_cast<unsigned char>(secret->back()))) secret->pop_back();
  return true;
}

int leave_command(const std::string& node_addr, const std::string& secret, unsigned timeout_s) {
  const std::string auth = Server::auth_token_for(secret);
  Reply r;
  std::string error;
  if (!exchange(node_addr, "POST", "/_/internal/leave", auth, &r, &error)) {
    std::fprintf(stderr, "ringstore leave: %s\n", error.c_str());
    return 1;
  }
  if (r.status != 202) {
    std::fprintf(stderr, "ringstore leave: %s answered %d: %s\n", node_addr.c_str(), r.status,
                 reason(r).c_str());
    return 1;
  }
  std::printf("%s is leaving: streaming its ranges to their next owners\n", node_addr.c_str());
  std::fflush(stdout);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  std::uint32_t reported = UINT32_MAX;
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (!exchange(node_addr, "GET", "/_/status", auth, &r, &error) || r.status != 200) continue;
    auto j = nlohmann::json::parse(r.body, nullptr, false);
    if (!j.is_object() || !j["transfers"].is_object()) continue;
    const auto& t = j["transfers"];
    std::string state = json_string(t, "state");
    static const nlohmann::json none;
    const nlohmann::json& p = field(t, "leave") != nullptr ? *field(t, "leave") : none;
    auto done = static_cast<std::uint32_t>(json_u64(p, "ranges_done"));
    if (state == "left") {
      std::printf("%s has left: %llu keys sent in %llu ms\n", node_addr.c_str(),
                  static_cast<unsigned long long>(json_u64(p, "keys_sent")),
                  static_cast<unsigned long long>(json_u64(p, "finished_ms") - json_u64(p, "started_ms")));
      return 0;
    }
    if (state != "leaving") {
      std::fprintf(stderr, "ringstore leave: %s is %s, not leaving\n", node_addr.c_str(), state.c_str());
      return 1;
    }
    if (done != reported) {
      reported = done;
      std::printf("  ranges %u/%u, keys sent %llu\n", done,
                  static_cast<std::uint32_t>(json_u64(p, "ranges_total")),
                  static_cast<unsigned long long>(json_u64(p, "keys_sent")));
      std::fflush(stdout);
    }
  }
  std::fprintf(stderr, "ringstore leave: %s did not finish within %u s (it goes on; "
               "see /_/status)\n", node_addr.c_str(), timeout_s);
  return 1;
}

int remove_command(const std::string& node_id_hex, const std::string& via_addr,
                   const std::string& secret) {
  std::uint8_t id[16];
  if (node_id_hex.size() != 32 || !blobstore::unhex(node_id_hex, id, sizeof id)) {
    std::fprintf(stderr, "ringstore remove: --node must be a node id of 32 hex digits, got '%s'\n",
                 node_id_hex.c_str());
    return 2;
  }
  Reply r;
  std::string error;
  if (!exchange(via_addr, "POST", "/_/internal/remove?id=" + node_id_hex,
                Server::auth_token_for(secret), &r, &error)) {
    std::fprintf(stderr, "ringstore remove: %s\n", error.c_str());
    return 1;
  }
  if (r.status != 200) {
    std::fprintf(stderr, "ringstore remove: %s answered %d: %s\n", via_addr.c_str(), r.status,
                 reason(r).c_str());
    return 1;
  }
  std::printf("removed %s; the remaining nodes re-replicate its keys\n", node_id_hex.c_str());
  return 0;
}

}  // namespace node
