// The client commands of the binary (put, get, rm, ls, ttl, locate) against a real node:
// values from a file and from a pipe, byte-exact back to stdout and to a file, the exit
// codes scripts rely on, listings over many pages; and against a fake node that answers
// wrong bodies, that a failed download never leaves a partial file behind.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "integration/support.h"
#include "support/loopback_listener.h"

using namespace itest;
namespace fs = std::filesystem;

namespace {

std::string node_addr(const NodeProcess& n) { return "127.0.0.1:" + std::to_string(n.port()); }

// `ringstore CMD --node ADDR ARGS...`
RunResult cli(const std::string& addr, const std::string& cmd, std::vector<std::string> args,
              std::optional<std::string> input = std::nullopt) {
  args.insert(args.begin(), {cmd, "--node", addr});
  RunOptions o;
  o.input = std::move(input);
  o.deadline = 30s;
  return run_binary(args, o);
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

bool one_line(const std::string& err, const std::string& starts) {
  return err.rfind(starts, 0) == 0 && err.find('\n') == err.size() - 1;
}

// A temp directory removed at the end of the test.
struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/ringstore-cli.XXXXXX";
    path = mkdtemp(t);
  }
  ~TempDir() { fs::remove_all(path); }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }
};

// A node that is not one: answers each connection, in order, with the next canned
// response (after reading the request head and its Content-Length body, if any), and
// keeps the requests it read. Every wait has a deadline.
class FakeNode {
 public:
  explicit FakeNode(std::vector<std::string> responses) : responses_(std::move(responses)) {
    fd_ = testing::listen_on_loopback(8, &port_);
    REQUIRE(fd_ >= 0);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeNode() {
    if (thread_.joinable()) thread_.join();
    close(fd_);
  }
  std::string addr() const { return "127.0.0.1:" + std::to_string(port_); }
  // REQUIRES: the client is done.
  const std::vector<std::string>& requests() {
    if (thread_.joinable()) thread_.join();
    return requests_;
  }

 private:
  void serve() {
    for (const std::string& response : responses_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 10'000) != 1) return;
      int c = accept(fd_, nullptr, nullptr);
      requests_.push_back(read_request(c));
      (void)!send(c, response.data(), response.size(), MSG_NOSIGNAL);
      close(c);
    }
  }
  static std::string read_request(int c) {
    std::string got;
    char buf[65536];
    for (;;) {
      std::size_t end = got.find("\r\n\r\n");
      if (end != std::string::npos) {
        std::size_t cl = got.find("Content-Length: ");
        std::size_t body = cl == std::string::npos ? 0 : std::stoul(got.substr(cl + 16));
        bool chunked = got.find("Transfer-Encoding: chunked") != std::string::npos;
        if (!chunked && got.size() >= end + 4 + body) return got;
        if (chunked && got.size() >= end + 9 && got.compare(got.size() - 5, 5, "0\r\n\r\n") == 0) return got;
      }
      pollfd p{c, POLLIN, 0};
      if (poll(&p, 1, 5'000) != 1) return got;
      ssize_t n = recv(c, buf, sizeof buf, 0);
      if (n <= 0) return got;
      got.append(buf, static_cast<std::size_t>(n));
    }
  }
  std::vector<std::string> responses_;
  std::vector<std::string> requests_;
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

std::string answer_200(const std::string& body, const std::string& etag, const std::string& extra = "") {
  return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\nETag: " + etag +
         "\r\n" + extra + "Connection: close\r\n\r\n" + body;
}

}  // namespace

TEST_CASE("cli: put and get stream values byte-exact from files, pipes and to stdout", "[integration][cli]") {
  NodeProcess n;
  const std::string addr = node_addr(n);
  TempDir dir;
  // Several MiB: many socket reads and writes, a chunked upload of many chunks.
  const std::string big = Prng(7).bytes((6u << 20) + 12345);
  spit(dir.path + "/big", big);

  RunResult r = cli(addr, "put", {"v/big", dir.path + "/big"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find(md5_hex(big)) != std::string::npos);  // prints {"etag","version"}
  CHECK(r.err.empty());  // no progress bar: stderr is not a terminal
  CHECK(request("GET", n.url("v/big")).body == big);

  r = cli(addr, "put", {"v/piped", "-", "--content-type", "text/x-test"}, big);
  REQUIRE(r.exit_code == 0);
  Response got = request("GET", n.url("v/piped"));
  CHECK(got.body == big);
  CHECK(got.header("content-type") == "text/x-test");

  r = cli(addr, "get", {"v/piped"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == big);
  CHECK(r.err.empty());
  r = cli(addr, "get", {"v/big", "-"});
  CHECK(r.out == big);

  r = cli(addr, "get", {"v/big", dir.path + "/copy"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.empty());
  CHECK(slurp(dir.path + "/copy") == big);
  CHECK(dir.names() == std::vector<std::string>{"big", "copy"});  // no temp file left

  // An empty value through a pipe, and a key that needs percent-encoding.
  r = cli(addr, "put", {"v/a b?c&d%", "-"}, std::string());
  REQUIRE(r.exit_code == 0);
  r = cli(addr, "get", {"v/a b?c&d%"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.empty());
  CHECK(request("GET", n.url(url_encode("v/a b?c&d%"))).status == 200);
}

TEST_CASE("cli: exit codes and one-line errors", "[integration][cli]") {
  NodeProcess n;
  const std::string addr = node_addr(n);
  TempDir dir;
  REQUIRE(cli(addr, "put", {"k", "-"}, std::string("value")).exit_code == 0);

  RunResult r = cli(addr, "get", {"missing"});
  CHECK(r.exit_code == 3);
  CHECK(one_line(r.err, "ringstore get: "));
  CHECK(r.err.find("not_found") != std::string::npos);
  CHECK(cli(addr, "ttl", {"missing"}).exit_code == 3);
  CHECK(cli(addr, "locate", {"missing"}).exit_code == 3);

  // rm answers 204 whether or not the key was there; the get after it finds nothing.
  CHECK(cli(addr, "rm", {"k"}).exit_code == 0);
  CHECK(cli(addr, "rm", {"k"}).exit_code == 0);
  r = cli(addr, "get", {"k", dir.path + "/out"});
  CHECK(r.exit_code == 3);
  CHECK(dir.names().empty());

  // A key the node refuses (longer than 1 KiB): another 4xx.
  r = cli(addr, "put", {std::string(1100, 'x'), "-"}, std::string("v"));
  CHECK(r.exit_code == 4);
  CHECK(one_line(r.err, "ringstore put: "));
  CHECK(r.err.find("key_too_long") != std::string::npos);

  // No node there, or no address at all.
  r = cli("127.0.0.1:1", "get", {"k"});
  CHECK(r.exit_code == 1);
  CHECK(one_line(r.err, "ringstore get: "));
  CHECK(r.err.find("cannot connect") != std::string::npos);
  r = cli("nonsense", "ls", {});
  CHECK(r.exit_code == 1);
  CHECK(one_line(r.err, "ringstore ls: "));

  // The environment names the node when --node is absent; a flag beats it.
  RunOptions env;
  env.env = {"RINGSTORE_NODE=" + addr};
  REQUIRE(cli(addr, "put", {"k2", "-"}, std::string("v2")).exit_code == 0);
  r = run_binary({"get", "k2"}, env);
  CHECK(r.exit_code == 0);
  CHECK(r.out == "v2");
  env.env = {"RINGSTORE_NODE=127.0.0.1:1"};
  CHECK(run_binary({"get", "--node", addr, "k2"}, env).exit_code == 0);

  // Usage errors: missing arguments, an unknown flag.
  CHECK(run_binary({"get"}).exit_code == 2);
  CHECK(run_binary({"put", "only-a-key"}).exit_code == 2);
  CHECK(run_binary({"ls", "--page-keys", "0"}).exit_code == 2);
  r = run_binary({"get", "--help"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("127.0.0.1:3000") != std::string::npos);
  CHECK(r.out.find("Exit codes") != std::string::npos);
}

TEST_CASE("cli: ls prints every key under the prefix over many pages, in order", "[integration][cli]") {
  NodeProcess n;
  const std::string addr = node_addr(n);
  std::vector<std::string> keys;
  for (int i = 0; i < 60; i++) {
    char k[32];
    std::snprintf(k, sizeof k, "dir/%03d", (i * 37) % 60);  // written out of order
    keys.push_back(k);
    REQUIRE(request("PUT", n.url(k), "x").status == 201);
  }
  for (const char* other : {"dir", "dis/1", "dj"}) REQUIRE(request("PUT", n.url(other), "x").status == 201);
  std::sort(keys.begin(), keys.end());
  std::string want;
  for (const std::string& k : keys) want += k + "\n";

  RunResult r = cli(addr, "ls", {"dir/", "--page-keys", "7"});  // 9 pages
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == want);
  r = cli(addr, "ls", {"dir/"});
  CHECK(r.out == want);
  r = cli(addr, "ls", {"nothing/"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.empty());
}

TEST_CASE("cli: locate shows the replicas' versions; ttl reads and rewrites", "[integration][cli]") {
  NodeProcess n;
  const std::string addr = node_addr(n);
  Response put = request("PUT", n.url("loc"), "here",
                         {"X-Ringstore-Meta-Color: blue", "Cache-Control: max-age=30",
                          "Content-Disposition: inline", "Content-Encoding: identity",
                          "Content-Type: text/plain"});
  REQUIRE(put.status == 201);
  const std::string version = put.header("x-ringstore-version");
  REQUIRE(!version.empty());

  RunResult r = cli(addr, "locate", {"loc"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("position") != std::string::npos);
  CHECK(r.out.find(addr) != std::string::npos);
  CHECK(r.out.find("version " + version) != std::string::npos);

  // This node has no expiry yet: nothing to print but that.
  r = cli(addr, "ttl", {"loc"});
  CHECK(r.exit_code == 0);
  CHECK(r.out == "no expiry\n");
  r = cli(addr, "ttl", {"loc", "60"});
  CHECK(r.exit_code == 0);
  Response again = request("GET", n.url("loc"));
  CHECK(again.body == "here");  // the same bytes, written again
  CHECK(again.header("x-ringstore-version") != version);
  CHECK(!again.header("x-ringstore-expires-ms").empty());
  // Only the expiry changed: the stored headers and the type were written back too.
  CHECK(again.header("x-ringstore-meta-color") == "blue");
  CHECK(again.header("cache-control") == "max-age=30");
  CHECK(again.header("content-disposition") == "inline");
  CHECK(again.header("content-encoding") == "identity");
  CHECK(again.header("content-type") == "text/plain");
}

TEST_CASE("cli: ttl and put --ttl send the headers the node reads", "[integration][cli]") {
  const std::string value = "to expire";
  const std::string created = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
  {
    FakeNode fake({"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-Ringstore-Expires: 2030-01-01T00:00:00Z\r\n"
                   "Connection: close\r\n\r\n"});
    RunResult r = cli(fake.addr(), "ttl", {"k"});
    CHECK(r.exit_code == 0);
    CHECK(r.out == "2030-01-01T00:00:00Z\n");
    CHECK(fake.requests().at(0).rfind("HEAD /k ", 0) == 0);
  }
  {
    FakeNode fake({answer_200(value, quoted_md5(value),
                              "Content-Type: text/plain\r\nX-Ringstore-Meta-Color: blue\r\n"
                              "Cache-Control: no-cache\r\nX-Ringstore-Expires-Ms: 1\r\n"
                              "X-Ringstore-Version: 0000000000100000-000000000000000000000000000000aa\r\n"),
                   created});
    RunResult r = cli(fake.addr(), "ttl", {"k", "90"});
    CHECK(r.exit_code == 0);
    const std::string& put = fake.requests().at(1);
    CHECK(put.rfind("PUT /k ", 0) == 0);
    CHECK(put.find("X-Ringstore-TTL: 90\r\n") != std::string::npos);
    CHECK(put.find("Content-Type: text/plain\r\n") != std::string::npos);
    // The stored headers go back as they came (names lower-case); nothing else does.
    CHECK(put.find("x-ringstore-meta-color: blue\r\n") != std::string::npos);
    CHECK(put.find("cache-control: no-cache\r\n") != std::string::npos);
    std::string head = put.substr(0, put.find("\r\n\r\n"));
    std::transform(head.begin(), head.end(), head.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    CHECK(head.find("x-ringstore-expires") == std::string::npos);
    CHECK(head.find("x-ringstore-version") == std::string::npos);
    CHECK(head.find("etag") == std::string::npos);
    CHECK(put.substr(put.size() - value.size()) == value);
  }
  {
    FakeNode fake({created});
    CHECK(cli(fake.addr(), "put", {"k", "-", "--ttl", "30"}, value).exit_code == 0);
    const std::string& put = fake.requests().at(0);
    CHECK(put.find("X-Ringstore-TTL: 30\r\n") != std::string::npos);
    CHECK(put.find("Transfer-Encoding: chunked\r\n") != std::string::npos);  // stdin is a pipe
  }
}

TEST_CASE("cli: a download that is cut or does not match its ETag leaves no partial file", "[integration][cli]") {
  TempDir dir;
  const std::string file = dir.path + "/out";
  const std::string value = Prng(3).bytes(100'000);
  spit(file, "old contents");
  auto check_failed = [&](const std::string& response, const char* why) {
    INFO(why);
    FakeNode fake({response});
    RunResult r = cli(fake.addr(), "get", {"k", file});
    CHECK(r.exit_code == 1);
    CHECK(one_line(r.err, "ringstore get: "));
    CHECK(slurp(file) == "old contents");
    CHECK(dir.names() == std::vector<std::string>{"out"});
  };
  check_failed(answer_200(value, quoted_md5(value + "x")), "MD5 mismatch");
  std::string cut = answer_200(value, quoted_md5(value));
  check_failed(cut.substr(0, cut.size() - 1000), "cut short");
  check_failed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               "10\r\n0123456789abcdef\r\n",
               "chunked, no last chunk");

  // A chunked answer that is whole and matches is written; an ETag that is no MD5 is
  // not checked.
  FakeNode fake({"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nETag: " + quoted_md5("0123456789abcdefXY") +
                     "\r\nConnection: close\r\n\r\n10\r\n0123456789abcdef\r\n2\r\nXY\r\n0\r\n\r\n",
                 answer_200(value, "\"v1-not-an-md5\"")});
  CHECK(cli(fake.addr(), "get", {"k", file}).exit_code == 0);
  CHECK(slurp(file) == "0123456789abcdefXY");
  CHECK(cli(fake.addr(), "get", {"k"}).out == value);
}
