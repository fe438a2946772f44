#include "node/log.h"

#include <cstdio>
#include <ctime>
#include <mutex>

namespace node::log {

namespace {
Level g_level = Level::info;
std::string g_node = "-";
std::mutex g_mu;
const char* name(Level l) {
  switch (l) {
    case Level::debug: return "DEBUG";
    case Level::info: return "INFO";
    case Level::warn: return "WARN";
    case Level::error: return "ERROR";
  }
  return "?";
}
}  // namespace

void set_level(Level level) { g_level = level; }

bool parse_level(std::string_view n, Level* out) {
  if (n == "debug") *out = Level::debug;
  else if (n == "info") *out = Level::info;
  else if (n == "warn") *out = Level::warn;
  else if (n == "error") *out = Level::error;
  else return false;
  return true;
}

void set_node(std::string_view id) { g_node = std::string(id.substr(0, 8)); }

void write(Level level, std::string_view message) {
  if (level < g_level) return;
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  std::tm tm{};
  gmtime_r(&ts.tv_sec, &tm);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  std::lock_guard<std::mutex> l(g_mu);
  std::fprintf(stderr, "%s.%03ldZ %s node=%s %.*s\n", when, ts.tv_nsec / 1'000'000, name(level),
               g_node.c_str(), static_cast<int>(message.size()), message.data());
}

}  // namespace node::log
