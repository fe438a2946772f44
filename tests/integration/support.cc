#include "integration/support.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#ifndef RINGSTORE_BINARY
#error "RINGSTORE_BINARY must name the ringstore binary"
#endif

namespace itest {

namespace fs = std::filesystem;

namespace {

struct CurlGlobal {
  CurlGlobal() { curl_global_init(CURL_GLOBAL_ALL); }
  ~CurlGlobal() { curl_global_cleanup(); }
};
const CurlGlobal curl_global;

int remaining_ms(Clock::time_point until) {
  auto left = std::chrono::duration_cast<Millis>(until - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(left);
}

std::string lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

std::string trim(const std::string& s) {
  std::size_t a = 0, b = s.size();
  while (a < b && (s[a] == ' ' || s[a] == '\t')) a++;
  while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t' || s[b - 1] == '\r' || s[b - 1] == '\n')) b--;
  return s.substr(a, b - a);
}

int exit_code_of(int wstatus) {
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) return 128 + WTERMSIG(wstatus);
  return -1;
}

// Waits for `pid` until the deadline; the exit code, or -1 if still running.
int reap(pid_t pid, Clock::time_point until) {
  for (;;) {
    int ws = 0;
    pid_t r = waitpid(pid, &ws, WNOHANG);
    if (r == pid) return exit_code_of(ws);
    if (r < 0 && errno != EINTR) return -2;
    if (Clock::now() >= until) return -1;
    std::this_thread::sleep_for(5ms);
  }
}

void kill_and_reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  // SIGKILL cannot be ignored; a process stuck in the kernel still goes within seconds.
  (void)reap(pid, Clock::now() + 30s);
}

// argv for execv, built before fork (the child may only call async-signal-safe code).
struct Argv {
  explicit Argv(const std::vector<std::string>& args) : strings(args) {
    for (auto& s : strings) ptrs.push_back(s.data());
    ptrs.push_back(nullptr);
  }
  std::vector<std::string> strings;
  std::vector<char*> ptrs;
};

// This process's environment with `extra` ("NAME=value") set over it, built before the
// fork: the child only execs (no setenv after a fork).
Argv environment(const std::vector<std::string>& extra) {
  auto name_of = [](const std::string& e) { return e.substr(0, e.find('=')); };
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; e++) {
    std::string entry(*e);
    bool replaced = std::any_of(extra.begin(), extra.end(),
                                [&](const std::string& x) { return name_of(x) == name_of(entry); });
    if (!replaced) env.push_back(std::move(entry));
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return Argv(env);
}

// In the child: die with the parent, wire the descriptors, exec.
[[noreturn]] void exec_child(const Argv& argv, const Argv& envp, int out_fd, int err_fd, pid_t parent,
                            int in_fd = -1) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(126);
  if (out_fd >= 0) dup2(out_fd, STDOUT_FILENO);
  if (err_fd >= 0) dup2(err_fd, STDERR_FILENO);
  int stdin_fd = in_fd >= 0 ? in_fd : ::open("/dev/null", O_RDONLY);
  if (stdin_fd >= 0) dup2(stdin_fd, STDIN_FILENO);
  execve(argv.ptrs[0], argv.ptrs.data(), envp.ptrs.data());
  static const char msg[] = "exec failed\n";
  (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
  _exit(127);
}

}  // namespace

const char* binary_path() { return RINGSTORE_BINARY; }

std::string internal_auth_header(const std::string& secret) {
  static const char label[] = "ringstore-internal-v1";
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(label), sizeof label - 1, mac, &len);
  static const char digits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < len; i++) {
    hex += digits[mac[i] >> 4];
    hex += digits[mac[i] & 15];
  }
  return "X-Ringstore-Auth: " + hex;
}

