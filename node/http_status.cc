#include "node/http_status.h"

#include <nlohmann/json.hpp>

namespace node {

int http_status(Code code) {
  switch (code) {
    case Code::ok: return 200;
    case Code::not_found: return 404;
    case Code::invalid_argument: return 400;
    case Code::unauthorized: return 401;
    case Code::method_not_allowed: return 405;
    case Code::length_required: return 411;
    case Code::body_too_large: return 413;
    case Code::uri_too_long: return 414;
    case Code::precondition_failed: return 412;
    case Code::range_not_satisfiable: return 416;
    case Code::headers_too_large: return 431;
    case Code::unavailable: return 503;
    case Code::insufficient_storage: return 507;
    case Code::timeout: return 408;
    case Code::corruption:
    case Code::io_error: return 500;
  }
  UNREACHABLE();
}

const char* reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 507: return "Insufficient Storage";
    default: return "Unknown";
  }
}

// Messages look like "name" or "name: details" or "name max_bytes=N".
std::string error_body(const Status& s) {
  const std::string& m = s.message();
  nlohmann::json j;
  std::size_t colon = m.find(": ");
  std::size_t limit = m.find(" max_bytes=");
  if (limit != std::string::npos && limit < colon) {
    j["error"] = m.substr(0, limit);
    std::uint64_t max = 0;
    for (char c : m.substr(limit + 11)) {
      if (c < '0' || c > '9') break;
      max = max * 10 + static_cast<std::uint64_t>(c - '0');
    }
    j["max_bytes"] = max;
  } else if (colon != std::string::npos) {
    j["error"] = m.substr(0, colon);
    j["reason"] = m.substr(colon + 2);
  } else {
    j["error"] = m.empty() ? std::string("error") : m;
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

Status limit_error(Code code, const char* name, std::uint64_t max_bytes) {
  return Status(code, std::string(name) + " max_bytes=" + std::to_string(max_bytes));
}

}  // namespace node
