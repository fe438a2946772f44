// ringstore-thrash: a verifying load generator for a ringstore cluster.
//
// Each worker thread owns a private key space and repeats one cycle per fresh key
// for the given duration:
//
//     PUT  random value        expect 201 and ETag = MD5(value)
//     GET                      expect 200 with exactly that value
//     DELETE                   expect 204
//     GET                      expect 404 (not with --cycle mkv)
//
// The four requests of a cycle go to different nodes in turn (worker w sends request
// j of its run to node (w + j) mod N over a keep-alive connection per node), so every
// read is checked against a write coordinated elsewhere. After the timed part, the
// last deleted keys of every worker are read again through every node and must still
// answer 404 (nothing resurrected).
//
// This is the cycle of minikeyvalue's tools/thrasher.go (PUT, GET and compare, DELETE)
// with one more GET that checks the delete. `--cycle mkv` drops that GET, which makes
// the cycle minikeyvalue's own, for a like-for-like rate; the deletes are then checked
// only after the timed part (below). It is written in C++ with blocking sockets,
// one thread per worker, so that the load generator takes little of the CPU it shares
// with the nodes (a few tens of microseconds per request).
//
// Failures fall in two classes:
//   errors      the request did not get a usable answer: connection failures,
//               timeouts, 5xx and other unexpected statuses
//   mismatches  the cluster answered but broke its contract: a GET after an
//               acknowledged PUT returning 404 or other bytes, a GET after an
//               acknowledged DELETE returning 200, a wrong ETag
// After a failure the cycle is abandoned and the worker moves to a new key.
//
// Prints one line "THRASHRESULT key=value ..." on stdout; the first failures go to
// stderr. Exit status 0 when nothing failed, 1 otherwise, 2 on bad usage.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <strings.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/digest.h"
#include "llhttp.h"