std::vector<std::string> faketime_env(const std::string& offset) {
  // Under ASan the preloaded library comes before ASan's runtime, which ASan refuses
  // unless told that the order is meant.
  const char* asan = getenv("ASAN_OPTIONS");
  std::string asan_options = std::string(asan != nullptr && *asan != '\0' ? asan : "") +
                             (asan != nullptr && *asan != '\0' ? ":" : "") + "verify_asan_link_order=0";
  return {"LD_PRELOAD=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "FAKETIME=" + offset,
          "FAKETIME_DONT_FAKE_MONOTONIC=1", "FAKETIME_DONT_RESET=1", "ASAN_OPTIONS=" + asan_options};
}

// ---- NodeProcess ----

NodeProcess::NodeProcess(NodeOptions options) : options_(std::move(options)) {
  char tmpl[] = "/tmp/ringstore-it.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  root_ = tmpl;
  data_dir_ = root_ + "/data";
  log_path_ = root_ + "/node.log";
  for (int i = 0; i < options_.disks; i++) disks_.push_back(root_ + "/disk" + std::to_string(i));
  if (!options_.copy_from.empty()) {
    namespace fs = std::filesystem;
    const auto how = fs::copy_options::recursive | fs::copy_options::overwrite_existing;
    fs::copy(options_.copy_from + "/data", data_dir_, how);
    for (int i = 0; i < options_.disks; i++) {
      fs::copy(options_.copy_from + "/disk" + std::to_string(i), disks_[i], how);
    }
  }
  try {
    start();
  } catch (...) {
    std::error_code ec;
    fs::remove_all(root_, ec);
    throw;
  }
}

NodeProcess::~NodeProcess() {
  if (pid_ > 0) kill_and_reap(pid_);
  pid_ = -1;
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
  // RINGSTORE_TEST_KEEP=1 leaves the node's directory (data and node.log) for a post-mortem.
  const char* keep = std::getenv("RINGSTORE_TEST_KEEP");
  if (keep != nullptr && std::string(keep) == "1") return;
  std::error_code ec;
  fs::remove_all(root_, ec);
}

std::string NodeProcess::url() const { return "http://127.0.0.1:" + std::to_string(port_); }
std::string NodeProcess::url(const std::string& path) const { return url() + "/" + path; }

std::string NodeProcess::log() const {
  std::ifstream in(log_path_, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  constexpr std::size_t tail = 8192;
  return s.size() > tail ? "..." + s.substr(s.size() - tail) : s;
}

void NodeProcess::start() {
  std::vector<std::string> args = {binary_path(), "serve", "--listen", "127.0.0.1:0",
                                   "--data", data_dir_, "--insecure"};
  for (const auto& d : disks_) {
    args.push_back("--disk");
    args.push_back(d);
  }
  for (const auto& a : options_.extra_args) args.push_back(a);
  Argv argv(args);
  Argv envp = environment(options_.env);

  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  int err_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    ::close(out[0]);
    ::close(out[1]);
    if (err_fd >= 0) ::close(err_fd);
    throw std::runtime_error("fork failed");
  }
  if (pid == 0) exec_child(argv, envp, out[1], err_fd, parent);
  ::close(out[1]);
  if (err_fd >= 0) ::close(err_fd);
  pid_ = pid;
  stdout_fd_ = out[0];

  // Read stdout until "ringstore listening on HOST:PORT\n".
  const std::string prefix = "ringstore listening on ";
  std::string got;
  auto until = Clock::now() + options_.start_deadline;
  for (;;) {
    std::size_t nl = got.find('\n');
    if (nl != std::string::npos) {
      std::string line = got.substr(0, nl);
      std::size_t at = line.find(prefix);
      std::size_t colon = line.rfind(':');
      if (at != std::string::npos && colon != std::string::npos) {
        port_ = std::atoi(line.c_str() + colon + 1);
        if (port_ > 0) return;
      }
      got.erase(0, nl + 1);  // some other line: keep looking
      continue;
    }
    pollfd p{stdout_fd_, POLLIN, 0};
    int left = remaining_ms(until);
    int rc = left > 0 ? poll(&p, 1, left) : 0;
    if (rc < 0 && errno == EINTR) continue;
    char buf[512];
    ssize_t n = rc > 0 ? ::read(stdout_fd_, buf, sizeof buf) : 0;
    if (n > 0) {
      got.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    // EOF (it exited) or the deadline.
    kill_and_reap(pid_);
    pid_ = -1;
    ::close(stdout_fd_);
    stdout_fd_ = -1;
    throw std::runtime_error(std::string(rc == 0 ? "node did not report listening in time"
                                                 : "node exited before listening") +
                             "; log:\n" + log());
  }
}

void NodeProcess::signal(int signo) {
  if (pid_ > 0) ::kill(pid_, signo);
}

int NodeProcess::wait_exit(Millis deadline) {
  if (pid_ <= 0) return -1;
  int rc = reap(pid_, Clock::now() + deadline);
  if (rc == -1) {
    kill_and_reap(pid_);
  }
  pid_ = -1;
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
  stdout_fd_ = -1;
  return rc;
}

int NodeProcess::terminate(Millis deadline) {
  signal(SIGTERM);
  return wait_exit(deadline);
}

void NodeProcess::kill9() {
  if (pid_ <= 0) return;
  kill_and_reap(pid_);
  pid_ = -1;
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
  stdout_fd_ = -1;
}

void NodeProcess::restart() {
  if (pid_ > 0) throw std::logic_error("restart: the node is still running");
  port_ = 0;
  start();
}

long long NodeProcess::rss_bytes() const {
  if (pid_ <= 0) return -1;
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::atoll(line.c_str() + 6) * 1024;  // "VmRSS:   12345 kB"
    }
  }
  return -1;
}

