// An in-process node on its own loop thread, and a raw TCP client, for tests that must
// control every byte on the wire (split requests, pipelining, limits).
#pragma once

#include <uv.h>

#include <cstdint>
#include <future>
#include <map>
#include <string>
#include <thread>

#include "node/server.h"

namespace testing {

// A fresh directory under /tmp, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class TestServer {
 public:
  // Starts the node on 127.0.0.1:0 with `config` (data_dir filled in when empty).
  explicit TestServer(node::ServerConfig config = {});
  ~TestServer();  // stops the node and checks that its loop closed cleanly
  int port() const { return port_; }
  const std::string& data_dir() const { return dir_.path(); }
  bool loop_closed_cleanly() const { return loop_close_rc_ == 0; }
  void stop();

 private:
  TempDir dir_;
  std::thread thread_;
  uv_loop_t loop_;
  uv_async_t stop_async_;
  node::Server* server_ = nullptr;
  int port_ = 0;
  int loop_close_rc_ = -1;
  bool stopped_ = false;
};

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

// A blocking TCP client with a deadline on every read.
class RawClient {
 public:
  explicit RawClient(int port);
  ~RawClient();
  bool connected() const { return fd_ >= 0; }
  bool send(const std::string& bytes);
  // Reads one response (a HEAD response has no body: pass head=true). status 0 on
  // timeout or close.
  HttpResponse read_response(int timeout_ms = 5000, bool head = false);
  // True when the server closed the connection within timeout_ms.
  bool closed_by_peer(int timeout_ms = 5000);
  // Shuts the sending side (the server reads EOF); responses can still be read.
  void shutdown_send();

 private:
  bool fill(int timeout_ms);
  int fd_ = -1;
  std::string buf_;
};

}  // namespace testing
