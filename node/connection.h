// Connection is one client's HTTP/1.1 connection: llhttp parsing with our own limits,
// keep-alive and pipelining (one request at a time: the parser pauses at the end of a
// request and resumes when its response is fully written), streamed responses, and the
// deadline of whatever phase it is in (the server's sweep timer enforces it).
// Owns: its uv_tcp_t (freed in the close callback), the parser, the request in progress.
// Thread: the loop thread only. Lifetime: owned by the Server through a shared_ptr;
// asynchronous work holds a weak_ptr, because the client may go away first.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "blobstore/blob_store.h"
#include "node/header_pair.h"
#include "node/request.h"

namespace node {

class Server;

struct HttpRequest {
  llhttp_method_t method = HTTP_GET;
  std::string url;
  std::string content_type;
  std::string range;
  Conditions conditions;  // If-Match, If-None-Match, If-(Un)Modified-Since, If-Range
  bool has_content_type = false;
  bool expect_continue = false;
  // Accept names application/json: a write answers with its JSON receipt too. Without
  // it a write's answer has no body (the receipt is in its headers), so a client that
  // closes an answer without reading it (Go's net/http does) keeps its connection.
  bool accepts_json = false;
  bool has_body = false;          // Content-Length > 0 or chunked
  std::uint64_t content_length = 0;  // when !chunked
  bool chunked = false;
  // X-Ringstore-* headers (node-to-node API), names lower-cased without the prefix.
  std::vector<std::pair<std::string, std::string>> ringstore_headers;
  const std::string* ringstore_header(std::string_view name) const {
    for (const auto& [k, v] : ringstore_headers) {
      if (k == name) return &v;
    }
    return nullptr;
  }
  // Headers a PUT stores with its value (node/attrs.h, is_stored_header), in arrival
  // order, and their bytes so far (bounded by attrs_bytes_max as they arrive).
  std::vector<std::pair<std::string, std::string>> stored_headers;
  std::size_t stored_header_bytes = 0;
  Target target;
  // Filled by the handlers.
  std::unique_ptr<blobstore::BlobWriter> writer;
  // An internal PUT of a version this node already holds (or a newer one): its body is
  // read and dropped, and no file is made.
  bool already_held = false;
  std::uint64_t body_bytes = 0;
  std::uint64_t started_ms = 0;
  std::uint64_t started_ns = 0;  // monotonic ns at the first byte, for latency metrics
  int status = 0;                // the final status sent
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  enum class Phase { idle, headers, body, handling, sending };

  Connection(Server* server, std::uint64_t now_ms);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  uv_tcp_t* tcp() { return tcp_; }
  Status start();  // after uv_accept
  void close();    // idempotent; the Server forgets it in the close callback
  void close_reset();  // RST instead of FIN: the client must not take a cut body as whole

  HttpRequest& request() { return req_; }
  Phase phase() const { return phase_; }
  bool busy() const { return phase_ != Phase::idle; }
  std::uint64_t deadline_ms() const { return deadline_ms_; }
  void on_deadline();        // the sweep timer found the deadline passed
  void finish_after_response() { keep_alive_ = false; }

  // Responses. Exactly one per request: respond* or stream.
  void respond(int status, std::string_view headers, std::string body, bool head_only = false);
  void respond_error(const Status& s);
  // The head of a response to HEAD: the length is that of the body a GET would get.
  void respond_head(int status, std::string_view headers, std::uint64_t content_length);
  // Sends `range` of an open blob, reading it in stream_chunk_bytes pieces. The MD5 of
  // the whole blob is checked: before the first byte when only part is sent, else on the
  // way, and a mismatch cuts the connection with a reset.
  void stream(int status, std::string headers, blobstore::BlobHandle handle, ByteRange range);
  void send_continue();  // "100 Continue"

 private:
  friend class Server;
  struct WriteReq;
  struct StreamState;
  enum class Part { interim, response_end, stream_chunk };

  static int on_message_begin(llhttp_t* p);
  static int on_url(llhttp_t* p, const char* at, std::size_t n);
  static int on_header_field(llhttp_t* p, const char* at, std::size_t n);
  static int on_header_value(llhttp_t* p, const char* at, std::size_t n);
  static int on_header_value_complete(llhttp_t* p);
  static int on_headers_complete(llhttp_t* p);
  static int on_body(llhttp_t* p, const char* at, std::size_t n);
  static int on_message_complete(llhttp_t* p);
  static const llhttp_settings_t* settings();

  static void on_alloc(uv_handle_t* h, std::size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* w, int status);
  static void on_close(uv_handle_t* h);

  void feed(const char* data, std::size_t n);
  void fail(const Status& s);  // answer an unusable request and close
  int count_header_bytes(std::size_t n);
  void send(std::string bytes, Part part);
  void on_part_written(Part part);
  void response_done();
  bool next_request();
  void reset_request();
  void read_start();
  void read_stop();
  void set_deadline(std::uint32_t timeout_ms);
  void stream_next();
  void stream_read_done(ssize_t n);
  void drop_stream();
  std::string status_head(int status, std::size_t content_length, bool has_length,
                          std::string_view headers, std::size_t body_reserve = 0);

  Server* server_;
  uv_tcp_t* tcp_;
  llhttp_t parser_;
  HttpRequest req_;
  Phase phase_ = Phase::idle;
  std::uint64_t deadline_ms_ = 0;
  std::size_t header_bytes_ = 0;
  HeaderPair header_;
  Status error_;  // set by a parser callback that rejects the request
  std::string pending_;  // bytes after the current request (pipelining)
  // A request is being answered: bytes that arrive meanwhile go to pending_ unparsed.
  // Reading goes on (stopping and restarting costs two epoll_ctl calls per request)
  // until pending_ holds pending_bytes_max.
  bool answering_ = false;
  bool peer_eof_ = false;  // the client shut its side while a request was answered
  bool reading_ = false;
  bool closing_ = false;
  bool keep_alive_ = true;
  bool dispatching_ = false;
  bool done_during_dispatch_ = false;
  std::size_t writes_in_flight_ = 0;
  std::unique_ptr<StreamState> stream_;
  std::string pending_head_;  // a partial response's head, held until the blob checks out
};

}  // namespace node