namespace {

constexpr int timeout_s = 10;                     // per socket read or write
constexpr std::size_t final_check_per_worker = 20;  // deleted keys re-read after the run
constexpr int max_reported = 20;                  // failure messages printed
constexpr int error_pause_ms = 10;                // a worker's pause after a failed request
constexpr std::size_t response_bytes_max = 16u << 20;  // a longer answer is an error

using Clock = std::chrono::steady_clock;

struct Node {
  std::string host;
  int port = 0;
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

struct Response {
  int status = 0;
  std::string etag;
  std::string body;
  bool keep_alive = false;
};

// One keep-alive HTTP/1.1 connection with blocking I/O and a timeout on every call.
class Connection {
 public:
  explicit Connection(const Node& node) : node_(node) {
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
    addr.sin_port = htons(static_cast<std::uint16_t>(node_.port));
    if (inet_pton(AF_INET, node_.host.c_str(), &addr.sin_addr) != 1) {
      *error = "not an IPv4 address: " + node_.host;
      close();
      return false;
    }
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
        *error = "connection closed by the node before a complete response";
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

  Node node_;
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

class Worker {
 public:
  Worker(int index, const std::vector<Node>& nodes, const std::string& run_id,
         std::size_t max_size, bool check_delete, Clock::time_point deadline, Reporter* reporter)
      : index_(index),
        nodes_(nodes),
        run_id_(run_id),
        max_size_(max_size),
        check_delete_(check_delete),
        deadline_(deadline),
        reporter_(reporter),
        rng_(std::hash<std::string>{}(run_id + "/" + std::to_string(index))),
        turn_(static_cast<std::size_t>(index)) {
    for (const Node& n : nodes_) conns_.push_back(std::make_unique<Connection>(n));
  }

  void run() {
    for (std::uint64_t seq = 0; Clock::now() < deadline_; ++seq) cycle(seq);
  }

  // Deleted keys must still be gone, seen from every node.
  void final_check() {
    std::size_t from = deleted_.size() > final_check_per_worker
                           ? deleted_.size() - final_check_per_worker
                           : 0;
    for (std::size_t k = from; k < deleted_.size(); ++k) {
      const std::string& key = deleted_[k];
      for (std::size_t n = 0; n < nodes_.size(); ++n) {
        Response r;
        if (!call(get, key, nullptr, n, false, &r)) continue;
        if (r.status == 200) {
          ++mismatches_;
          reporter_->report("MISMATCH after the run, GET /" + key + " via node " +
                            std::to_string(n + 1) + " answered 200 with " +
                            std::to_string(r.body.size()) + " bytes; it was deleted");
        } else if (r.status != 404) {
          ++errors_;
          reporter_->report("after the run, GET /" + key + " via node " +
                            std::to_string(n + 1) + ": status " + std::to_string(r.status));
        }
      }
    }
    for (auto& c : conns_) c->close();
  }

  std::size_t checked() const { return std::min(deleted_.size(), final_check_per_worker); }

  std::vector<double> lat_us, cycle_us, kind_us[3];
  std::uint64_t errors_ = 0, mismatches_ = 0;

 private:
  // One request; false (counted and reported) when it got no usable answer.
  bool call(Kind kind, const std::string& key, const std::string* body, std::size_t node,
            bool timed, Response* r) {
    std::string req = std::string(kind_name[kind]) + " /" + key + " HTTP/1.1\r\nHost: " +
                      nodes_[node].host + "\r\n";
    if (body != nullptr) {
      req += "Content-Type: application/octet-stream\r\nContent-Length: " +
             std::to_string(body->size()) + "\r\n\r\n";
      req += *body;
    } else {
      req += "\r\n";
    }
    auto t0 = Clock::now();
    std::string error;
    if (!conns_[node]->call(req, r, &error)) {
      ++errors_;
      reporter_->report(std::string(kind_name[kind]) + " /" + key + " via node " +
                        std::to_string(node + 1) + ": " + error);
      // Do not spin on a node that refuses connections.
      std::this_thread::sleep_for(std::chrono::milliseconds(error_pause_ms));
      return false;
    }
    if (timed) {
      double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
      lat_us.push_back(us);
      kind_us[kind].push_back(us);
    }
    return true;
  }

  bool next(Kind kind, const std::string& key, const std::string* body, Response* r,
            std::size_t* node) {
    *node = turn_++ % nodes_.size();
    return call(kind, key, body, *node, true, r);
  }

  void unexpected(const char* what, const std::string& key, std::size_t node,
                  const Response& r) {
    ++errors_;
    reporter_->report(std::string(what) + " /" + key + " via node " + std::to_string(node + 1) +
                      ": unexpected status " + std::to_string(r.status) + ": " +
                      r.body.substr(0, 200));
  }

  void mismatch(const std::string& msg) {
    ++mismatches_;
    reporter_->report("MISMATCH " + msg);
  }

  static std::string via(std::size_t node) { return " via node " + std::to_string(node + 1); }

  void cycle(std::uint64_t seq) {
    char name[96];
    std::snprintf(name, sizeof name, "thrash/%s/w%02d/%08llu", run_id_.c_str(), index_,
                  static_cast<unsigned long long>(seq));
    const std::string key = name;
    std::uniform_int_distribution<std::size_t> len(1, max_size_);
    std::string value(len(rng_), '\0');
    for (char& c : value) c = static_cast<char>(rng_() & 0xff);
    const std::string etag = "\"" + md5_hex(value) + "\"";
    auto t0 = Clock::now();
    Response r;
    std::size_t node = 0;

    if (!next(put, key, &value, &r, &node)) return;
    if (r.status != 201) return unexpected("PUT", key, node, r);
    if (r.etag != etag) {
      return mismatch("PUT /" + key + via(node) + ": ETag " + r.etag + ", expected " + etag);
    }
    const std::size_t put_node = node;

    if (!next(get, key, nullptr, &r, &node)) return;
    if (r.status == 200) {
      if (r.body != value) {
        return mismatch("GET /" + key + via(node) + " after PUT" + via(put_node) + ": " +
                        std::to_string(r.body.size()) + " bytes that differ from the " +
                        std::to_string(value.size()) + " written");
      }
    } else if (r.status == 404) {
      return mismatch("GET /" + key + via(node) + " after PUT" + via(put_node) +
                      " answered 404");
    } else {
      return unexpected("GET", key, node, r);
    }

    if (!next(del, key, nullptr, &r, &node)) return;
    if (r.status != 204) return unexpected("DELETE", key, node, r);
    const std::size_t del_node = node;
    if (check_delete_) {
      if (!next(get, key, nullptr, &r, &node)) return;
      if (r.status == 200) {
        return mismatch("GET /" + key + via(node) + " after DELETE" + via(del_node) +
                        " answered 200 with " +
                        (r.body == value ? std::string("the deleted value")
                                         : std::to_string(r.body.size()) + " other bytes"));
      }
      if (r.status != 404) return unexpected("GET", key, node, r);
    }

    cycle_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    deleted_.push_back(key);
  }

  int index_;
  const std::vector<Node>& nodes_;
  std::string run_id_;
  std::size_t max_size_;
  bool check_delete_;
  Clock::time_point deadline_;
  Reporter* reporter_;
  std::mt19937_64 rng_;
  std::size_t turn_;
  std::vector<std::unique_ptr<Connection>> conns_;
  std::vector<std::string> deleted_;  // keys whose DELETE was acknowledged and checked
};

// "http://HOST:PORT" or "http://HOST:PORT/" with an IPv4 HOST.
bool parse_url(const std::string& url, Node* out) {
  const std::string scheme = "http://";
  if (url.compare(0, scheme.size(), scheme) != 0) return false;
  std::string rest = url.substr(scheme.size());
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  auto colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  out->host = rest.substr(0, colon);
  std::string port = rest.substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  out->port = std::atoi(port.c_str());
  in_addr a{};
  return out->port > 0 && out->port < 65536 && inet_pton(AF_INET, out->host.c_str(), &a) == 1;
}

// The samples of every worker picked by `of`, sorted.
template <typename Of>
std::vector<double> merged(const std::vector<Worker*>& workers, Of of) {
  std::vector<double> all;
  for (Worker* w : workers) {
    const std::vector<double>& xs = of(*w);
    all.insert(all.end(), xs.begin(), xs.end());
  }
  std::sort(all.begin(), all.end());
  return all;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Verifying PUT/GET/DELETE load on ringstore nodes."};
  double duration = 10;
  int workers_n = 16;
  std::size_t max_size = 1024;
  std::string run_id;
  std::string cycle = "full";
  std::vector<std::string> urls;
  app.add_option("--duration", duration, "seconds (default 10)");
  app.add_option("--workers", workers_n, "concurrent workers (default 16)");
  app.add_option("--max-size", max_size, "values are 1..B random bytes (default 1024)");
  app.add_option("--run-id", run_id, "key namespace (default: random)");
  app.add_option("--cycle", cycle,
                 "full: PUT, GET, DELETE, GET that must answer 404 (default); "
                 "mkv: PUT, GET, DELETE, minikeyvalue's thrasher cycle");
  app.add_option("urls", urls, "node base URLs, e.g. http://127.0.0.1:3000")->required();
  CLI11_PARSE(app, argc, argv);

  auto usage = [](const std::string& msg) {
    std::fprintf(stderr, "ringstore-thrash: %s\n", msg.c_str());
    return 2;
  };
  if (!(duration > 0) || workers_n < 1 || workers_n > 1024 || max_size < 1 ||
      max_size > response_bytes_max) {
    return usage("--duration must be positive, --workers 1..1024, --max-size 1..16777216");
  }
  if (cycle != "full" && cycle != "mkv") return usage("--cycle must be full or mkv");
  if (run_id.empty()) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%08x", static_cast<unsigned>(std::random_device{}()));
    run_id = buf;
  }
  if (run_id.size() > 32 || !std::all_of(run_id.begin(), run_id.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
      })) {
    return usage("--run-id must be 1..32 of [A-Za-z0-9_-]");
  }
  std::vector<Node> nodes;
  for (const std::string& u : urls) {
    Node n;
    if (!parse_url(u, &n)) return usage("not an http://IPV4:PORT URL: " + u);
    nodes.push_back(n);
  }

