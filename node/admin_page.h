// The /_/admin page: one self-contained HTML document (no external fonts, scripts or
// stylesheets) compiled into the binary from node/admin/index.html.
#pragma once

#include <string_view>

namespace node {
std::string_view admin_page();
}  // namespace node
