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

bool exchange(const std::string& addr, const std::string& method, const std::string& target,
              const std::string& auth, Reply* reply, std::string* error) {
  sockaddr_in to{};
  if (!split_addr(addr, &to)) {
    *error = "not an IPv4 HOST:PORT: '" + addr + "'";
    return false;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    *error = "cannot connect to " + addr + ": " + std::strerror(errno);
    close(fd);
    return false;
  }
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: " + addr + "\r\n" +
                    (auth.empty() ? "" : "X-Ringstore-Auth: " + auth + "\r\n") +
                    "Content-Length: 0\r\nConnection: close\r\n\r\n";
  if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    *error = "cannot send to " + addr;
    close(fd);
    return false;
  }
  std::string resp;
  char buf[65536];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    resp.append(buf, static_cast<std::size_t>(n));
    if (resp.size() > (64u << 20)) break;
  }
  close(fd);
  std::size_t end = resp.find("\r\n\r\n");
  if (resp.compare(0, 9, "HTTP/1.1 ") != 0 || end == std::string::npos || resp.size() < 12) {
    *error = "no answer from " + addr + (resp.empty() ? " (timed out?)" : "");
    return false;
  }
  auto status = parse_u64(std::string_view(resp).substr(9, 3));
  if (!status) {
    *error = "bad answer from " + addr;
    return false;
  }
  reply->status = static_cast<int>(*status);
  reply->body = resp.substr(end + 4);
  while (!reply->body.empty() && reply->body.back() == '\n') reply->body.pop_back();
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
    std::string state = t.value("state", std::string());
    const auto& p = t["leave"];
    std::uint32_t done = p.is_object() ? p.value("ranges_done", 0u) : 0;
    if (state == "left") {
      std::printf("%s has left: %llu keys sent in %llu ms\n", node_addr.c_str(),
                  static_cast<unsigned long long>(p.value("keys_sent", 0ull)),
                  static_cast<unsigned long long>(p.value("finished_ms", 0ull) -
                                                  p.value("started_ms", 0ull)));
      return 0;
    }
    if (state != "leaving") {
      std::fprintf(stderr, "ringstore leave: %s is %s, not leaving\n", node_addr.c_str(), state.c_str());
      return 1;
    }
    if (done != reported) {
      reported = done;
      std::printf("  ranges %u/%u, keys sent %llu\n", done, p.value("ranges_total", 0u),
                  static_cast<unsigned long long>(p.value("keys_sent", 0ull)));
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