RunResult run_binary(const std::vector<std::string>& args, Millis deadline) {
  RunOptions o;
  o.deadline = deadline;
  return run_binary(args, o);
}

namespace {

// Writes what the pipe takes of `input` from `*at`; closes the pipe when all is written
// or the child stopped reading.
void feed_stdin(pollfd* p, const std::string& input, std::size_t* at) {
  ssize_t n = ::write(p->fd, input.data() + *at, input.size() - *at);
  if (n > 0) *at += static_cast<std::size_t>(n);
  if ((n < 0 && errno != EAGAIN && errno != EINTR) || *at == input.size()) {
    ::close(p->fd);
    p->fd = -1;
  }
}

}  // namespace

RunResult run_binary(const std::vector<std::string>& args, const RunOptions& o) {
  std::vector<std::string> full = {binary_path()};
  full.insert(full.end(), args.begin(), args.end());
  Argv argv(full);
  Argv envp = environment(o.env);
  int out[2], err[2], in[2] = {-1, -1};
  if (pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  if (pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  if (o.input) {
    signal(SIGPIPE, SIG_IGN);  // a child that exits unread must not kill the test
    if (pipe2(in, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    fcntl(in[1], F_SETFL, O_NONBLOCK);
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) exec_child(argv, envp, out[1], err[1], parent, in[0]);
  ::close(out[1]);
  ::close(err[1]);
  if (in[0] >= 0) ::close(in[0]);
  RunResult r;
  auto until = Clock::now() + o.deadline;
  pollfd p[3] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {in[1], POLLOUT, 0}};
  std::size_t input_at = 0;
  int open_fds = 2;
  while (open_fds > 0) {
    int left = remaining_ms(until);
    if (left == 0) break;
    int rc = poll(p, 3, left);
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) break;
    if (p[2].fd >= 0 && p[2].revents != 0) feed_stdin(&p[2], *o.input, &input_at);
    for (int i = 0; i < 2; i++) {
      if (p[i].fd < 0 || p[i].revents == 0) continue;
      char buf[4096];
      ssize_t n = ::read(p[i].fd, buf, sizeof buf);
      if (n > 0) {
        (i == 0 ? r.out : r.err).append(buf, static_cast<std::size_t>(n));
      } else {
        ::close(p[i].fd);
        p[i].fd = -1;
        open_fds--;
      }
    }
  }
  for (auto& x : p) {
    if (x.fd >= 0) ::close(x.fd);
  }
  r.exit_code = reap(pid, until);
  if (r.exit_code == -1) kill_and_reap(pid);
  return r;
}

std::vector<std::string> files_under(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file(ec)) out.push_back(fs::relative(it->path(), dir, ec).string());
  }
  return out;
}

