// Status carries an operating error (from a client, a peer or a disk) up to the one
// place that handles it. Programmer errors use ASSERT instead. Our code never throws.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "common/assert.h"

enum class Code {
  ok,
  not_found,
  invalid_argument,   // 400
  unauthorized,       // 401
  method_not_allowed, // 405
  length_required,    // 411
  body_too_large,     // 413
  uri_too_long,       // 414
  precondition_failed,    // 412: If-Match, If-None-Match or If-Unmodified-Since failed
  range_not_satisfiable,  // 416
  headers_too_large,  // 431
  unavailable,        // 503
  insufficient_storage,  // 507: no disk of this node has room (or all are read-only)
  timeout,            // 408 from a client, 504 from a replica
  corruption,         // 500: a checksum failed
  io_error,           // 500
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status ok() { return Status(); }
  static Status not_found(std::string msg = "not_found") { return {Code::not_found, std::move(msg)}; }
  static Status invalid(std::string msg) { return {Code::invalid_argument, std::move(msg)}; }
  static Status io_error(std::string msg) { return {Code::io_error, std::move(msg)}; }
  static Status corruption(std::string msg) { return {Code::corruption, std::move(msg)}; }
  static Status unavailable(std::string msg) { return {Code::unavailable, std::move(msg)}; }
  static Status from_errno(std::string_view what, int err);

  Status(Code code, std::string msg) : code_(code), msg_(std::move(msg)) {}

  bool is_ok() const { return code_ == Code::ok; }
  Code code() const { return code_; }
  const std::string& message() const { return msg_; }

 private:
  Code code_ = Code::ok;
  std::string msg_;
};

// Result<T> is a value or a Status that is not ok (std::expected is C++23).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status s) : v_(std::move(s)) { ASSERT(!std::get<Status>(v_).is_ok()); }  // NOLINT
  bool is_ok() const { return v_.index() == 0; }
  T& value() { ASSERT(is_ok()); return std::get<0>(v_); }
  const T& value() const { ASSERT(is_ok()); return std::get<0>(v_); }
  const Status& status() const { ASSERT(!is_ok()); return std::get<1>(v_); }
  Status take_status() { ASSERT(!is_ok()); return std::move(std::get<1>(v_)); }

 private:
  std::variant<T, Status> v_;
};

#include <cstring>
inline Status Status::from_errno(std::string_view what, int err) {
  std::string m(what);
  m += ": ";
  m += std::strerror(err);
  return {Code::io_error, std::move(m)};
}
