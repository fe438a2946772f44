#include "node/client_cli.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>

#include "blobstore/blob_file.h"
#include "node/admin_cli.h"
#include "node/attrs.h"
#include "node/json_util.h"
#include "node/peer_client.h"

namespace node {

namespace {

using Clock = std::chrono::steady_clock;

// A bar redrawn more often than this only costs the terminal time.
constexpr auto progress_redraw_interval = std::chrono::milliseconds(200);
// The part of a server's error body quoted in our one-line message.
constexpr std::size_t quoted_body_bytes_max = 300;

// "ringstore CMD: bytes/total  rate" on one stderr line, redrawn in place. Only on a
// terminal and only for values of progress_bytes_min or more (a value of unknown size
// once that much has moved): scripts and small values see nothing.
class Progress {
 public:
  explicit Progress(const char* cmd) : cmd_(cmd), tty_(isatty(STDERR_FILENO) == 1) {}
  ~Progress() { finish(); }
  void update(std::uint64_t done, std::optional<std::uint64_t> total) {
    if (!tty_ || (total ? *total : done) < progress_bytes_min) return;
    auto now = Clock::now();
    if (drawn_ && now - last_ < progress_redraw_interval && (!total || done < *total)) return;
    last_ = now;
    drawn_ = true;
    double s = std::chrono::duration<double>(now - start_).count();
    double rate = s > 0 ? static_cast<double>(done) / s : 0;
    constexpr double mib = 1024.0 * 1024.0;
    if (total) {
      std::fprintf(stderr, "\rringstore %s: %.1f/%.1f MiB  %.1f MiB/s  ", cmd_, done / mib,
                   static_cast<double>(*total) / mib, rate / mib);
    } else {
      std::fprintf(stderr, "\rringstore %s: %.1f MiB  %.1f MiB/s  ", cmd_, done / mib, rate / mib);
    }
  }
  // Ends the bar's line, so that an error or the shell prompt starts on its own.
  void finish() {
    if (drawn_) std::fputc('\n', stderr);
    drawn_ = false;
  }