// ---- HTTP with libcurl ----

std::string Response::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? std::string() : it->second;
}

namespace {

struct Transfer {
  const Request* req;
  Response* resp;
  std::size_t body_sent = 0;
};

std::size_t on_header(char* data, std::size_t size, std::size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {
    std::size_t sp = line.find(' ');
    long status = sp == std::string::npos ? 0 : std::atol(line.c_str() + sp + 1);
    t->resp->statuses.push_back(status);
    t->resp->headers.clear();  // a new response (after an interim one)
    return size * n;
  }
  std::size_t colon = line.find(':');
  if (colon != std::string::npos) {
    t->resp->headers[lower(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
  }
  return size * n;
}

std::size_t on_write(char* data, std::size_t size, std::size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  if (t->req->writer) {
    t->req->writer(data, size * n);
  } else {
    t->resp->body.append(data, size * n);
  }
  return size * n;
}

std::size_t on_read(char* buf, std::size_t size, std::size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::size_t room = size * n;
  if (t->req->reader) return t->req->reader(buf, room);
  std::size_t left = t->req->body.size() - t->body_sent;
  std::size_t k = left < room ? left : room;
  std::memcpy(buf, t->req->body.data() + t->body_sent, k);
  t->body_sent += k;
  return k;
}

}  // namespace

Response perform(const Request& r) {
  Response resp;
  Transfer t{&r, &resp};
  CURL* c = curl_easy_init();
  if (c == nullptr) {
    resp.error = "curl_easy_init failed";
    return resp;
  }
  curl_easy_setopt(c, CURLOPT_URL, r.url.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, r.timeout_ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);  // send the target exactly as written
  curl_easy_setopt(c, CURLOPT_FORBID_REUSE, 1L);
  bool has_body = r.reader || !r.body.empty() || r.force_upload;
  if (r.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (r.method == "PUT") {
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &t);
    if (r.reader) {
      if (r.upload_size) {
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(*r.upload_size));
      }
    } else {
      curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
    }
  } else if (r.method != "GET") {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r.method.c_str());
    if (has_body) {
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, r.body.data());
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
    }
  }
  curl_slist* list = nullptr;
  for (const auto& h : r.headers) list = curl_slist_append(list, h.c_str());
  if (list != nullptr) curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);

  CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) resp.error = curl_easy_strerror(rc);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp.status);
  curl_easy_getinfo(c, CURLINFO_TOTAL_TIME, &resp.seconds);
  curl_slist_free_all(list);
  curl_easy_cleanup(c);
  return resp;
}

Response request(const std::string& method, const std::string& url, const std::string& body,
                 const std::vector<std::string>& headers, long timeout_ms) {
  Request r;
  r.method = method;
  r.url = url;
  r.body = body;
  r.headers = headers;
  r.timeout_ms = timeout_ms;
  r.force_upload = method == "PUT";
  return perform(r);
}

std::string url_encode(const std::string& s, bool keep_slash) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/');
    if (plain) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

// ---- RawSocket ----

RawSocket::RawSocket(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    connect_errno_ = errno;
    return;
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  if (rc != 0 && errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, 3000) == 1) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      rc = err == 0 ? 0 : -1;
      errno = err;
    } else {
      errno = ETIMEDOUT;
    }
  }
  if (rc != 0) {
    connect_errno_ = errno;
    ::close(fd);
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fd_ = fd;
}

