// The one place where a Status code becomes an HTTP status, and the one-line JSON body
// every error carries: {"error":"<name>","reason":"<text>"[, "max_bytes":N]}.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace node {

int http_status(Code code);
const char* reason_phrase(int status);
// The error's short name ("key_too_long") is the Status message up to the first ':'.
std::string error_body(const Status& s);
// An error with a limit attached: {"error":"body_too_large","max_bytes":5368709120}
Status limit_error(Code code, const char* name, std::uint64_t max_bytes);

}  // namespace node