 private:
  const char* cmd_;
  bool tty_;
  bool drawn_ = false;
  Clock::time_point start_ = Clock::now(), last_;
};

int fail(const char* cmd, const std::string& message) {
  std::fprintf(stderr, "ringstore %s: %s\n", cmd, message.c_str());
  return exit_error;
}

// A status the command did not expect: one line quoting the server's JSON error.
int answer_exit(const char* cmd, const std::string& key, const std::string& addr, const Reply& r) {
  std::string body = r.body.substr(0, quoted_body_bytes_max);
  for (char& c : body) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  if (body.empty() && r.status == 404) body = "not found";  // a HEAD's 404 has no body
  std::fprintf(stderr, "ringstore %s: %s: %s answered %d%s%s\n", cmd, key.c_str(), addr.c_str(),
               r.status, body.empty() ? "" : ": ", body.c_str());
  if (r.status == 404) return exit_not_found;
  if (r.status >= 400 && r.status < 500) return exit_client_error;
  return exit_error;
}

// The 32 hex digits inside an ETag of the form "<md5>", else empty: an ETag of another
// form is not ours to check.
std::string etag_md5(const Reply& r) {
  const std::string* etag = r.header("etag");
  if (etag == nullptr || etag->size() != 34 || etag->front() != '"' || etag->back() != '"') return "";
  std::string hex = etag->substr(1, 32);
  for (char& c : hex) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return "";
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return hex;
}

// GETs `key` into `fd`. Ok with reply->status set whatever it is; for a 200 the body was
// written whole, with the length of its Content-Length and the MD5 of its ETag.
Status fetch_value(const ClientOptions& o, const char* cmd, const std::string& key, int fd, Reply* reply) {
  blobstore::Md5 md5;
  Progress progress(cmd);
  ClientRequest req;
  req.target = "/" + encode_key(key);
  req.stall_ms = client_stall_ms;
  req.body_sink = [&](const char* data, std::size_t n) {
    static const std::string what = "the output";
    if (Status s = blobstore::write_all(fd, data, n, what); !s.is_ok()) return s;
    md5.update(data, n);
    progress.update(reply->body_bytes, reply->content_length);
    return Status::ok();
  };
  Status s = exchange(o.node, req, reply);
  progress.finish();
  if (!s.is_ok() || reply->status != 200) return s;
  if (reply->content_length && *reply->content_length != reply->body_bytes) {
    return Status::corruption("got " + std::to_string(reply->body_bytes) + " bytes, Content-Length " +
                              std::to_string(*reply->content_length));
  }
  const std::string got = blobstore::md5_hex(md5.finish());
  std::string want = etag_md5(*reply);
  if (!want.empty() && got != want) {
    return Status::corruption("MD5 " + got + " does not match the ETag " + want);
  }
  return Status::ok();
}

// The temp file of a download in progress, removed by SIGINT/SIGTERM so that ^C leaves
// no stray file either. Only one download runs at a time.
char temp_path_for_signal[PATH_MAX];

void on_download_signal(int signo) {
  if (temp_path_for_signal[0] != '\0') unlink(temp_path_for_signal);
  signal(signo, SIG_DFL);
  raise(signo);
}

// A temp file beside `file` (same directory, so the rename is atomic), or -1 with *error.
int open_temp_beside(const std::string& file, std::string* temp, std::string* error) {
  std::size_t slash = file.rfind('/');
  std::string dir = slash == std::string::npos ? "." : file.substr(0, slash == 0 ? 1 : slash);
  std::string base = slash == std::string::npos ? file : file.substr(slash + 1);
  *temp = dir + "/." + base + ".ringstore-XXXXXX";
  if (temp->size() >= sizeof temp_path_for_signal) {
    *error = "path too long: " + file;
    return -1;
  }
  int fd = mkostemp(temp->data(), O_CLOEXEC);
  if (fd < 0) {
    *error = "cannot create a temp file in " + dir + ": " + std::strerror(errno);
    return -1;
  }
  std::memcpy(temp_path_for_signal, temp->c_str(), temp->size() + 1);
  signal(SIGINT, on_download_signal);
  signal(SIGTERM, on_download_signal);
  return fd;
}

void forget_temp() {
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  temp_path_for_signal[0] = '\0';
}

// Makes a complete download FILE: durable first (a rename that outlives its data after a
// power cut leaves an empty FILE), with the mode a plain create would have given it.
Status commit_temp(int fd, const std::string& temp, const std::string& file) {
  mode_t mask = umask(0);
  umask(mask);
  if (fchmod(fd, 0666 & ~mask) != 0) return Status::from_errno("chmod " + temp, errno);
  if (fsync(fd) != 0) return Status::from_errno("fsync " + temp, errno);
  if (rename(temp.c_str(), file.c_str()) != 0) return Status::from_errno("rename to " + file, errno);
  return Status::ok();
}

int get_to_file(const ClientOptions& o, const std::string& key, const std::string& file) {
  std::string temp, error;
  int fd = open_temp_beside(file, &temp, &error);
  if (fd < 0) return fail("get", error);
  Reply reply;
  Status s = fetch_value(o, "get", key, fd, &reply);
  if (s.is_ok() && reply.status == 200) s = commit_temp(fd, temp, file);
  bool committed = s.is_ok() && reply.status == 200;
  close(fd);
  if (!committed) unlink(temp.c_str());
  forget_temp();
  if (!s.is_ok()) return fail("get", key + ": " + s.message() + "; " + file + " left as it was");
  if (reply.status != 200) return answer_exit("get", key, o.node, reply);
  return exit_ok;
}

// PUTs the value read from `fd` (`length` bytes, or chunked until EOF when unset).
int send_value(const ClientOptions& o, const char* cmd, const std::string& key, int fd,
               std::optional<std::uint64_t> length, const PutOptions& p) {
  Progress progress(cmd);
  ClientRequest req;
  req.method = "PUT";
  req.target = "/" + encode_key(key);
  req.stall_ms = client_stall_ms;
  req.body_fd = fd;
  req.body_length = length;
  req.headers = "Accept: application/json\r\n";  // the receipt, printed below
  if (!p.content_type.empty()) req.headers += "Content-Type: " + p.content_type + "\r\n";
  if (p.ttl_s) req.headers += "X-Ringstore-TTL: " + std::to_string(*p.ttl_s) + "\r\n";
  for (const auto& [name, value] : p.stored_headers) req.headers += name + ": " + value + "\r\n";
  req.on_body_sent = [&](std::uint64_t sent) { progress.update(sent, length); };
  Reply reply;
  Status s = exchange(o.node, req, &reply);
  progress.finish();
  if (!s.is_ok()) return fail(cmd, key + ": " + s.message());
  if (reply.status < 200 || reply.status >= 300) return answer_exit(cmd, key, o.node, reply);
  std::printf("%s\n", reply.body.c_str());  // {"etag":...,"version":...}
  return exit_ok;
}

// Sets a TTL by writing the value again with X-Ringstore-TTL: the node has no way to
// change only the expiry, so this GETs the value into an unnamed temp file and PUTs it
// back (same bytes, Content-Type and stored headers, a new version): a PUT stores only
// the headers it carries, so leaving them out would drop the value's metadata. A write
// of the key between the two is overwritten by the older bytes.
int ttl_rewrite(const ClientOptions& o, const std::string& key, std::uint64_t seconds) {
  const char* dir = std::getenv("TMPDIR");
  std::string tmp = dir && *dir ? dir : "/tmp";
  int fd = open(tmp.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) return fail("ttl", "cannot create a temp file in " + tmp + ": " + std::strerror(errno));
  Reply reply;
  Status s = fetch_value(o, "ttl", key, fd, &reply);
  if (!s.is_ok() || reply.status != 200) {
    close(fd);
    return s.is_ok() ? answer_exit("ttl", key, o.node, reply) : fail("ttl", key + ": " + s.message());
  }
  if (lseek(fd, 0, SEEK_SET) != 0) {
    close(fd);
    return fail("ttl", std::string("seek in the temp file: ") + std::strerror(errno));
  }
  PutOptions p;
  p.ttl_s = seconds;
  if (const std::string* ct = reply.header("content-type")) p.content_type = *ct;
  for (const auto& [name, value] : reply.headers) {
    if (is_stored_header(name)) p.stored_headers.emplace_back(name, value);
  }
  int rc = send_value(o, "ttl", key, fd, reply.body_bytes, p);
  close(fd);
  return rc;
}

bool valid_key(const char* cmd, const std::string& key) {
  if (!key.empty()) return true;
  std::fprintf(stderr, "ringstore %s: KEY must not be empty\n", cmd);
  return false;
}

}  // namespace

int put_command(const ClientOptions& o, const std::string& key, const std::string& file,
                const PutOptions& p) {
  if (!valid_key("put", key)) return exit_usage;
  const bool from_stdin = file == "-";
  int fd = from_stdin ? STDIN_FILENO : open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail("put", "cannot open " + file + ": " + std::strerror(errno));
  struct stat st {};
  std::optional<std::uint64_t> length;  // a pipe or a terminal has none: chunked
  if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    if (!from_stdin) close(fd);
    return fail("put", file + " is a directory");
  }
  if (S_ISREG(st.st_mode)) {
    off_t at = lseek(fd, 0, SEEK_CUR);  // stdin redirected from a file may be partly read
    if (at >= 0 && at <= st.st_size) length = static_cast<std::uint64_t>(st.st_size - at);
  }
  int rc = send_value(o, "put", key, fd, length, p);
  if (!from_stdin) close(fd);
  return rc;
}