RawSocket::~RawSocket() { close(); }

void RawSocket::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool RawSocket::send_all(const std::string& bytes, Millis deadline) {
  if (fd_ < 0) return false;
  auto until = Clock::now() + deadline;
  std::size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int left = remaining_ms(until);
      if (left == 0) return false;
      pollfd p{fd_, POLLOUT, 0};
      poll(&p, 1, left);
      continue;
    }
    return false;
  }
  return true;
}

int RawSocket::read_some(Clock::time_point until) {
  if (fd_ < 0) return 0;
  for (;;) {
    char buf[65536];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n > 0) {
      buf_.append(buf, static_cast<std::size_t>(n));
      return 1;
    }
    if (n == 0) return 0;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return 0;  // reset counts as closed
    int left = remaining_ms(until);
    if (left == 0) return -1;
    pollfd p{fd_, POLLIN, 0};
    poll(&p, 1, left);
  }
}

std::optional<RawResponse> RawSocket::read_response(Millis deadline, bool head) {
  auto until = Clock::now() + deadline;
  std::size_t end;
  while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
    if (read_some(until) <= 0) return std::nullopt;
  }
  RawResponse r;
  std::string head_text = buf_.substr(0, end);
  std::istringstream lines(head_text);
  std::string line;
  std::getline(lines, line);
  if (line.rfind("HTTP/1.", 0) != 0) return std::nullopt;
  r.status = std::atoi(line.c_str() + 9);
  while (std::getline(lines, line)) {
    std::size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    r.headers[lower(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
  }
  buf_.erase(0, end + 4);
  bool no_body = head || (r.status >= 100 && r.status < 200) || r.status == 204 || r.status == 304;
  if (no_body) return r;
  auto cl = r.headers.find("content-length");
  if (cl == r.headers.end()) {  // delimited by close
    while (read_some(until) > 0) {
    }
    r.body = std::move(buf_);
    buf_.clear();
    return r;
  }
  std::size_t want = static_cast<std::size_t>(std::strtoull(cl->second.c_str(), nullptr, 10));
  while (buf_.size() < want) {
    if (read_some(until) <= 0) return std::nullopt;
  }
  r.body = buf_.substr(0, want);
  buf_.erase(0, want);
  return r;
}

bool RawSocket::wait_closed(Millis deadline) {
  auto until = Clock::now() + deadline;
  for (;;) {
    int rc = read_some(until);
    if (rc == 0) return true;
    if (rc < 0) return false;
  }
}

// ---- data ----

namespace {
std::string to_hex(const unsigned char* p, unsigned n) {
  static const char hex[] = "0123456789abcdef";
  std::string s;
  for (unsigned i = 0; i < n; i++) {
    s.push_back(hex[p[i] >> 4]);
    s.push_back(hex[p[i] & 15]);
  }
  return s;
}

std::string digest_hex(const EVP_MD* md, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  if (EVP_Digest(data.data(), data.size(), out, &n, md, nullptr) != 1) return "";
  return to_hex(out, n);
}
}  // namespace

std::string md5_hex(const std::string& data) { return digest_hex(EVP_md5(), data); }
std::string sha256_hex_of(const std::string& data) { return digest_hex(EVP_sha256(), data); }

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr);
}

Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Sha256::update(const void* data, std::size_t n) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, n);
}

std::string Sha256::hex() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), out, &n);
  return to_hex(out, n);
}

std::uint64_t Prng::next() {
  std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void Prng::fill(char* out, std::size_t n) {
  // The same stream whatever the sizes of the pieces asked for: bytes of each word go
  // out low byte first, whole words by memcpy on a little-endian machine.
  while (n > 0) {
    if (spare_bytes_ == 0 && n >= 8) {
      std::uint64_t w = next();
      std::memcpy(out, &w, 8);
      out += 8;
      n -= 8;
      continue;
    }
    if (spare_bytes_ == 0) {
      spare_ = next();
      spare_bytes_ = 8;
    }
    *out++ = static_cast<char>(spare_ & 0xFF);
    spare_ >>= 8;
    spare_bytes_--;
    n--;
  }
}

std::string Prng::bytes(std::size_t n) {
  std::string s(n, '\0');
  fill(s.data(), n);
  return s;
}

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "Prng::fill assumes little-endian");