  Reporter reporter;
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(duration));
  std::vector<std::unique_ptr<Worker>> owned;
  std::vector<Worker*> workers;
  for (int i = 0; i < workers_n; ++i) {
    owned.push_back(std::make_unique<Worker>(i, nodes, run_id, max_size, cycle == "full", deadline,
                                             &reporter));
    workers.push_back(owned.back().get());
  }
  auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (Worker* w : workers) threads.emplace_back([w] { w->run(); });
  for (auto& t : threads) t.join();
  double elapsed_us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();

  std::uint64_t timed_errors = 0, timed_mismatches = 0, checked = 0;
  for (Worker* w : workers) {
    timed_errors += w->errors_;
    timed_mismatches += w->mismatches_;
  }
  threads.clear();
  for (Worker* w : workers) threads.emplace_back([w] { w->final_check(); });
  for (auto& t : threads) t.join();
  std::uint64_t errors = 0, mismatches = 0;
  for (Worker* w : workers) {
    errors += w->errors_;
    mismatches += w->mismatches_;
    checked += w->checked();
  }

  std::vector<double> lat = merged(workers, [](const Worker& w) -> const auto& { return w.lat_us; });
  std::vector<double> clat = merged(workers, [](const Worker& w) -> const auto& { return w.cycle_us; });
  std::string kinds;
  const char* const kind_key[] = {"put", "get", "delete"};
  for (int k = 0; k < 3; ++k) {
    std::vector<double> xs =
        merged(workers, [k](const Worker& w) -> const auto& { return w.kind_us[k]; });
    char buf[96];
    std::snprintf(buf, sizeof buf, " %s_p50_us=%.0f %s_p99_us=%.0f", kind_key[k],
                  percentile(xs, 50), kind_key[k], percentile(xs, 99));
    kinds += buf;
  }
  std::printf(
      "THRASHRESULT requests=%zu cycles=%zu duration_us=%.0f workers=%d nodes=%zu "
      "p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f cycle_p50_us=%.0f cycle_p99_us=%.0f "
      "errors=%llu mismatches=%llu final_errors=%llu final_mismatches=%llu "
      "final_checked=%llu%s\n",
      lat.size(), clat.size(), elapsed_us, workers_n, nodes.size(), percentile(lat, 50),
      percentile(lat, 90), percentile(lat, 99), lat.empty() ? 0.0 : lat.back(),
      percentile(clat, 50), percentile(clat, 99), static_cast<unsigned long long>(errors),
      static_cast<unsigned long long>(mismatches),
      static_cast<unsigned long long>(errors - timed_errors),
      static_cast<unsigned long long>(mismatches - timed_mismatches),
      static_cast<unsigned long long>(checked), kinds.c_str());
  std::fflush(stdout);
  return errors != 0 || mismatches != 0 || clat.empty() ? 1 : 0;
}