int get_command(const ClientOptions& o, const std::string& key, const std::string& file) {
  if (!valid_key("get", key)) return exit_usage;
  if (!file.empty() && file != "-") return get_to_file(o, key, file);
  Reply reply;
  Status s = fetch_value(o, "get", key, STDOUT_FILENO, &reply);
  // Bytes already on stdout cannot be taken back: a bad body is an error after the fact.
  if (!s.is_ok()) return fail("get", key + ": " + s.message());
  if (reply.status != 200) return answer_exit("get", key, o.node, reply);
  return exit_ok;
}

int rm_command(const ClientOptions& o, const std::string& key) {
  if (!valid_key("rm", key)) return exit_usage;
  ClientRequest req;
  req.method = "DELETE";
  req.target = "/" + encode_key(key);
  req.stall_ms = client_stall_ms;
  Reply reply;
  if (Status s = exchange(o.node, req, &reply); !s.is_ok()) return fail("rm", key + ": " + s.message());
  if (reply.status < 200 || reply.status >= 300) return answer_exit("rm", key, o.node, reply);
  return exit_ok;
}

int ls_command(const ClientOptions& o, const std::string& prefix, std::uint32_t page_keys) {
  ASSERT(page_keys >= 1 && page_keys <= 10'000);
  std::string start;
  for (;;) {
    ClientRequest req;
    req.target = "/" + encode_key(prefix) + "?list&limit=" + std::to_string(page_keys);
    if (!start.empty()) req.target += "&start=" + encode_key(start);
    req.stall_ms = client_stall_ms;
    Reply reply;
    if (Status s = exchange(o.node, req, &reply); !s.is_ok()) return fail("ls", s.message());
    if (reply.status != 200) return answer_exit("ls", prefix, o.node, reply);
    auto j = nlohmann::json::parse(reply.body, nullptr, false);
    if (!j.is_object() || !j["keys"].is_array() || !j["next"].is_string()) {
      return fail("ls", o.node + " did not answer with a listing page");
    }
    for (const auto& k : j["keys"]) {
      if (!k.is_string()) return fail("ls", o.node + " listed a key that is not a string");
      std::fwrite(k.get_ref<const std::string&>().data(), 1, k.get_ref<const std::string&>().size(), stdout);
      std::fputc('\n', stdout);
    }
    std::string next = j["next"].get<std::string>();
    if (next.empty()) break;
    // Keys come in byte order, so each page starts past the last: a `next` that does not
    // move forward would loop forever.
    if (next <= start) return fail("ls", o.node + " answered a next that does not advance: '" + next + "'");
    start = std::move(next);
  }
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) return fail("ls", "writing stdout failed");
  return exit_ok;
}