// ---- NodeGroup ----

NodeGroup::NodeGroup(int n, const NodeOptions& o) {
  for (int i = 0; i < n; i++) add(o);
}

NodeProcess& NodeGroup::add(NodeOptions o) {
  if (!nodes.empty()) {
    o.extra_args.push_back("--seeds");
    o.extra_args.push_back("127.0.0.1:" + std::to_string(nodes[0]->port()));
  }
  nodes.push_back(std::make_unique<NodeProcess>(o));
  return *nodes.back();
}

nlohmann::json NodeGroup::status(std::size_t i) {
  Response r = request("GET", nodes[i]->url("_/status"), "", {}, 3000);
  if (r.status != 200) return nlohmann::json();
  return nlohmann::json::parse(r.body, nullptr, false);
}

bool NodeGroup::agrees(std::size_t alive, std::size_t dead) {
  for (std::size_t i = 0; i < nodes.size(); i++) {
    if (!nodes[i]->running()) continue;
    nlohmann::json s = status(i);
    if (!s.is_object()) return false;
    std::size_t a = 0, d = 0;
    for (const auto& m : s["members"]) {
      bool up = m["alive"].get<bool>();
      (up ? a : d)++;
      if (up && m.value("state", "normal") != "normal") return false;
    }
    if (a != alive || d != dead) return false;
  }
  return true;
}

bool NodeGroup::settled(std::size_t normal) {
  for (std::size_t i = 0; i < nodes.size(); i++) {
    if (!nodes[i]->running()) continue;
    nlohmann::json s = status(i);
    if (!s.is_object()) return false;
    if (s["transfers"].contains("running")) return false;
    std::size_t n = 0;
    for (const auto& m : s["members"]) {
      std::string state = m.value("state", "");
      if (state == "joining" || state == "leaving") return false;
      if (state == "normal" && m["alive"].get<bool>()) n++;
    }
    if (n != normal) return false;
  }
  return true;
}

bool NodeGroup::replicas_hold(const std::string& key, const nlohmann::json& version, bool tombstone,
                              std::size_t copies) {
  std::size_t via = 0;
  while (via < nodes.size() && !nodes[via]->running()) via++;
  if (via == nodes.size()) return false;
  Response r = request("GET", nodes[via]->url("_/locate?key=" + url_encode(key, false)), "", {}, 3000);
  if (r.status != 200) return false;
  nlohmann::json j = nlohmann::json::parse(r.body, nullptr, false);
  if (!j.is_object() || j["replicas"].size() != copies) return false;
  for (const auto& rep : j["replicas"]) {
    if (rep.contains("error")) return false;
    if (rep["version"] != version) return false;
    if (!version.is_null() && rep["tombstone"].get<bool>() != tombstone) return false;
  }
  return true;
}

std::uint64_t NodeGroup::sum(const char* field, const char* section) {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < nodes.size(); i++) {
    if (!nodes[i]->running()) continue;
    nlohmann::json s = status(i);
    if (!s.is_object()) continue;
    total += (section ? s[section][field] : s[field]).get<std::uint64_t>();
  }
  return total;
}

bool NodeGroup::written_out(double timeout_s) {
  return wait_for([&] {
    for (std::size_t i = 0; i < nodes.size(); i++) {
      if (!nodes[i]->running()) continue;
      nlohmann::json s = status(i);
      if (!s.is_object() || s["pending_files"]["files"].get<std::uint64_t>() != 0) return false;
    }
    return true;
  }, timeout_s) >= 0;
}

}  // namespace itest