int ttl_command(const ClientOptions& o, const std::string& key, std::optional<std::uint64_t> seconds) {
  if (!valid_key("ttl", key)) return exit_usage;
  if (seconds) return ttl_rewrite(o, key, *seconds);
  ClientRequest req;
  req.method = "HEAD";
  req.head = true;
  req.target = "/" + encode_key(key);
  req.stall_ms = client_stall_ms;
  Reply reply;
  if (Status s = exchange(o.node, req, &reply); !s.is_ok()) return fail("ttl", key + ": " + s.message());
  if (reply.status != 200) return answer_exit("ttl", key, o.node, reply);
  const std::string* expires = reply.header("x-ringstore-expires");
  std::printf("%s\n", expires ? expires->c_str() : "no expiry");
  return exit_ok;
}

int locate_command(const ClientOptions& o, const std::string& key) {
  if (!valid_key("locate", key)) return exit_usage;
  ClientRequest req;
  req.target = "/_/locate?key=" + encode_key(key);
  req.stall_ms = client_stall_ms;
  Reply reply;
  if (Status s = exchange(o.node, req, &reply); !s.is_ok()) return fail("locate", key + ": " + s.message());
  if (reply.status != 200) return answer_exit("locate", key, o.node, reply);
  auto j = nlohmann::json::parse(reply.body, nullptr, false);
  if (!j.is_object() || !j["preference_list"].is_array() || !j["replicas"].is_array()) {
    return fail("locate", o.node + " did not answer with a location");
  }
  std::printf("key       %s\nposition  %s\npreference list:\n", json_string(j, "key", key).c_str(),
              json_string(j, "position", "?").c_str());
  int i = 0;
  for (const auto& p : j["preference_list"]) {
    std::printf("  %d. %s  %s\n", ++i, json_string(p, "id", "?").c_str(), json_string(p, "addr", "?").c_str());
  }
  std::printf("replicas:\n");
  bool held = false;
  for (const auto& r : j["replicas"]) {
    if (!r.is_object()) continue;
    std::string state = "missing";
    if (const std::string version = json_string(r, "version"); !version.empty()) {
      held = held || !json_bool(r, "tombstone");
      state = std::string(json_bool(r, "tombstone") ? "deleted at version " : "version ") + version;
    }
    if (const std::string error = json_string(r, "error"); !error.empty()) state = error;
    std::printf("  %s  %-21s %-5s %s\n", json_string(r, "id", "?").c_str(),
                json_string(r, "addr", "?").c_str(), json_bool(r, "alive") ? "up" : "down",
                state.c_str());
  }
  return held ? exit_ok : exit_not_found;
}

}  // namespace node
